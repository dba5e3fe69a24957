"""What runs on a GPU without TensorRT: CUDA buffers and streams through cuda-python, the
NVML probe, the engine-cache key of the real GPU, and the CPU fallback's reason there."""

from __future__ import annotations

import importlib.util
import re
import threading
import time

import numpy as np
import pytest

from inferstack.exceptions import InferenceError

pytestmark = pytest.mark.gpu


def test_pinned_buffers_round_trip_on_our_own_stream(cuda_runtime: None) -> None:
    from inferstack.models.tensorrt import cuda

    cuda.set_device(0)
    data = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float16)
    host_in, host_out = cuda.PinnedBuffer(data.nbytes), cuda.PinnedBuffer(data.nbytes)
    device, stream = cuda.DeviceBuffer(data.nbytes), cuda.Stream()
    try:
        host_in.write(data)
        cuda.h2d(device, host_in, data.nbytes, stream)
        cuda.d2h(host_out, device, data.nbytes, stream)
        stream.synchronize()
        assert np.array_equal(host_out.view(data.dtype, data.shape), data)
        assert cuda.free_memory() > data.nbytes
    finally:
        for buffer in (host_in, host_out):
            buffer.free()
        device.free()
        stream.destroy()


def test_a_cuda_error_names_itself(cuda_runtime: None) -> None:
    from cuda.bindings import runtime

    from inferstack.models.tensorrt import cuda

    with pytest.raises(InferenceError, match=r"CUDA error cudaError\w+"):
        cuda.check(runtime.cudaFree(12345))  # not a pointer cudaMalloc returned


def test_nvml_identifies_the_gpu_and_sees_it_busy(nvml: None, cuda_runtime: None) -> None:
    import pynvml

    from inferstack.models.tensorrt import cuda
    from inferstack.models.tensorrt.device import probe_gpu

    found = probe_gpu()
    assert found.identity is not None, found.reason
    assert found.identity.name and re.fullmatch(r"\d+\.\d+", found.identity.compute_capability)
    assert found.identity.memory_bytes > 1 << 30
    stop = threading.Event()

    def copy_loop() -> None:  # device-to-device copies keep the GPU busy
        cuda.set_device(0)
        a, b = cuda.DeviceBuffer(1 << 28), cuda.DeviceBuffer(1 << 28)
        stream = cuda.Stream()
        from cuda.bindings import runtime

        kind = runtime.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        while not stop.is_set():
            for _ in range(20):
                cuda.check(runtime.cudaMemcpyAsync(b.ptr, a.ptr, 1 << 28, kind, stream.handle))
            stream.synchronize()
        a.free()
        b.free()
        stream.destroy()

    worker = threading.Thread(target=copy_loop)
    worker.start()
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        busy = 0
        for _ in range(20):
            time.sleep(0.1)
            busy = max(busy, pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        pynvml.nvmlShutdown()
    finally:
        stop.set()
        worker.join()
    assert busy > 0


def test_the_engine_key_of_the_real_gpu(nvml: None) -> None:
    from inferstack.models.tensorrt.cache import EngineKey
    from inferstack.models.tensorrt.device import gpu_identity

    identity = gpu_identity()
    assert identity is not None
    key = EngineKey(
        "ab" * 32,
        "11.4.0.106",
        identity.name,
        identity.compute_capability,
        "x86_64",
        "fp32",
        {},
        1 << 30,
        3,
    )
    assert key.digest() == EngineKey(*key).digest()
    assert key.as_json()["gpu_name"] == identity.name


def test_a_gpu_without_tensorrt_falls_back_to_the_cpu_and_says_so(nvml: None) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the fallback does not apply")
    from inferstack.demo import demo_model_path
    from inferstack.models.select import make_model
    from inferstack.settings import ModelConfig

    choice = make_model(ModelConfig("wine", str(demo_model_path()), "1"))
    assert choice.backend == "onnxruntime"
    assert re.fullmatch(r"GPU .+ found but TensorRT is not installed", choice.reason)


def test_the_gpu_sampler_reads_the_real_device_and_shuts_nvml_down(nvml: None) -> None:
    import pynvml

    from inferstack.server.gpu_metrics import GpuSampler

    lines: list[str] = []
    identity = ("InferStack", "inferstack", "gpu-test")
    sampler = GpuSampler(lambda: ["m"], identity, write=lines.append)
    assert sampler.start() is None
    try:
        busy, memory = sampler.sample()
    finally:
        sampler.stop()
    assert 0.0 <= busy <= 100.0 and 0.0 <= memory <= 100.0
    assert lines and '"GPUUtilization"' in lines[0]
    # Shut down as often as started: an NVML call now fails as uninitialised.
    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlDeviceGetCount()
