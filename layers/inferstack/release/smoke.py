"""The one inference request a new target must answer before it takes traffic.

Built from the release's reference sample when it has one (its first rows), otherwise from
inputs within the declared shapes (dynamic dimensions of 1). It only proves the target
serves this release; it is never a baseline.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.protocol.datatypes import NUMPY_DTYPES

if TYPE_CHECKING:
    from collections.abc import Mapping

SMOKE_ROWS = 2


def smoke_body(signature: Mapping[str, Any], reference: Mapping[str, np.ndarray] | None) -> str:
    """A protocol JSON inference request for a model with this signature."""
    inputs = []
    for spec in signature["inputs"]:
        name, datatype, shape = spec["name"], spec["datatype"], list(spec["shape"])
        array = _from_reference(reference, name, shape) if reference else None
        if array is None:
            array = _synthetic(datatype, shape)
        data = array.reshape(-1).tolist()
        if datatype == "BYTES":
            data = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
        inputs.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
        )
    return json.dumps({"inputs": inputs})


def _from_reference(
    reference: Mapping[str, np.ndarray], name: str, shape: list[int]
) -> np.ndarray | None:
    array = reference.get(name)
    if array is None and len(reference) == 1:
        array = next(iter(reference.values()))  # a .npy: the single input
    if array is None:
        return None
    array = np.asarray(array)
    if shape and shape[0] == -1 and array.ndim == len(shape):
        array = array[:SMOKE_ROWS]
    return array


def _synthetic(datatype: str, shape: list[int]) -> np.ndarray:
    dims = [1 if d < 0 else d for d in shape]
    if datatype == "BYTES":
        return np.full(dims, "a", dtype=object)
    if datatype == "BF16":
        return np.ones(dims, dtype=np.float32)
    return np.ones(dims, dtype=NUMPY_DTYPES[datatype])
