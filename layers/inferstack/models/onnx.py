"""ONNX Runtime backend: one InferenceSession per model, created once, warmed at load."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.constants import ENV_INTRA_OP_THREADS
from inferstack.exceptions import BadRequestError, InferenceError, ModelLoadError
from inferstack.models.base import Model, Tensors
from inferstack.models.cpus import available_cpus
from inferstack.protocol.datatypes import BF16, BYTES, NUMPY_DTYPES, ONNX_BFLOAT16, ONNX_TYPES
from inferstack.protocol.types import TensorSpec
from inferstack.sources import resolve_model_file

if TYPE_CHECKING:
    from pathlib import Path

    import onnxruntime as ort

logger = logging.getLogger(__name__)

_ABSOLUTE_PATH = re.compile(r'"?/[^\s"]+"?')


class OnnxModel(Model):
    """A model served by ONNX Runtime on the CPU."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        name: str,
        uri: str | Path,
        version: str | None = None,
        *,
        threads: int | None = None,
        warmup: bool = True,
    ) -> None:
        super().__init__(name, version)
        self.uri = str(uri)
        self.threads = threads
        self.warmup = warmup
        self.path: Path | None = None
        self._session: ort.InferenceSession | None = None
        self._bf16 = False
        self._strings: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        self.path = resolve_model_file(self.uri)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._thread_count()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own pybind types for bad files
            reason = _without_paths(_first_line(exc), self.path)
            raise ModelLoadError(f"ONNX Runtime could not load the model: {reason}") from exc
        self.inputs = [_spec(arg) for arg in session.get_inputs()]
        self.outputs = [_spec(arg) for arg in session.get_outputs()]
        kinds = {spec.datatype for spec in (*self.inputs, *self.outputs)}
        self._bf16 = BF16 in kinds
        self._strings = [spec.name for spec in self.inputs if spec.datatype == BYTES]
        if self._bf16 and BYTES in kinds:
            # BF16 needs OrtValues, which ONNX Runtime's Python API cannot make from strings.
            raise ModelLoadError("models that mix BF16 and string tensors are not supported")
        self._session = session
        if self.warmup:
            self._warm_up()

    def concurrency(self) -> int:
        return max(2, available_cpus())

    def predict(self, inputs: Tensors, output_names: list[str] | None = None) -> Tensors:
        session = self._session
        if session is None:
            raise ModelLoadError(f"model '{self.name}' is not loaded")
        names = output_names or [spec.name for spec in self.outputs]
        if self._strings:
            inputs = {**inputs, **{n: _as_text(inputs[n], n) for n in self._strings if n in inputs}}
        try:
            if self._bf16:
                return dict(zip(names, self._run_bf16(session, names, inputs), strict=True))
            return dict(zip(names, session.run(names, inputs), strict=True))
        except Exception as exc:
            raise _runtime_error(self.name, exc) from exc

    def _run_bf16(
        self, session: ort.InferenceSession, names: list[str], inputs: Tensors
    ) -> list[np.ndarray]:
        # numpy has no bfloat16: feed and fetch such tensors as raw 16-bit patterns.
        import onnxruntime as ort

        kinds = {spec.name: spec.datatype for spec in self.inputs}
        feed = {
            name: ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, ONNX_BFLOAT16)
            if kinds[name] == BF16
            else ort.OrtValue.ortvalue_from_numpy(array)
            for name, array in inputs.items()
        }
        results = session.run_with_ort_values(names, feed)
        return [_ortvalue_to_numpy(value) for value in results]

    def _thread_count(self) -> int:
        configured = self.threads or int(os.environ.get(ENV_INTRA_OP_THREADS) or 0)
        return configured or available_cpus()

    def _warm_up(self) -> None:
        """One run on zeros so the first real request does not pay for lazy init."""
        feed: Tensors = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == BYTES:
                feed[spec.name] = np.full(shape, "", dtype=object)
            else:
                feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        try:
            self.predict(feed)
        except Exception as exc:
            # Dimension guesses can be wrong for a valid model: serve it, but say so.
            logger.warning("warm-up of model %s skipped: %s", self.name, _first_line(exc))


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has type {arg.type}, which is not served")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


def _as_text(array: np.ndarray, name: str) -> np.ndarray:
    """ONNX string tensors hold UTF-8 text; ONNX Runtime's Python API takes str objects."""
    try:
        text = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise BadRequestError(f"input '{name}' must hold UTF-8 text for this model") from None
    return np.array(text, dtype=object).reshape(array.shape)


def _ortvalue_to_numpy(value: Any) -> np.ndarray:
    if value.data_type() != "tensor(bfloat16)":
        return np.asarray(value.numpy())
    shape = tuple(value.shape())
    raw = (ctypes.c_char * value.tensor_size_in_bytes()).from_address(value.data_ptr())
    return np.frombuffer(raw, dtype=np.uint16).reshape(shape).copy()


def _runtime_error(model: str, exc: Exception) -> Exception:
    # ORT's InvalidArgument means the input was wrong for this graph: a client error.
    if type(exc).__name__ in ("InvalidArgument", "InvalidGraph"):
        return BadRequestError(f"model '{model}' rejected the input: {_first_line(exc)}")
    logger.error("inference failed in model %s", model, exc_info=exc)
    return InferenceError(f"model '{model}' failed during inference")


def _without_paths(reason: str, model_file: Path) -> str:
    """Clients see load failures: keep ONNX Runtime's reason, drop every file path in it."""
    reason = reason.replace(str(model_file), "the model file")
    reason = reason.replace(str(model_file.parent) + os.sep, "")
    return _ABSOLUTE_PATH.sub("a file next to the model", reason)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # ORT prefixes messages with source paths of its own build; keep only the reason.
    return text.rsplit(") ", 1)[-1] if "onnxruntime_src" in text else text
