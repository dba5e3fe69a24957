"""Which NVIDIA GPU this host has, through NVML (nvidia-ml-py's `pynvml`, imported lazily).

NVML comes with the driver (libnvidia-ml), not with CUDA, so it answers "is there a GPU"
without initialising CUDA. Calls as documented for nvidia-ml-py
(https://pypi.org/project/nvidia-ml-py/12.550.89) and NVML's device and system queries
(https://docs.nvidia.com/deploy/nvml-api/api/group__nvmlSystemQueries.html).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

NO_GPU = "no NVIDIA GPU"


class GpuIdentity(NamedTuple):
    name: str  # "NVIDIA A10G"
    compute_capability: str  # "8.6"
    driver: str  # "580.178.04"
    uuid: str
    memory_bytes: int


class GpuProbe(NamedTuple):
    identity: GpuIdentity | None
    reason: str  # why there is none; "" when there is one


def open_nvml(binding: Any = None) -> tuple[Any, str]:
    """NVML started: (nvidia-ml-py's `pynvml`, or `binding` when given, ""), or (None, why
    not). The one place the GPU probe and the GPU metrics sampler start NVML; each call is
    paired with an nvmlShutdown (NVML counts them)."""
    if binding is None:
        try:
            import pynvml
        except ImportError:
            return None, f"{NO_GPU}: NVML's Python binding (nvidia-ml-py) is not installed"
        binding = pynvml
    try:
        binding.nvmlInit()
    except getattr(binding, "NVMLError", Exception) as exc:
        # NVMLError_LibraryNotFound without a driver; DriverNotLoaded on a host without GPUs.
        return None, f"{NO_GPU}: NVML cannot start ({_text(exc)})"
    return binding, ""


def probe_gpu() -> GpuProbe:
    """The first GPU NVML sees (the one CUDA device 0 is on an ECS/SageMaker host, where the
    platform exposes only the GPUs it reserved), or why there is none."""
    pynvml, why_not = open_nvml()
    if pynvml is None:
        return GpuProbe(None, why_not)
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            return GpuProbe(None, f"{NO_GPU}: NVML finds none")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        identity = GpuIdentity(
            name=_str(pynvml.nvmlDeviceGetName(handle)),
            compute_capability=f"{major}.{minor}",
            driver=_str(pynvml.nvmlSystemGetDriverVersion()),
            uuid=_str(pynvml.nvmlDeviceGetUUID(handle)),
            memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        )
    except pynvml.NVMLError as exc:
        return GpuProbe(None, f"{NO_GPU}: NVML failed ({_text(exc)})")
    finally:
        pynvml.nvmlShutdown()
    return GpuProbe(identity, "")


def gpu_identity() -> GpuIdentity | None:
    """The GPU, or None (`probe_gpu` says why)."""
    return probe_gpu().identity


def _str(value: str | bytes) -> str:
    # nvidia-ml-py returns str since 11.5; older bindings returned bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
