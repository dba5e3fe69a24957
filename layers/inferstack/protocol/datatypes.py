"""Open Inference Protocol datatypes and their numpy / ONNX equivalents.

BF16 has no numpy dtype: its tensors travel as the raw 16-bit patterns in a
uint16 array and are handed to ONNX Runtime with the ONNX element type.
"""

from __future__ import annotations

from typing import Final

import numpy as np

BYTES: Final = "BYTES"
BF16: Final = "BF16"

# Protocol datatype -> numpy dtype of the decoded array (BYTES: object array of bytes).
NUMPY_DTYPES: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    BF16: np.dtype(np.uint16),
    BYTES: np.dtype(object),
}

DATATYPES: Final = frozenset(NUMPY_DTYPES)

# Little-endian wire dtypes for the binary extension (numpy's native order may differ).
WIRE_DTYPES: Final[dict[str, np.dtype]] = {
    name: dt.newbyteorder("<") for name, dt in NUMPY_DTYPES.items() if name != BYTES
}

# numpy dtype -> protocol datatype, for arrays a backend returns.
_FROM_NUMPY: Final[dict[np.dtype, str]] = {
    dt: name for name, dt in NUMPY_DTYPES.items() if name not in (BF16, BYTES)
}

# ONNX Runtime's type strings ("tensor(float)") -> protocol datatype.
ONNX_TYPES: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": BF16,
    "tensor(string)": BYTES,
}

# ONNX TensorProto element type of bfloat16 (onnx.TensorProto.BFLOAT16).
ONNX_BFLOAT16: Final = 16


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object and string arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return BYTES
    try:
        return _FROM_NUMPY[array.dtype.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"no protocol datatype for numpy dtype {array.dtype}") from None


def float_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 bit pattern (ties to even)."""
    # Arithmetic on a 0-d array gives numpy scalars: np.asarray keeps shape [] an array.
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = np.asarray((bits + rounding) >> 16).astype(np.uint16)
    # NaN must stay NaN: rounding could carry a NaN payload into infinity.
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32, exactly."""
    return np.asarray(bits.astype(np.uint32) << 16).view(np.float32)
