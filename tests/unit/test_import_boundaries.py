"""Serving code never imports the lifecycle, CLI or drift code (nor what only they need).

The inference image ships the serving modules and functions/inference/requirements.txt
only; an import of inferstack.release (or typer, rich, onnx) anywhere on the serving path,
even inside a function, would fail there at run time, and grow the image and the cold start.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "inferstack"
# What serves requests: every host, the data plane and what it is made of.
SERVING = [
    "aws_lambda.py",
    "bootstrap.py",
    "capture.py",
    "constants.py",
    "dataplane.py",
    "exceptions.py",
    "names.py",
    "release_pointer.py",
    "sagemaker.py",
    "settings.py",
    "snapstart.py",
    "sources.py",
    "telemetry.py",
    "models",
    "protocol",
    "server",
]
FORBIDDEN = (
    "inferstack.release",
    "inferstack.cli",
    "inferstack.drift",
    "typer",
    "rich",
    "onnx",
    "datasketches",
)


def serving_files() -> list[Path]:
    files: list[Path] = []
    for name in SERVING:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def is_forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", serving_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_serving_module_imports_no_lifecycle_code(path: Path) -> None:
    assert not sorted(filter(is_forbidden, imported_modules(path)))


def test_the_lambda_handler_and_server_load_none_of_it() -> None:
    """What a process serving requests has imported once it is up (lazy imports included)."""
    probe = (
        "import sys\n"
        "from inferstack.bootstrap import lambda_entry_from_env, server_app\n"
        "from inferstack.demo import DEMO_MODEL_NAME, demo_model_path\n"
        "from inferstack.settings import model_config\n"
        "env = {'INFERSTACK_MODEL_NAME': DEMO_MODEL_NAME, 'INFERSTACK_METRICS': 'off',\n"
        "       'INFERSTACK_MODEL_URI': str(demo_model_path())}\n"
        "entry = lambda_entry_from_env(env)\n"
        "assert entry.dataplane.repository.ready()\n"
        "model = model_config(DEMO_MODEL_NAME, str(demo_model_path()), source='test')\n"
        "server_app([model], max_request_bytes=1 << 20, load_in_background=False)\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "print(sorted(m for m in sys.modules\n"
        "             if any(m == f or m.startswith(f + '.') for f in forbidden)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from inferstack.release.store import ReleaseStore\n")
    assert sorted(filter(is_forbidden, imported_modules(lazy))) == ["inferstack.release.store"]
