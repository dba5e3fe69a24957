"""The Makefile as a new user meets it: what each target installs on a fresh clone, and
that the test targets never report a pass they have not earned."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def fresh_clone_installs(target: str) -> list[str]:
    """The pip commands `make TARGET` runs on a fresh clone (-B: nothing is up to date;
    -n: print them, run nothing)."""
    dry = make("-n", "-B", target)
    assert dry.returncode == 0, dry.stderr
    return [line for line in dry.stdout.splitlines() if "pip install" in line]


def test_make_serve_installs_the_runtime_only() -> None:
    installs = fresh_clone_installs("serve")
    assert installs[-1].endswith("pip install --quiet -e ."), installs
    assert not any("[" in line for line in installs), "serve installs extras: " + str(installs)


@pytest.mark.parametrize("target", ["test", "lint", "bench", "synth"])
def test_the_development_targets_install_the_dev_tools_and_the_cdk(target: str) -> None:
    assert any("-e '.[dev,cdk]'" in line for line in fresh_clone_installs(target))


def test_make_test_fails_with_a_reason_when_pytest_selects_nothing(tmp_path: Path) -> None:
    """pytest's exit status 5 (no test selected) is a failure of `make test`, said plainly."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pytest_stub = venv / "bin" / "pytest"
    pytest_stub.write_text("#!/bin/sh\necho 'no tests ran'\nexit 5\n")
    pytest_stub.chmod(0o755)
    (venv / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (venv / ".installed-dev").touch()  # newer than pyproject.toml: nothing to install
    completed = make("test", f"VENV={venv}")
    assert completed.returncode != 0
    assert "make test: FAILED: no test was selected" in completed.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_make_test_gpu_without_a_gpu_fails_and_says_why() -> None:
    completed = make("test-gpu")
    assert completed.returncode != 0
    assert "no NVIDIA GPU here" in completed.stderr
    assert "pip install" not in completed.stdout  # nothing installed for nothing
