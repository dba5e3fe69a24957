"""GPU utilization and memory as EMF (inferstack.server.gpu_metrics).

NVML needs an NVIDIA driver: these tests drive the sampler through a stand-in for the
NVML binding (the boundary, with the same call names and result shapes as nvidia-ml-py),
and check the documents it publishes as CloudWatch would read them. The real binding on a
GPU runs in tests/gpu (marked `gpu`).
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from inferstack.names import METRIC_GPU_MEMORY_UTILIZATION, METRIC_GPU_UTILIZATION
from inferstack.server.gpu_metrics import GpuSampler, gpu_emf_document

IDENTITY = ("InferStack", "inferstack", "prod")
BUSY, MEMORY = METRIC_GPU_UTILIZATION, METRIC_GPU_MEMORY_UTILIZATION
GIB = 1 << 30


class FakeNvml:
    """nvidia-ml-py's calls the sampler makes, over a scripted device."""

    def __init__(self, readings: list[tuple[int, int]], total: int = 80 * GIB) -> None:
        self.readings, self.total, self.initialised = list(readings), total, False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        assert self.initialised, "nvmlShutdown without nvmlInit"
        self.initialised = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        assert self.initialised, "nvmlInit must come first"
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        busy, _ = self.readings[0]
        return SimpleNamespace(gpu=busy, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        _, used = self.readings.pop(0)
        return SimpleNamespace(used=used, total=self.total, free=self.total - used)


def metrics_of(line: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metric name -> values, dimensions) of one EMF line, as CloudWatch extracts them."""
    document = json.loads(line)
    [directive] = document["_aws"]["CloudWatchMetrics"]
    [dimension_set] = directive["Dimensions"]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {METRIC_GPU_UTILIZATION: "Percent", METRIC_GPU_MEMORY_UTILIZATION: "Percent"}
    assert directive["Namespace"] == "InferStack"
    values = {name: document[name] for name in units}
    return values, {name: document[name] for name in dimension_set}


def test_a_minute_of_samples_is_one_document_per_model_with_value_arrays() -> None:
    document = gpu_emf_document([(35.0, 12.5), (90.0, 40.0)], IDENTITY, "resnet50", 1_700_000)
    values, dimensions = metrics_of(json.dumps(document))
    assert values == {
        METRIC_GPU_UTILIZATION: [35.0, 90.0],
        METRIC_GPU_MEMORY_UTILIZATION: [12.5, 40.0],
    }
    assert dimensions == {"service": "inferstack", "environment": "prod", "model": "resnet50"}
    assert document["_aws"]["Timestamp"] == 1_700_000


def test_the_sampler_reads_the_device_and_publishes_for_every_model() -> None:
    nvml = FakeNvml([(20, 8 * GIB), (80, 40 * GIB), (50, 20 * GIB)])
    lines: list[str] = []
    sampler = GpuSampler(
        lambda: ["resnet50", "yolo"], IDENTITY, nvml=nvml, sample_seconds=60, write=lines.append
    )
    assert sampler.start() is None
    try:
        assert sampler.sample() == (20.0, 10.0)
        assert sampler.sample() == (80.0, 50.0)
        sampler.publish()
        sampler.publish()  # nothing new sampled: nothing written
    finally:
        sampler.stop()
    assert not nvml.initialised  # each nvmlInit has its nvmlShutdown
    assert len(lines) == 2
    for line, model in zip(lines, ("resnet50", "yolo"), strict=True):
        values, dimensions = metrics_of(line)
        assert values == {
            METRIC_GPU_UTILIZATION: [20.0, 80.0],
            METRIC_GPU_MEMORY_UTILIZATION: [10.0, 50.0],
        }
        assert dimensions["model"] == model


def test_the_thread_samples_and_publishes_on_its_own() -> None:
    nvml = FakeNvml([(60, 16 * GIB)] * 200)
    lines: list[str] = []
    sampler = GpuSampler(
        lambda: ["m"],
        IDENTITY,
        nvml=nvml,
        sample_seconds=0.01,
        publish_seconds=0.05,
        write=lines.append,
    )
    assert sampler.start() is None
    deadline = time.monotonic() + 5
    while not lines and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert lines, "no document within 5 s"
    values, _ = metrics_of(lines[0])
    assert set(values[BUSY]) == {60.0}


def test_without_nvml_the_server_runs_and_says_why_there_are_no_gpu_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("nvidia-ml-py is installed here; its missing-library path is driver-specific")
    sampler = GpuSampler(lambda: ["m"], IDENTITY)
    with caplog.at_level("INFO"):
        reason = sampler.start()
    assert reason is not None and "nvidia-ml-py" in reason
    assert "GPU metrics off: no NVIDIA GPU: NVML's Python binding" in caplog.text
    sampler.stop()  # harmless when never started
