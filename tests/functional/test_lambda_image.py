"""The Lambda container image, short of Docker: its Dockerfile and its dependency set.

No Docker engine is needed: the slow tests install functions/inference/requirements.txt
into a folder as the image's build stage does, lay the code out as /var/task is laid
out, and run the handler in a Python that sees only the standard library and that
folder. That proves the pinned set is complete (nothing borrowed from the dev venv)
and lean (no training libraries, no boto3, no uvicorn).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    DEMO_MODEL,
    EXAMPLE_REQUEST,
    FUNCTION_DIR,
    HTTP_SAM,
    REPO_ROOT,
    REST_SAM,
    assert_outputs_match,
    example_features,
    http_event,
    json_infer_body,
    ort_reference,
    outputs_from_json,
    reference_rows,
)

DOCKERFILE = FUNCTION_DIR / "Dockerfile"
DOCKERIGNORE = FUNCTION_DIR / "Dockerfile.dockerignore"
REQUIREMENTS = FUNCTION_DIR / "requirements.txt"
BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"
LAMBDA_TASK_ROOT = "/var/task"

# Must never be in the image: training / model-building tools, the local server, and
# what the Lambda base image already ships.
FORBIDDEN = ("sklearn", "scikit_learn", "skl2onnx", "onnx", "uvicorn", "boto3", "botocore")
# Installed size budget: numpy + ONNX Runtime + FastAPI stack is well under it; a
# heavy library creeping in (scipy, torch, ...) is not.
SIZE_BUDGET_MB = 250


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[\w.]+", version.strip()), f"not pinned with ==: {raw!r}"
        pins[canonical(name.strip())] = version.strip()
    return pins


# ------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def index_of(instructions: list[tuple[str, str]], keyword: str, needle: str) -> int:
    hits = [i for i, (k, args) in enumerate(instructions) if k == keyword and needle in args]
    assert len(hits) == 1, f"expected one {keyword} with {needle!r}, found {len(hits)}"
    return hits[0]


def test_dockerfile_builds_on_the_python_312_lambda_base_image() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms, "no FROM"
    for args in froms:
        words = [w for w in args.split() if not w.startswith("--platform")]
        assert words[0] == BASE_IMAGE, args


def test_dockerfile_runs_handler_handler_in_exec_form() -> None:
    instructions = dockerfile_instructions()
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmds, "no CMD"
    assert json.loads(cmds[-1]) == ["handler.handler"]
    assert instructions[-1][0] in ("CMD", "ENV", "LABEL")
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in instructions), (
        "the base image's ENTRYPOINT starts the Lambda runtime client; keep it"
    )


def test_dockerfile_installs_requirements_before_copying_code() -> None:
    """Layer caching: editing the code must not reinstall the dependencies."""
    instructions = dockerfile_instructions()
    copy_requirements = index_of(instructions, "COPY", "functions/inference/requirements.txt")
    install = index_of(instructions, "RUN", "pip install")
    copy_runtime = index_of(instructions, "COPY", "layers/inferstack")
    copy_handler = index_of(instructions, "COPY", "functions/inference/handler.py")
    compile_all = index_of(instructions, "RUN", "compileall")
    assert copy_requirements < install < copy_runtime < compile_all
    assert install < copy_handler < compile_all

    pip = instructions[install][1]
    assert "--no-cache-dir" in pip
    assert "--only-binary=:all:" in pip
    requirements_dest = instructions[copy_requirements][1].split()[-1]
    assert f"-r {requirements_dest}" in pip
    assert not any(
        keyword in ("COPY", "ADD") and args.split()[0] in (".", "./", "*")
        for keyword, args in instructions
    ), "copy what the image needs, not the whole context"


def test_dockerfile_defaults_serve_the_bundled_demo_model() -> None:
    instructions = dockerfile_instructions()
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    assert env["INFERSTACK_MODEL_NAME"] == "wine"
    uri = env["INFERSTACK_MODEL_URI"]
    # The COPY that puts the runtime package in the task root puts the model at `uri`.
    copy_runtime = instructions[index_of(instructions, "COPY", "layers/inferstack")][1]
    source, dest = copy_runtime.split()[-2:]
    dest = dest.replace("${LAMBDA_TASK_ROOT}", LAMBDA_TASK_ROOT).rstrip("/")
    assert uri.startswith(dest + "/"), (uri, dest)
    in_repo = REPO_ROOT / source / uri.removeprefix(dest + "/")
    assert in_repo.is_file(), f"{uri} would not exist in the image"
    assert in_repo == DEMO_MODEL
    handler_copy = instructions[index_of(instructions, "COPY", "handler.py")][1]
    assert handler_copy.split()[-1].replace("${LAMBDA_TASK_ROOT}", LAMBDA_TASK_ROOT).rstrip(
        "/"
    ) in (LAMBDA_TASK_ROOT, f"{LAMBDA_TASK_ROOT}/handler.py")


def build_context_files() -> set[str]:
    """The files `docker build -f functions/inference/Dockerfile .` sends, per the
    ignore file (matched with docker-py's implementation of the .dockerignore rules)."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return set(exclude_paths(str(REPO_ROOT), patterns, dockerfile=str(DOCKERFILE)))


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    context = build_context_files()
    files = {path for path in context if (REPO_ROOT / path).is_file()}

    for keyword, args in dockerfile_instructions():
        if keyword not in ("COPY", "ADD") or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            if (REPO_ROOT / source).is_dir():
                wanted = {
                    str(p.relative_to(REPO_ROOT))
                    for p in (REPO_ROOT / source).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                }
                assert wanted, source
                assert wanted <= files, sorted(wanted - files)
            else:
                assert source in files, f"COPY {source}: not in the build context"
    assert "layers/inferstack/demo/wine.onnx" in files

    for excluded in (".venv", "tests", "cdk.out", ".git", "benchmarks", "node_modules"):
        assert not any(p == excluded or p.startswith(excluded + "/") for p in context), excluded
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in context)


