"""CUDA buffers and streams through cuda-python's runtime bindings (no PyCUDA).

Patterned on NVIDIA's TensorRT samples (samples/python/common_runtime.py, NVIDIA/TensorRT
@74a80a6a: `cuda_call`, `HostDeviceMem`): every binding returns `(error, *results)`
(https://nvidia.github.io/cuda-python/cuda-bindings/latest/module/runtime.html). Buffers are
allocated once per model at the largest shapes the engine takes, and reused for every run.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from inferstack.exceptions import InferenceError


def _runtime() -> Any:
    # cuda-python >= 12.6 ships the bindings as cuda.bindings; `from cuda import cudart` is
    # the deprecated alias.
    from cuda.bindings import runtime

    return runtime


def check(result: Any) -> Any:
    """The value(s) of a cuda-python call, or InferenceError naming the CUDA error."""
    rt = _runtime()
    error, *values = result
    if error != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(error)[1]
        text = name.decode() if isinstance(name, bytes) else str(name)
        raise InferenceError(f"CUDA error {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """`nbytes` of GPU memory (cudaMalloc)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMalloc(max(1, nbytes))))

    def free(self) -> None:
        if self.ptr:
            check(_runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """`nbytes` of page-locked host memory (cudaMallocHost), so copies run asynchronously."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMallocHost(max(1, nbytes))))
        raw = (ctypes.c_ubyte * max(1, nbytes)).from_address(self.ptr)
        self._bytes = np.frombuffer(memoryview(raw), dtype=np.uint8)

    def write(self, array: np.ndarray) -> None:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self._bytes[: flat.size] = flat

    def view(self, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return self._bytes[: count * dtype.itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            check(_runtime().cudaFreeHost(self.ptr))
            self.ptr = 0


class Stream:
    """A CUDA stream of our own: TensorRT warns against the default stream."""

    def __init__(self) -> None:
        self.handle = check(_runtime().cudaStreamCreate())

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(_runtime().cudaStreamSynchronize(self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            check(_runtime().cudaStreamDestroy(self.handle))
            self.handle = None


def h2d(device: DeviceBuffer, host: PinnedBuffer, nbytes: int, stream: Stream) -> None:
    rt = _runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(device.ptr, host.ptr, nbytes, kind, stream.handle))


def d2h(host: PinnedBuffer, device: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    rt = _runtime()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(host.ptr, device.ptr, nbytes, kind, stream.handle))


def set_device(index: int = 0) -> None:
    """Each thread that runs the engine binds the device first (the primary context)."""
    check(_runtime().cudaSetDevice(index))


def free_memory() -> int:
    """Free bytes on the current device (cudaMemGetInfo)."""
    free, _total = check(_runtime().cudaMemGetInfo())
    return int(free)
