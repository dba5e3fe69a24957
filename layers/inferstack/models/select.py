"""Which backend serves a model: TensorRT on an NVIDIA GPU, else ONNX Runtime on the CPU.

`auto` (the default) picks TensorRT when NVML finds a GPU and the `tensorrt` package is
installed, else ONNX Runtime on the CPU, so the same image and configuration serve on a
laptop. The choice and its reason go to the log at start, to `GET /v2` (`describe`) and
into the model's metadata `platform`. A forced `tensorrt` on a host that cannot run it is a
model that reports UNAVAILABLE with the reason (its load fails), never a crashed host.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from inferstack.models.onnx import OnnxModel
from inferstack.models.tensorrt.device import probe_gpu
from inferstack.models.tensorrt.model import TensorRTModel
from inferstack.names import ENV_BACKEND
from inferstack.settings import BACKENDS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from inferstack.models.base import Model
    from inferstack.settings import ModelConfig

logger = logging.getLogger(__name__)


class BackendChoice(NamedTuple):
    model: Model
    backend: str  # tensorrt | onnxruntime
    device: str  # gpu | cpu
    reason: str  # why this backend ("" when TensorRT was chosen on a GPU)

    def describe(self) -> dict[str, str]:
        entry = {"platform": self.model.platform, "device": self.device}
        return {**entry, "reason": self.reason} if self.reason else entry


def make_models(
    configs: Iterable[ModelConfig],
    *,
    backend: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    cache_dir: str | None = None,
    max_batch_size: int = 1,
) -> list[BackendChoice]:
    """A model for each of `configs` on the backend `backend` asks for (see the module);
    the host is probed once for all of them."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    choice = _choose(backend)
    return [
        _make(
            config,
            choice,
            backend=backend,
            precision=precision,
            threads=threads,
            cache_dir=cache_dir,
            max_batch_size=max_batch_size,
        )
        for config in configs
    ]


def make_model(config: ModelConfig, **options: Any) -> BackendChoice:
    """`make_models` for one model."""
    return make_models([config], **options)[0]


def _make(
    config: ModelConfig,
    choice: tuple[str, str],
    *,
    backend: str,
    precision: str,
    threads: int | None,
    cache_dir: str | None,
    max_batch_size: int,
) -> BackendChoice:
    if choice[0] == "tensorrt":
        model: Model = TensorRTModel(
            config.name,
            config.uri,
            config.version,
            precision=precision,
            cache_dir=cache_dir,
            max_batch_size=max_batch_size,
            unavailable=choice[1] if backend == "tensorrt" else None,
        )
        picked = BackendChoice(model, "tensorrt", "gpu", choice[1])
    else:
        # The CPU always serves the FP32 artifact: FP16 on the CPU is slower and unchecked.
        model = OnnxModel(
            config.name, config.uri, config.version, threads=threads, cache_dir=cache_dir
        )
        picked = BackendChoice(model, "onnxruntime", "cpu", choice[1])
    because = f" ({picked.reason})" if picked.reason else ""
    logger.info(
        "inferstack: model %s -> %s on %s%s",
        config.name,
        picked.backend,
        picked.device.upper(),
        because,
    )
    return picked


def describe(choices: Iterable[BackendChoice]) -> dict[str, Any]:
    """The `inferstack` entry of `GET /v2`: which backend serves each model, and why."""
    return {"backends": {c.model.name: c.describe() for c in choices}}


def _choose(backend: str) -> tuple[str, str]:
    """(backend, reason). A forced `tensorrt` keeps its backend with the reason it cannot run."""
    if backend == "onnxruntime":
        return "onnxruntime", f"{ENV_BACKEND}=onnxruntime"
    found = probe_gpu()
    if found.identity is None:
        reason = found.reason
    elif importlib.util.find_spec("tensorrt") is None:
        reason = f"GPU {found.identity.name} found but TensorRT is not installed"
    else:
        return "tensorrt", ""
    if backend == "tensorrt":
        return "tensorrt", f"{ENV_BACKEND}=tensorrt, but {reason}"
    return "onnxruntime", reason
