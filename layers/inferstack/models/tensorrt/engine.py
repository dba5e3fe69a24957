"""Build and run a TensorRT 11 engine: the only module that calls TensorRT.

Written against TensorRT 11.x's Python API (strongly typed networks, no precision flags:
https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/api/migration/tensorrt-10x-to-11x-python-api-reference.html,
build pattern: https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/api/migration/tensorrt-10x-to-11x-python-api-patterns.html;
Builder, BuilderConfig, OptimizationProfile, TimingCache, Runtime, ICudaEngine and
IExecutionContext under https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/Core/).
Every decision (profiles, keys, tolerances) is made by the tested modules beside this one;
this file only calls TensorRT, in the documented order. It cannot run on our machines.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from inferstack.exceptions import InferenceError, ModelLoadError
from inferstack.models.tensorrt import cuda

if TYPE_CHECKING:
    from pathlib import Path

    from inferstack.models.base import Tensors
    from inferstack.models.tensorrt.profiles import Shape, ShapeRange


class Built(NamedTuple):
    plan: bytes
    timing: bytes
    warnings: list[str]


def trt_version() -> str:
    import tensorrt as trt

    return str(trt.__version__)


def _logger() -> Any:
    import tensorrt as trt

    class Collecting(trt.ILogger):  # type: ignore[misc]
        """Keeps TensorRT's warnings and errors for the rollout's message and build.json."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings.append(msg)

    return Collecting()


def build(
    onnx_path: Path,
    profiles: dict[str, ShapeRange],
    *,
    workspace_bytes: int,
    optimization_level: int,
    timing_cache: bytes | None,
) -> Built:
    """Parse the ONNX file and build a serialized engine; ModelLoadError with TensorRT's
    own words when it cannot (a failed rollout, not a crashed container)."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network()  # 11.x: always strongly typed, no flags
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise ModelLoadError("TensorRT cannot parse the model: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.builder_optimization_level = optimization_level
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profiles.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelLoadError(
            "TensorRT could not build the engine: " + ("; ".join(logger.errors) or "no reason")
        )
    timing = bytes(memoryview(config.get_timing_cache().serialize()))
    return Built(bytes(memoryview(plan)), timing, logger.warnings[:20])


class Engine:
    """A deserialized engine with one execution context, one stream and buffers at the
    largest shapes; `run` is called from one thread at a time (the model's batch worker)."""

    def __init__(self, plan: bytes, max_shapes: dict[str, Shape]) -> None:
        import tensorrt as trt

        cuda.set_device(0)
        self._logger = _logger()
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:  # another TensorRT build or a torn plan: the caller rebuilds
            raise ModelLoadError(
                "TensorRT cannot load the cached engine: " + "; ".join(self._logger.errors)
            )
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._context = engine.create_execution_context()
        for name in self.inputs:
            self._context.set_input_shape(name, max_shapes[name])
        capacity = {n: tuple(self._context.get_tensor_shape(n)) for n in names}
        capacity.update(max_shapes)
        unknown = [n for n, shape in capacity.items() if any(d < 0 for d in shape)]
        if unknown:
            raise ModelLoadError(f"outputs {unknown} have data-dependent shapes, not served")
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.local()  # which threads have bound the device
        self._device: dict[str, cuda.DeviceBuffer] = {}
        self._host: dict[str, cuda.PinnedBuffer] = {}
        self._stream: cuda.Stream | None = None
        try:
            self._stream = cuda.Stream()
            for name, shape in capacity.items():
                nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
                self._device[name] = cuda.DeviceBuffer(nbytes)
                self._host[name] = cuda.PinnedBuffer(nbytes)
                self._context.set_tensor_address(name, self._device[name].ptr)
        except BaseException:  # out of GPU memory half-way: give back what was allocated
            self.close()
            raise

    def run(self, inputs: Tensors, wanted: list[str]) -> Tensors:
        with self._lock:
            if self._closed:  # a reload swapped engines under a request already routed here
                raise InferenceError("the TensorRT engine was replaced; retry the request")
            stream = self._stream
            assert stream is not None  # set until close()
            if not getattr(self._thread, "bound", False):
                cuda.set_device(0)  # this thread's first run (the runtime API is per thread)
                self._thread.bound = True
            for name, given in inputs.items():
                array = np.ascontiguousarray(given, dtype=self.dtypes[name])
                if not self._context.set_input_shape(name, array.shape):
                    raise InferenceError(f"TensorRT refused shape {list(array.shape)} for '{name}'")
                self._host[name].write(array)
                cuda.h2d(self._device[name], self._host[name], array.nbytes, stream)
            if not self._context.execute_async_v3(stream.ptr):
                raise InferenceError(
                    "TensorRT failed to run the engine: " + "; ".join(self._logger.errors[-3:])
                )
            shapes = {o: tuple(self._context.get_tensor_shape(o)) for o in wanted}
            for name in wanted:
                size = int(np.prod(shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize
                cuda.d2h(self._host[name], self._device[name], size, stream)
            stream.synchronize()
            return {o: self._host[o].view(self.dtypes[o], shapes[o]).copy() for o in wanted}

    def close(self) -> None:
        """Free the buffers, the stream, the context and the engine (its weights), after
        any run in progress (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for device in self._device.values():
                device.free()
            for host in self._host.values():
                host.free()
            if self._stream is not None:
                self._stream.destroy()
            # TensorRT frees a context's and an engine's device memory when the Python
            # objects go: now, not whenever this Engine is collected.
            self._context = self._engine = None
