#!/usr/bin/env bash
# `make mutation [MODULE=codec]`: mutmut 3 over the runtime's core modules, in a copy of the
# working tree, then the per-module score without the listed equivalents (score.py).
#
# Why a copy laid out differently: mutmut names a mutant after its file's path
# (layers/inferstack/x.py -> "layers.inferstack.x") but records test coverage under the
# imported module's name ("inferstack.x"), and it puts mutants/ first on sys.path; so the
# package must sit at the top of the tree it runs in. The copy has inferstack/ at its root
# (and layers/ too, for the tests that read files from it), and [tool.mutmut]'s paths are
# rewritten to match. The repository itself is never touched.
#
# Arguments (MODULE="..." in make): any of codec, v1, dataplane, aws_lambda, sources, onnx;
# none means all six (about an hour on two busy cores). MUTATION_DIR: where the copy lives
# (default mutants/work, git-ignored; kept between runs, so mutmut regenerates only the
# modules whose source changed). MUTATION_CHILDREN: mutants run in parallel (default 1).
# FAIL_UNDER: the score each module must reach (default 90). RETEST=1: rerun only the
# mutants the previous run left undetected (after writing tests for them). FRESH=1: forget the
# selected modules' earlier verdicts and run every mutant again (mutmut 3.8 keeps the verdicts
# of functions whose code did not change, even when the tests did). MUTATION_DEBUG=1: mutmut's
# debug output (each pytest command it runs, with that run's output). MUTATION_PYTEST_ARGS:
# more pytest arguments for every run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${MUTATION_DIR:-$ROOT/mutants/work}
BIN=${BIN:-$ROOT/.venv/bin}
CHILDREN=${MUTATION_CHILDREN:-1}
FAIL_UNDER=${FAIL_UNDER:-90}

