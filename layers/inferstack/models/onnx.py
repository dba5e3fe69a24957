"""ONNX Runtime backend: one InferenceSession per model, created once, warmed at load."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.exceptions import BadRequestError, InferenceError, ModelLoadError
from inferstack.models.base import Model, Tensors
from inferstack.models.cpus import available_cpus
from inferstack.protocol.datatypes import BF16, BYTES, NUMPY_DTYPES, ONNX_BFLOAT16, ONNX_TYPES
from inferstack.protocol.types import TensorSpec
from inferstack.release_pointer import fetch_release, is_release_uri
from inferstack.sources import resolve_model_file

if TYPE_CHECKING:
    from pathlib import Path

    import onnxruntime as ort

    from inferstack.protocol.types import InferInput

logger = logging.getLogger(__name__)

_ABSOLUTE_PATH = re.compile(r'"?(?<![\w.)])/[^\s"]+"?')
# ONNX Runtime's run failures read "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned
# while running Add node. Name:'add' Status Message: /onnxruntime_src/...h:583 void f(ptrdiff_t)
# axis == 1 was false. <reason>": keep the node and the reason, drop codes and C++ internals.
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_NODE = re.compile(
    r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' (?:Status Message: )?"
)
_ORT_SOURCE = re.compile(r"/\S+:\d+ .*?\)(?: const)? (?:[^.]*? was false\. )?")
# ONNX Runtime's status classes for a run that failed on the values it was given (a shape or
# broadcast mismatch is a generic Fail, an index out of range an InvalidArgument); its other
# classes (RuntimeException, EngineError, NotImplemented, EPFail...) are faults of the server.
_VALUE_FAILURES = frozenset({"Fail", "InvalidArgument"})


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
        cache_dir: str | None = None,
        warmup: bool = True,
    ) -> None:
        super().__init__(name, version)
        self.uri = str(uri)
        self.threads = threads
        self.cache_dir = cache_dir
        self.warmup = warmup
        self.path: Path | None = None
        self._session: ort.InferenceSession | None = None
        self._bf16 = False
        self._strings: list[str] = []
        self._shared_dims: dict[str, list[tuple[str, int]]] = {}
        # Set by the first successful run: from then on a run that fails on its inputs'
        # values fails where another request did not, so the failure is the client's.
        self._has_run = False

    def load(self) -> None:
        import onnxruntime as ort

        if is_release_uri(self.uri):
            # A release: clients see its id as the model's version.
            self.path, self.version = fetch_release(self.uri, cache_dir=self.cache_dir)
        else:
            self.path = resolve_model_file(self.uri, cache_dir=self.cache_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or available_cpus()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own pybind types for bad files
            reason = _reason(exc, self.path)
            raise ModelLoadError(f"ONNX Runtime could not load the model: {reason}") from exc
        self.inputs = [_spec(arg) for arg in session.get_inputs()]
        self.outputs = [_spec(arg) for arg in session.get_outputs()]
        self._shared_dims = _shared_dims(session.get_inputs())
        why_not = _unbatchable(
            [("input", a) for a in session.get_inputs()]
            + [("output", a) for a in session.get_outputs()]
        )
        self.batchable, self.unbatchable_reason = why_not is None, why_not
        kinds = {spec.datatype for spec in (*self.inputs, *self.outputs)}
        self._bf16 = BF16 in kinds
        self._strings = [spec.name for spec in self.inputs if spec.datatype == BYTES]
        if self._bf16 and BYTES in kinds:
            # BF16 needs OrtValues, which ONNX Runtime's Python API cannot make from strings.
            raise ModelLoadError("models that mix BF16 and string tensors are not supported")
        self._session = session
        if self.warmup:
            self._warm_up(session)

    def concurrency(self) -> int:
        return max(2, available_cpus())

    def validate(self, inputs: list[InferInput], output_names: list[str] | None) -> Tensors:
        given = super().validate(inputs, output_names)
        if self._shared_dims:
            _check_shared_dims(self._shared_dims, given)
        return given

    def predict(self, inputs: Tensors, output_names: list[str] | None = None) -> Tensors:
        session = self._session
        if session is None:
            raise ModelLoadError(f"model '{self.name}' is not loaded")
        names = output_names or [spec.name for spec in self.outputs]
        if self._strings:
            inputs = {**inputs, **{n: _as_text(inputs[n], n) for n in self._strings if n in inputs}}
        try:
            return self._run(session, names, inputs)
        except Exception as exc:
            raise self._runtime_error(exc) from exc

    def _run(self, session: ort.InferenceSession, names: list[str], inputs: Tensors) -> Tensors:
        if self._bf16:
            results = self._run_bf16(session, names, inputs)
        else:
            results = session.run(names, inputs)
        self._has_run = True
        return dict(zip(names, results, strict=True))

    def _runtime_error(self, exc: Exception) -> Exception:
        """A failed run: the client's (400) when it hangs on the values sent, else the server's.

        ONNX Runtime reports a mismatch of the request's shapes or values with the generic
        Fail status, as it does a model that cannot run at all: only a model that has run
        before tells the two apart.
        """
        if self._has_run and type(exc).__name__ in _VALUE_FAILURES:
            logger.info("model %s failed on a request's input: %s", self.name, exc)
            reason = _reason(exc)
            return BadRequestError(f"model '{self.name}' cannot run on this input: {reason}")
        logger.error("inference failed in model %s", self.name, exc_info=exc)
        return InferenceError(f"model '{self.name}' failed during inference")

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

    def _warm_up(self, session: ort.InferenceSession) -> None:
        """One run on zeros so the first real request does not pay for lazy init."""
        feed: Tensors = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == BYTES:
                feed[spec.name] = np.full(shape, "", dtype=object)
            else:
                feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        try:
            self._run(session, [spec.name for spec in self.outputs], feed)
        except Exception as exc:
            # Dimension guesses can be wrong for a valid model: serve it, but say so.
            logger.warning("warm-up of model %s skipped: %s", self.name, _reason(exc))


def _spec(arg: Any) -> TensorSpec:
    datatype = ONNX_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor '{arg.name}' has type {arg.type}, which is not served")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)


def _shared_dims(args: list[Any]) -> dict[str, list[tuple[str, int]]]:
    """Named dimensions that occur more than once among the inputs: name -> (input, axis).

    In ONNX a dimension variable stands for one value across the whole graph
    (https://onnx.ai/onnx/repo-docs/IR.html#static-tensor-shapes); ONNX Runtime does not
    check it up front and fails mid-graph instead.
    """
    places: dict[str, list[tuple[str, int]]] = {}
    for arg in args:
        for axis, dim in enumerate(arg.shape or ()):
            if isinstance(dim, str) and dim:
                places.setdefault(dim, []).append((arg.name, axis))
    return {name: where for name, where in places.items() if len(where) > 1}


def _unbatchable(args: list[tuple[str, Any]]) -> str | None:
    """Why requests cannot be joined on dim 0 (None: they can): every input and output
    needs a dynamic first dimension, and those with a name must all share it."""
    names: set[str] = set()
    for kind, arg in args:
        shape = arg.shape or ()
        if not shape:
            return f"{kind} '{arg.name}' has no batch dimension"
        first = shape[0]
        if isinstance(first, int) and first >= 0:
            return f"{kind} '{arg.name}' has a fixed first dimension of {first}"
        if isinstance(first, str) and first:
            names.add(first)
    if len(names) > 1:
        return f"the first dimensions have different names {sorted(names)}"
    return None


def _check_shared_dims(shared: dict[str, list[tuple[str, int]]], given: Tensors) -> None:
    for dim, places in shared.items():
        sizes = [(name, axis, given[name].shape[axis]) for name, axis in places]
        first_name, first_axis, first = sizes[0]
        for name, axis, size in sizes[1:]:
            if size != first:
                raise BadRequestError(
                    f"dimension '{dim}' must have one size: input '{first_name}' has {first} "
                    f"at axis {first_axis}, input '{name}' has {size} at axis {axis}"
                )


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


def _reason(exc: BaseException, model_file: Path | None = None) -> str:
    """ONNX Runtime's reason, fit for a client: the node and the reason, without status codes,
    C++ internals or any file path (the model's own file is named "the model file")."""
    text = _one_line(exc)
    if model_file is not None:
        text = text.replace(str(model_file), "the model file")
        text = text.replace(str(model_file.parent) + os.sep, "")
    text = _ORT_PREFIX.sub("", text)
    text = _ORT_NODE.sub(lambda m: f"{m[1]} node '{m[2]}': " if m[2] else f"{m[1]} node: ", text)
    text = _ORT_SOURCE.sub("", text)
    other = "a file next to the model" if model_file is not None else "a file"
    return _ABSOLUTE_PATH.sub(other, text).strip()


def _one_line(exc: BaseException) -> str:
    """The message on one line (ONNX Runtime puts the expected shape on a line of its own)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
