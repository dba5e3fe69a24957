"""TensorRT FP16 against ONNX Runtime's CUDA provider (FP32), resnet50 at batch 32, and the
engine build against a cache-hit load. Needs an NVIDIA GPU, TensorRT (the `gpu` extra, from
NVIDIA's index) and onnxruntime-gpu for the comparison arm; where any is missing it records
which and measures nothing: no TensorRT figure is ever reported that was not measured.

The model is the onnx package's light_resnet50 made fit to compare (seeded weights in place
of its constant ones, a dynamic batch: tests/batch_models.normalised_light), so it
has resnet50's shapes and FLOPs. The FP16 copy is the one a release gets
(inferstack.release.precision). Both arms run the same [32, 3, 224, 224] input: TensorRT
through inferstack's own Engine (pinned host buffers, its own stream, copies included) and
ONNX Runtime with CUDAExecutionProvider (numpy in, numpy out: copies included too);
20 warm-up runs, then alternating blocks of 10, 200 runs per arm.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np

from benchmarks.common import Config, summary, work_dir

NAME = "gpu_tensorrt"
TARGET_RATIO = 1.7
TARGET = (
    f"TensorRT FP16 >= {TARGET_RATIO}x ONNX Runtime CUDA (FP32) batches/s, resnet50 at "
    "batch 32 (measured only where a GPU and TensorRT exist)"
)
BATCH = 32


def missing() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    from inferstack.models.tensorrt.device import probe_gpu

    gpu = probe_gpu()
    if gpu.identity is None:
        return gpu.reason
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (make bench-gpu installs the gpu extra)"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "ONNX Runtime has no CUDA provider here (install onnxruntime-gpu in its own venv)"
    return None


def run(config: Config) -> dict[str, Any]:
    reason = missing()
    if reason is not None:
        return {
            "name": NAME,
            "target": TARGET,
            "met": None,
            "results": {"status": "not run", "reason": reason},
        }
    results = _measure(config)
    return {
        "name": NAME,
        "target": TARGET,
        "met": results["ratio"] >= TARGET_RATIO,
        "results": results,
    }


def _measure(config: Config) -> dict[str, Any]:
    import onnxruntime as ort

    from inferstack.models.tensorrt import engine as trt_engine
    from inferstack.models.tensorrt.profiles import ShapeRange
    from inferstack.release.precision import make_fp16_copy
    from tests.batch_models import normalised_light

    folder = work_dir() / "gpu"
    folder.mkdir(exist_ok=True)
    fp32 = normalised_light("light_resnet50", folder / "resnet50.onnx")
    signature = {"inputs": [{"name": "data_0", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]}
    fp16 = make_fp16_copy(fp32, folder / "resnet50.fp16.onnx", signature).path
    profiles: dict[str, ShapeRange] = {
        "data_0": ((1, 3, 224, 224), (BATCH, 3, 224, 224), (BATCH, 3, 224, 224))
    }

    began = time.perf_counter()
    built = trt_engine.build(
        fp16, profiles, workspace_bytes=4 << 30, optimization_level=3, timing_cache=None
    )
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    engine = trt_engine.Engine(built.plan, {"data_0": profiles["data_0"][2]})
    load_s = time.perf_counter() - began

    batch = np.random.default_rng(0).standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    session = ort.InferenceSession(str(fp32), providers=["CUDAExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    arms = {
        "tensorrt_fp16": lambda: engine.run({"data_0": batch}, engine.outputs),
        "onnxruntime_cuda_fp32": lambda: session.run(names, {"data_0": batch}),
    }
    runs, block = config.pick(200, 40), 10
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for call in arms.values():
        for _ in range(20):
            call()
    for index in range(runs // block):
        order = list(arms) if index % 2 == 0 else list(reversed(arms))
        for arm in order:
            for _ in range(block):
                t0 = time.perf_counter()
                arms[arm]()
                times[arm].append((time.perf_counter() - t0) * 1e3)
    engine.close()
    medians = {arm: float(np.median(values)) for arm, values in times.items()}
    return {
        "status": "measured",
        "gpu": _gpu_name(),
        "batch": BATCH,
        "engine_build_s": round(build_s, 1),
        "cache_hit_load_s": round(load_s, 2),
        "plan_mb": round(len(built.plan) / 1e6, 1),
        "batch_ms": {arm: summary(values, 1.0, 2) for arm, values in times.items()},
        "ratio": round(medians["onnxruntime_cuda_fp32"] / medians["tensorrt_fp16"], 2),
    }


def _gpu_name() -> str | None:
    from inferstack.models.tensorrt.device import gpu_identity

    identity = gpu_identity()
    return identity.name if identity else None


def markdown(result: dict[str, Any]) -> list[str]:
    res = result["results"]
    tests = (
        "The TensorRT tests (tests/gpu, `make test-gpu`) are written and have not run on our "
        "machines either: TensorRT's registry packages fetch from NVIDIA's index, which they "
        "cannot reach."
    )
    if res.get("status") != "measured":
        return [f"Not run on this machine: {res.get('reason')}. No figure is reported.", "", tests]
    ms = res["batch_ms"]
    return [
        f"On {res['gpu']}, batch {res['batch']}: TensorRT FP16 {ms['tensorrt_fp16']['median']} "
        f"ms per batch against ONNX Runtime CUDA FP32 {ms['onnxruntime_cuda_fp32']['median']} "
        f"ms: **{res['ratio']}x**. Engine build {res['engine_build_s']} s; loading the built "
        f"plan (a cache hit) {res['cache_hit_load_s']} s; plan {res['plan_mb']} MB.",
    ]