declare -A MODULES=(
    [codec]=inferstack.protocol.codec
    [v1]=inferstack.protocol.v1
    [dataplane]=inferstack.dataplane
    [aws_lambda]=inferstack.aws_lambda
    [sources]=inferstack.sources
    [onnx]=inferstack.models.onnx
)
selected=("$@")
if [[ ${#selected[@]} -eq 0 ]]; then
    selected=(v1 aws_lambda onnx codec dataplane sources)
fi
for name in "${selected[@]}"; do
    if [[ -z "${MODULES[$name]:-}" ]]; then
        echo "make mutation: unknown MODULE=$name (one or more of: ${!MODULES[*]})" >&2
        exit 2
    fi
done

# The copy is wiped and remade below: never let that be the checkout or anything holding it.
case "$ROOT/" in "$(realpath -m "$WORK")/"*)
    echo "make mutation: MUTATION_DIR=$WORK holds the repository; choose another" >&2
    exit 2;;
esac
if [[ -e "$WORK/.git" ]]; then echo "make mutation: $WORK is a git checkout" >&2; exit 2; fi

# Refresh the copy: everything but mutmut's own state, file times kept (mutmut regenerates
# only the modules whose source is newer than their mutants).
mkdir -p "$WORK/mutants"
find "$WORK" -mindepth 1 -maxdepth 1 ! -name mutants -exec rm -rf {} +
tar -C "$ROOT" -c --exclude=./.venv --exclude=./.git --exclude=./node_modules \
    --exclude=./cdk.out --exclude=./mutants --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.mypy_cache --exclude=.ruff_cache . | tar -C "$WORK" -x
cp -a "$WORK/layers/inferstack" "$WORK/inferstack"
# Copies of tests and data are remade on each run; a test deleted here must not linger.
rm -rf "$WORK/mutants/tests" "$WORK/mutants/layers" "$WORK/mutants/functions" \
    "$WORK/mutants/gpu_endpoints"
# Coverage per test is recollected every run (one pass of the suite): tests change too.
rm -f "$WORK/mutants/mutmut-stats.json"
"$BIN/python" - "$WORK/pyproject.toml" <<'EOF'
import json, os, re, shlex, sys, tomllib
path = sys.argv[1]
text = open(path).read()
head, marker, section = text.partition("[tool.mutmut]")
if not marker:
    sys.exit("pyproject.toml has no [tool.mutmut] section")
section = section.replace('"layers/inferstack', '"inferstack')
config = tomllib.loads(marker + section)["tool"]["mutmut"]
# The tests find files from their own location (layers/, the Makefile, the README) and some
# import infra/ or benchmarks/: mutmut runs them in mutants/, so those must be there too.
wanted = ["layers", "infra", "benchmarks", "Makefile", "README.md", "package.json",
          "package-lock.json"]
missing = "".join(f'"{name}", ' for name in wanted if name not in config.get("also_copy", []))
section = re.sub(r"also_copy = \[", "also_copy = [" + missing, section, count=1)
# What a run here needs unless [tool.mutmut] says otherwise:
# - forkserver: forked from the process that ran the whole suite, a mutant's run inherits
#   the locks of that process's threads (ONNX Runtime's among them) and can hang until
#   killed, which mutmut counts as a "timeout", a kill;
# - a wall-clock limit of (estimate + 30 s) x 4: mutmut's estimate leaves out pytest's
#   start and the fixtures that load models, and on two busy cores a surviving mutant
#   took 22 s against the default limit of (estimate + 1 s) x 15 = 22.5 s.
needed = {"process_isolation": '"forkserver"', "timeout_constant": "30.0",
          "timeout_multiplier": "4.0"}
# MUTATION_PYTEST_ARGS: more pytest arguments for every run (say, --ignore=<a test file in
# the middle of being written>).
extra_args = shlex.split(os.environ.get("MUTATION_PYTEST_ARGS", ""))
if extra_args:
    quoted = "".join(f"{json.dumps(arg)}, " for arg in extra_args)
    section = re.sub(r"pytest_add_cli_args = \[", "pytest_add_cli_args = [" + quoted, section, count=1)
if os.environ.get("MUTATION_DEBUG"):  # mutmut prints each pytest command and its output
    needed["debug"] = "true"
extra = "".join(f"\n{key} = {value}" for key, value in needed.items() if key not in config)
open(path, "w").write(head + marker + extra + section)
EOF

cd "$WORK"
if [[ -n "${FRESH:-}" ]]; then
    for name in "${selected[@]}"; do
        module_path="${MODULES[$name]//.//}"
        rm -f "mutants/$module_path.py" "mutants/$module_path.py.meta"
    done
fi
# mutmut itself stops if the tests do not run the mutants: its forced-fail pass (every
# mutated function raising) must fail, and coverage must be recorded under the mutants' names.
for name in "${selected[@]}"; do
    start=$(date +%s)
    log="$WORK/mutants/run-$name.log"
    targets=("${MODULES[$name]}.*")
    if [[ -n "${RETEST:-}" ]]; then
        # RETEST=1: only the mutants the last run left undetected (after adding tests).
        mapfile -t targets < <("$BIN/python" "$ROOT/tests/mutation/score.py" --undetected \
            "${MODULES[$name]#inferstack.}")
        if [[ ${#targets[@]} -eq 0 ]]; then echo "mutation: $name has none to retest"; continue; fi
    fi
    if ! "$BIN/mutmut" run --max-children "$CHILDREN" "${targets[@]}" >"$log" 2>&1; then
        tr '\r' '\n' <"$log" | tail -40 >&2
        echo "make mutation: mutmut failed on $name (log: $log)" >&2
        exit 1
    fi
    echo "mutation: $name took $(($(date +%s) - start)) s"
done
modules=()
for name in "${selected[@]}"; do modules+=("${MODULES[$name]#inferstack.}"); done
"$BIN/python" "$ROOT/tests/mutation/score.py" --fail-under "$FAIL_UNDER" --survivors "${modules[@]}"
