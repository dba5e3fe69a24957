"""The FP16 copy of a release, made when a GPU target's configuration asks for FP16.

TensorRT 11 has no precision flags: a network runs in the precision its ONNX file holds
(shared/GPU.md). So an FP16 engine is built from an FP16 copy of the model, made here at
release time with onnxconverter-common on the CPU (`convert_float_to_float16` with
`keep_io_types`: inputs and outputs stay FP32, so clients see the same signature;
https://onnxruntime.ai/docs/performance/model-optimizations/float16.html). The copy is run
against the FP32 original on ONNX Runtime's CPU, on the reference sample's first rows (else
seeded inputs within the declared shapes): outside the FP16 tolerance
(inferstack.models.tolerance) the release is refused with the numbers, and the model keeps
FP32. A copy ONNX Runtime's CPU kernels cannot run is stored unchecked, saying why; the GPU
container compares every engine with ONNX Runtime's FP32 answers at load anyway.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from inferstack.models.tolerance import max_abs_error, mismatch
from inferstack.protocol.datatypes import NUMPY_DTYPES
from inferstack.release.exceptions import ReleaseError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

logger = logging.getLogger(__name__)

CHECK_ROWS = 64  # reference rows the copy is checked on
FP16 = "fp16"


class Fp16Copy(NamedTuple):
    path: Path
    max_abs_error: float | None  # None: not checked (see `checked_on`)
    checked_on: str  # "reference" | "synthetic" | "unchecked: <why>"

    def manifest(self, artifact: Mapping[str, Any]) -> dict[str, Any]:
        """The release manifest's `variants.fp16` entry."""
        return {
            "artifact": dict(artifact),
            "max_abs_error": self.max_abs_error,
            "checked_on": self.checked_on,
        }


def make_fp16_copy(
    model_path: Path,
    out: Path,
    signature: Mapping[str, Any],
    reference: Mapping[str, np.ndarray] | None = None,
) -> Fp16Copy:
    """Write the FP16 copy of `model_path` to `out` and check it; ReleaseError when it
    answers outside the FP16 tolerance."""
    import onnx
    from onnxconverter_common import float16

    try:
        model = onnx.load(str(model_path))
        # The converter warns for each constant it clamps to FP16's range: the likely cause
        # when the copy then answers differently, so the refusal quotes them.
        with warnings.catch_warnings(record=True) as clamped:
            warnings.simplefilter("always")
            copy = float16.convert_float_to_float16(model, keep_io_types=True)
        onnx.save(copy, str(out))
    except Exception as exc:
        raise ReleaseError(f"the FP16 copy could not be made: {type(exc).__name__}: {exc}") from exc
    try:
        # Type and shape inference over the whole copy: the converter can leave a node's
        # output FP32 where its consumers now expect FP16 (weights made by ConstantOfShape),
        # a copy no runtime loads. The path form also checks models over 2 GB.
        onnx.checker.check_model(str(out), full_check=True)
    except Exception as exc:
        raise ReleaseError(
            f"the FP16 copy is not a valid model ({type(exc).__name__}: {exc}); keep precision fp32"
        ) from exc
    inputs, checked_on = _check_inputs(signature, reference)
    try:
        expected = _run(model_path, inputs)
        actual = _run(out, inputs)
    except Exception as exc:  # ONNX Runtime's CPU lacks many FP16 kernels
        why = f"ONNX Runtime on the CPU cannot run it: {type(exc).__name__}: {exc}"
        logger.warning("FP16 copy of %s not checked: %s", model_path.name, why)
        return Fp16Copy(out, None, f"unchecked: {why[:300]}")
    problem = mismatch(expected, actual, FP16)
    if problem:
        hint = f" ({len(clamped)} constants clamped, e.g. {clamped[0].message})" if clamped else ""
        raise ReleaseError(
            f"the FP16 copy answers differently: {problem}{hint}; keep precision fp32"
        )
    return Fp16Copy(out, max_abs_error(expected, actual), checked_on)


def _check_inputs(
    signature: Mapping[str, Any], reference: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, np.ndarray], str]:
    specs = signature.get("inputs", [])
    if reference:
        found = {}
        for spec in specs:
            array = reference.get(spec["name"])
            if array is None and len(reference) == 1:
                array = next(iter(reference.values()))
            if array is None:
                break
            found[spec["name"]] = np.asarray(array)[:CHECK_ROWS]
        else:
            return found, "reference"
    rng = np.random.default_rng(0)
    synthetic = {}
    for spec in specs:
        dims = [4 if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(spec["shape"])]
        dtype = NUMPY_DTYPES.get(spec["datatype"], np.dtype(np.float32))
        if dtype.kind == "f":
            synthetic[spec["name"]] = rng.standard_normal(dims).astype(dtype)
        else:
            synthetic[spec["name"]] = np.ones(dims, dtype=dtype)
    return synthetic, "synthetic"


def _run(path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))
