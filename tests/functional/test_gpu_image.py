"""The GPU serving image installs the TensorRT stack as NVIDIA documents it, pinned.

No Docker engine here: these read gpu_endpoints/Dockerfile and its requirement files the
way `docker build` would use them. TensorRT's wheels come from NVIDIA's index, which our
machines cannot reach, so nothing here installs them.
"""

from __future__ import annotations

import re
import tomllib

from tests.functional.conftest import REPO_ROOT

IMAGE = REPO_ROOT / "gpu_endpoints"
PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[a-z0-9,]+\])?==([0-9][0-9A-Za-z.+-]*)$")


def requirement_lines(name: str) -> list[str]:
    """The requirement lines of `name`, inline comments (`  # via ...`) stripped."""
    lines = (line.partition(" #")[0].strip() for line in (IMAGE / name).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_every_gpu_requirement_is_pinned_exactly() -> None:
    lines = requirement_lines("requirements-gpu.txt")
    unpinned = [line for line in lines if not PIN.match(line)]
    assert not unpinned, unpinned
    pins = dict(PIN.match(line).groups() for line in lines)  # type: ignore[union-attr]
    # The TensorRT wheels the registry's stub would fetch, at one version, built for CUDA 12
    # (driver r535+, every SageMaker GPU AMI and the ECS GPU AMI).
    assert pins["tensorrt-cu12-libs"] == pins["tensorrt-cu12-bindings"]
    assert pins["cuda-python"].startswith("12.") and pins["cuda-bindings"] == pins["cuda-python"]
    # The CUDA runtime TensorRT's libs wheel pulls in is pinned too, on the same CUDA major
    # (a rebuild must not bring a CUDA 13 runtime that driver r535/r550 hosts cannot run).
    assert pins["cuda-toolkit"].startswith("12.")
    assert pins["nvidia-cuda-runtime-cu12"].startswith("12.")


def test_the_project_gpu_extra_pins_the_same_tensorrt() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    [tensorrt] = [r for r in project["project"]["optional-dependencies"]["gpu"] if "tensorrt" in r]
    pins = dict(PIN.match(line).groups() for line in requirement_lines("requirements-gpu.txt"))  # type: ignore[union-attr]
    assert tensorrt == f"tensorrt-cu12=={pins['tensorrt-cu12-libs']}"


def test_the_image_installs_them_from_nvidias_index_and_exposes_nvml() -> None:
    dockerfile = (IMAGE / "Dockerfile").read_text()
    install = re.search(
        r"RUN python -m pip install[^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*",
        dockerfile.split("requirements-gpu.txt", 1)[1],
    )
    assert install is not None
    step = install.group(0)
    assert "--extra-index-url https://pypi.nvidia.com" in step
    assert "--only-binary=:all:" in step
    assert "-r /tmp/gpu-requirements.txt" in step
    # compute for CUDA, utility for NVML (the GPU metrics): the NVIDIA runtime mounts both.
    capabilities = re.search(r"NVIDIA_DRIVER_CAPABILITIES=([a-z,]+)", dockerfile)
    assert capabilities is not None
    assert {"compute", "utility"} <= set(capabilities.group(1).split(","))