def test_requirements_are_pinned_and_lean() -> None:
    pins = pinned_requirements()
    runtime = {"numpy", "onnxruntime", "orjson", "aws-lambda-powertools", "fastapi", "mangum"}
    assert runtime <= set(pins), runtime - set(pins)
    for name in ("boto3", "botocore", "s3transfer", "uvicorn", "uvloop", "httptools"):
        assert name not in pins, f"{name} does not belong in the image"
    for name in ("scikit-learn", "skl2onnx", "onnx", "scipy", "torch"):
        assert name not in pins, f"{name} is a training / build tool"


# ------------------------------------------------------------- the dependency set


def pip(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/var/task as the Dockerfile lays it out: pinned wheels, the runtime, the handler."""
    root = tmp_path_factory.mktemp("lambda-image") / "task"
    result = pip(
        "install",
        "--quiet",
        "--only-binary=:all:",
        "--target",
        str(root),
        "-r",
        str(REQUIREMENTS),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.copytree(
        REPO_ROOT / "layers" / "inferstack",
        root / "inferstack",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy2(FUNCTION_DIR / "handler.py", root / "handler.py")
    return root


def installed_distributions(root: Path) -> dict[str, str]:
    found = {}
    for info in root.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[canonical(name)] = version
    return found


def tree_size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


# Runs in a Python that has only the standard library and the task root on sys.path
# (-I: no environment variables, no user site; -S: no site-packages, not even the venv's).
IMAGE_PROBE = r"""
import json, sys, sysconfig
task, events_file, out_file = sys.argv[1:4]
sys.path.insert(0, task)
import handler
events = json.load(open(events_file))
replies = {name: handler.handler(event, None) for name, event in events.items()}
roots = [task] + [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")]
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not any(module.__file__.startswith(root) for root in roots)
)
json.dump({"replies": replies, "outside": outside, "path": sys.path}, open(out_file, "w"))
"""


@pytest.mark.slow
def test_image_dependency_set_alone_serves_the_demo_model(task_root: Path, tmp_path: Path) -> None:
    features = reference_rows(9, start=30)
    events = {
        "ready": http_event(HTTP_SAM, "GET", "/v2/health/ready"),
        "infer": http_event(
            HTTP_SAM, "POST", "/v2/models/wine/infer", body=json_infer_body(features)
        ),
        "example": http_event(
            REST_SAM, "POST", "/v2/models/wine/infer", body=EXAMPLE_REQUEST.read_text()
        ),
        "openapi": http_event(HTTP_SAM, "GET", "/openapi.json"),
    }
    events_file, out_file = tmp_path / "events.json", tmp_path / "replies.json"
    events_file.write_text(json.dumps(events))
    env = {
        "PATH": os.defpath,
        "HOME": str(tmp_path),
        "LAMBDA_TASK_ROOT": str(task_root),
        # What the Dockerfile sets, with the image's /var/task replaced by the task root.
        "INFERSTACK_MODEL_NAME": "wine",
        "INFERSTACK_MODEL_URI": str(task_root / "inferstack" / "demo" / "wine.onnx"),
        "INFERSTACK_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            IMAGE_PROBE,
            str(task_root),
            str(events_file),
            str(out_file),
        ],
        cwd=task_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    probe: dict[str, Any] = json.loads(out_file.read_text())

    assert not any("site-packages" in entry for entry in probe["path"]), probe["path"]
    assert probe["outside"] == [], "imported from outside the image: " + ", ".join(probe["outside"])
    replies = probe["replies"]
    assert {name: r["statusCode"] for name, r in replies.items()} == dict.fromkeys(events, 200), {
        name: r["body"][:300] for name, r in replies.items()
    }
    infer = json.loads(replies["infer"]["body"])
    assert_outputs_match(outputs_from_json(infer), ort_reference(features))
    example = json.loads(replies["example"]["body"])
    assert_outputs_match(outputs_from_json(example), ort_reference(example_features()))
    assert json.loads(replies["openapi"]["body"])["openapi"].startswith("3.")
    # Metrics were on (the default): Powertools is in the image and wrote EMF lines.
    assert '"_aws"' in result.stdout


@pytest.mark.slow
def test_image_dependency_set_is_exactly_the_pins(task_root: Path) -> None:
    installed = installed_distributions(task_root)
    assert installed == pinned_requirements(), {
        "installed, not pinned": sorted(set(installed) - set(pinned_requirements())),
        "pinned, not installed": sorted(set(pinned_requirements()) - set(installed)),
    }


@pytest.mark.slow
def test_image_leaves_out_training_tools_boto3_and_uvicorn(task_root: Path) -> None:
    top_level = {p.name.lower() for p in task_root.iterdir()}
    for name in FORBIDDEN:
        assert name not in top_level, f"{name} is in the image"
    assert not set(installed_distributions(task_root)) & {canonical(n) for n in FORBIDDEN}
    for name in ("onnxruntime", "numpy", "fastapi", "mangum", "aws_lambda_powertools"):
        assert name in top_level, f"{name} is missing from the image"
    size = tree_size_mb(task_root)
    print(f"\nLambda task root (dependencies + runtime): {size:.1f} MB")
    assert size < SIZE_BUDGET_MB, f"{size:.0f} MB is over the {SIZE_BUDGET_MB} MB budget"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_pins_have_cpython_312_wheels_for_both_lambda_architectures(
    tmp_path: Path, arch: str
) -> None:
    """The image is Python 3.12 on x86_64 or arm64: every pin must resolve to a wheel
    there, and the resolution must need nothing that is not pinned."""
    report = tmp_path / "report.json"
    result = pip(
        "install",
        "--quiet",
        "--dry-run",
        "--ignore-installed",
        "--report",
        str(report),
        "--target",
        str(tmp_path / "target"),
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--abi",
        "cp312",
        "--platform",
        f"manylinux_2_28_{arch}",
        "--platform",
        f"manylinux2014_{arch}",
        "-r",
        str(REQUIREMENTS),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    resolved = {
        canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved == pinned_requirements()
    urls = [item["download_info"]["url"] for item in json.loads(report.read_text())["install"]]
    assert all(url.endswith(".whl") for url in urls)
    native = [url.rsplit("/", 1)[-1] for url in urls if not url.endswith("-none-any.whl")]
    assert native and all(arch in name for name in native), native
