"""GPU utilization and memory, sampled with NVML, published as EMF by the GPU container.

ECS scales the service on GPUUtilization and the dashboard draws both (infra/constructs/
monitoring.py, METRIC_DIMENSIONS); SageMaker publishes its own instance metrics
(/aws/sagemaker/Endpoints), so this runs wherever the container finds a GPU. A daemon
thread reads the device every SAMPLE_SECONDS and writes one EMF line per served model every
PUBLISH_SECONDS, each metric with its samples as a value array: a minute of the GPU in one
line per model, whatever the request rate.

NVML comes from nvidia-ml-py (module `pynvml`, the `gpu` and `gpu-cuda` extras; started by
inferstack.models.tensorrt.device.open_nvml), with the host driver's libnvidia-ml (the
NVIDIA container runtime mounts it when the image sets NVIDIA_DRIVER_CAPABILITIES to include
`utility`). Calls: nvmlInit, nvmlDeviceGetHandleByIndex, nvmlDeviceGetUtilizationRates
(.gpu, percent of the last sample period the GPU was busy), nvmlDeviceGetMemoryInfo (.used,
.total bytes), nvmlShutdown
(https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from inferstack.models.tensorrt.device import open_nvml
from inferstack.names import METRIC_GPU_MEMORY_UTILIZATION, METRIC_GPU_UTILIZATION
from inferstack.telemetry import emf_document, write_line

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

# NVML's utilization is the busy share of its own last sample period (1/6 s to 1 s by
# product: https://docs.nvidia.com/deploy/nvml-api/api/structnvmlUtilization__t.html), a
# snapshot: read every second, the minute's average is the GPU's, not a few glimpses of it.
SAMPLE_SECONDS = 1.0
PUBLISH_SECONDS = 60.0


def gpu_emf_document(
    samples: Sequence[tuple[float, float]],
    identity: tuple[str, str, str],
    model: str,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """One EMF document: GPUUtilization and GPUMemoryUtilization (percent), one value per
    sample, under (namespace, service, environment) + model."""
    return emf_document(
        identity,
        model,
        {
            METRIC_GPU_UTILIZATION: ("Percent", [busy for busy, _ in samples]),
            METRIC_GPU_MEMORY_UTILIZATION: ("Percent", [memory for _, memory in samples]),
        },
        timestamp_ms,
    )


class GpuSampler:
    """Samples GPU `device` with NVML and publishes for each model `models()` names."""

    def __init__(
        self,
        models: Callable[[], list[str]],
        identity: tuple[str, str, str],
        *,
        device: int = 0,
        nvml: Any = None,
        sample_seconds: float = SAMPLE_SECONDS,
        publish_seconds: float = PUBLISH_SECONDS,
        write: Callable[[str], object] = write_line,
    ) -> None:
        """`nvml`: the NVML binding (None: import pynvml when started)."""
        self.models, self.identity, self.device = models, identity, device
        self.sample_seconds, self.publish_seconds = sample_seconds, publish_seconds
        self.write = write
        self._nvml, self._handle = nvml, None
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str | None:
        """Start sampling; None when started, else why not (no NVML, no GPU), logged."""
        nvml, why_not = open_nvml(self._nvml)
        if nvml is not None:
            try:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(self.device)
            except Exception as exc:  # NVMLError_InvalidArgument: no such device
                nvml.nvmlShutdown()
                nvml, why_not = None, f"no GPU {self.device} ({exc})"
        if nvml is None:
            reason = f"GPU metrics off: {why_not}"
            logger.info(reason)
            return reason
        self._nvml = nvml
        self._thread = threading.Thread(target=self._run, name="gpu-metrics", daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        """Publish what was sampled and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self._nvml.nvmlShutdown()
        self.publish()

    def sample(self) -> tuple[float, float]:
        """(GPU busy %, memory used %) now."""
        nvml, handle = self._nvml, self._handle
        busy = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        used = 100.0 * memory.used / memory.total if memory.total else 0.0
        self._samples.append((busy, round(used, 2)))
        return self._samples[-1]

    def publish(self) -> None:
        """One EMF line per model with the samples since the last publish."""
        samples, self._samples = self._samples, []
        if not samples:
            return
        stamp = int(time.time() * 1000)
        for model in self.models():
            document = gpu_emf_document(samples, self.identity, model, stamp)
            self.write(orjson.dumps(document).decode())

    def _run(self) -> None:
        next_publish = time.monotonic() + self.publish_seconds
        while not self._stop.wait(self.sample_seconds):
            try:
                self.sample()
                if time.monotonic() >= next_publish:
                    next_publish += self.publish_seconds
                    self.publish()
            except Exception:  # a metrics hiccup never takes the server down
                logger.exception("GPU metrics sample failed")
