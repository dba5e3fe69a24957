# Every target installs what it needs into .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
PORT   ?= 8080
ENV    ?= dev
CDK    := node_modules/.bin/cdk
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1

.PHONY: install serve test test-gpu bench lint format synth deploy diff destroy clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cdk]'
	touch $@

# The CDK CLI, pinned in package.json / package-lock.json, from the npm registry.
$(CDK): package.json package-lock.json
	npm ci --no-fund --no-audit --silent
	touch $@

serve: $(STAMP)  ## serve the bundled demo model on http://127.0.0.1:8080
	$(BIN)/inferstack serve --port $(PORT)

test: $(STAMP)  ## the whole suite (GPU tests skip without a GPU)
	$(BIN)/pytest -q

test-gpu: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,gpu]'
	$(BIN)/pytest -q -m gpu

bench: $(STAMP)  ## benchmarks -> benchmarks/results/*.json and benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks.run

synth: $(STAMP) $(CDK)  ## cdk synth for one environment: make synth ENV=prod
	$(CDK) synth -c env=$(ENV) --quiet

diff: $(STAMP) $(CDK)
	$(CDK) diff -c env=$(ENV)

deploy: $(STAMP) $(CDK)  ## needs AWS credentials and a bootstrapped account/region
	$(CDK) deploy -c env=$(ENV) --require-approval broadening

destroy: $(STAMP) $(CDK)
	$(CDK) destroy -c env=$(ENV)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache cdk.out
