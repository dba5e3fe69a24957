# Every target installs what it needs into .venv on a fresh machine.
# Two stamps: `make serve` needs the runtime only (`pip install -e .`); the targets that
# test, lint, benchmark or synthesize install the dev tools and the CDK on top.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP     := $(VENV)/.installed-dev
GPU_STAMP     := $(VENV)/.installed-gpu
PORT   ?= 8080
ENV    ?= dev
CDK    := node_modules/.bin/cdk
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1

.PHONY: install serve test test-gpu gpu-present bench bench-gpu mutation lint format synth deploy diff destroy clean

install: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# The dev install includes the runtime, so it renews the runtime stamp too.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,cdk]'
	touch $@ $(RUNTIME_STAMP)

# TensorRT's wheels are on NVIDIA's index only (the registry's package is a stub).
$(GPU_STAMP): pyproject.toml $(DEV_STAMP)
	$(BIN)/pip install --quiet --extra-index-url https://pypi.nvidia.com -e '.[dev,cdk,gpu]'
	touch $@

# The CDK CLI, pinned in package.json / package-lock.json, from the npm registry.
$(CDK): package.json package-lock.json
	npm ci --no-fund --no-audit --silent
	touch $@

serve: $(RUNTIME_STAMP)  ## serve the bundled demo model on http://127.0.0.1:8080
	$(BIN)/inferstack serve --port $(PORT)

# pytest exits 5 when it selected no test: nothing was checked, so that is a failure
# with its reason, never a silent non-result. $(1): pytest arguments, $(2): the reason.
define pytest_checked
	@$(BIN)/pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make $@: FAILED: $(2)" >&2; exit 1; fi; exit $$rc
endef

test: $(DEV_STAMP)  ## the whole suite except the GPU-marked tests (make test-gpu)
	$(call pytest_checked,-q -m "not gpu",no test was selected)

# The GPU tests need an NVIDIA GPU: without one this fails (it never reports a pass it
# has not earned), and checks for the GPU before installing TensorRT.
test-gpu: gpu-present $(GPU_STAMP)  ## the GPU-marked tests; needs an NVIDIA GPU
	$(call pytest_checked,-q -m gpu,no GPU test was selected)

gpu-present:
	@nvidia-smi -L >/dev/null 2>&1 || { \
		echo "make test-gpu: FAILED: no NVIDIA GPU here (nvidia-smi -L finds none);" \
			"the GPU tests run only on a machine with one" >&2; exit 1; }

bench: $(DEV_STAMP)  ## benchmarks -> benchmarks/results/*.json and benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks.run

# The TensorRT benchmark on a GPU machine (it records why it did not run anywhere else).
bench-gpu: gpu-present $(GPU_STAMP)  ## TensorRT FP16 vs ONNX Runtime CUDA; needs an NVIDIA GPU
	$(BIN)/python -m benchmarks.run --only gpu_tensorrt

synth: $(DEV_STAMP) $(CDK)  ## cdk synth for one environment: make synth ENV=prod
	$(CDK) synth -c env=$(ENV) --quiet

diff: $(DEV_STAMP) $(CDK)
	$(CDK) diff -c env=$(ENV)

deploy: $(DEV_STAMP) $(CDK)  ## needs AWS credentials and a bootstrapped account/region
	$(CDK) deploy -c env=$(ENV) --require-approval broadening

destroy: $(DEV_STAMP) $(CDK)
	$(CDK) destroy -c env=$(ENV)

# Mutation score of the runtime's core modules (not CI: about an hour for all six on two
# cores). make mutation MODULE=codec, or MODULE="codec v1"; tests/mutation/run.sh says how.
mutation: $(DEV_STAMP)
	tests/mutation/run.sh $(MODULE)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache cdk.out
