"""GPU tests (`make test-gpu`, marker `gpu`): each needs the pieces it names, and skips with
the missing one as its reason, so a GPU without TensorRT (the GPU machine we are sometimes
lent) still runs the CUDA buffer, stream and NVML tests.

Pieces: an NVIDIA GPU (`nvidia-smi -L` lists one), NVML's binding (`pynvml`, from
nvidia-ml-py), CUDA's runtime binding (`cuda.bindings`, from cuda-python) and TensorRT
(`tensorrt`, from NVIDIA's package index).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import cache

import pytest


@cache
def _gpu_problem() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU: nvidia-smi is not installed"
    listed = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
    )
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"no NVIDIA GPU: nvidia-smi -L lists none ({listed.stderr.strip()[:200]})"
    return None


def _module_problem(module: str, package: str) -> str | None:
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        found = None
    return None if found else f"{module} not importable (install {package})"


def _need(*problems: str | None) -> None:
    for problem in problems:
        if problem:
            pytest.skip(problem)


@pytest.fixture
def gpu() -> None:
    _need(_gpu_problem())


@pytest.fixture
def nvml(gpu: None) -> None:
    _need(_module_problem("pynvml", "nvidia-ml-py"))


@pytest.fixture
def cuda_runtime(gpu: None) -> None:
    _need(_module_problem("cuda.bindings", "cuda-python 12.9"))


@pytest.fixture
def tensorrt(cuda_runtime: None, nvml: None) -> None:
    _need(_module_problem("tensorrt", "tensorrt-cu12 from https://pypi.nvidia.com"))
