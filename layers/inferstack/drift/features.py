"""Tensors -> feature columns (one value per batch row), the unit every drift check compares.

- rank 0: one feature `<tensor>`, one row; rank 1 [batch]: one feature `<tensor>`;
- rank 2 [batch, k]: features `<tensor>[0]` .. `<tensor>[k-1]` (just `<tensor>` when k == 1);
- rank >= 3 [batch, C, ...] (images): per row and channel (axis 1) the mean and the standard
  deviation, features `<tensor>.c<j>.mean` and `<tensor>.c<j>.std` (pixels are too many and
  too correlated to compare one by one; channel statistics move when lighting, sensors or
  preprocessing change).
Strings, bytes and booleans are categorical (compared as strings); numbers are numeric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

Kind = Literal["numeric", "categorical"]
Source = Literal["input", "output"]
OUTPUT_PREFIX = "output:"


@dataclass(frozen=True)
class Feature:
    """One compared column: its name, kind, where it came from and SageMaker's inferred_type."""

    name: str
    kind: Kind
    source: Source
    inferred_type: str  # "Fractional" | "Integral" | "String" (SageMaker's names)


def kind_of(array: np.ndarray) -> Kind:
    return "categorical" if array.dtype.kind in "OSUb" else "numeric"


def inferred_type_of(array: np.ndarray) -> str:
    if kind_of(array) == "categorical":
        return "String"
    return "Integral" if array.dtype.kind in "iu" else "Fractional"


def features_of(
    tensors: Mapping[str, np.ndarray], source: Source = "input"
) -> dict[str, np.ndarray]:
    """Each tensor's feature columns, in tensor order (values: 1-D arrays, one per batch row)."""
    columns: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        array = np.asarray(tensor)
        if kind_of(array) == "categorical":
            array = _as_strings(array)
        if array.ndim == 0:
            columns[name] = array.reshape(1)
        elif array.ndim == 1:
            columns[name] = array
        elif array.ndim == 2:
            if array.shape[1] == 1:
                columns[name] = array[:, 0]
            else:
                for j in range(array.shape[1]):
                    columns[f"{name}[{j}]"] = array[:, j]
        else:
            if array.dtype.kind not in "iuf":
                raise ValueError(f"tensor {name!r}: rank {array.ndim} needs numbers")
            flat = array.reshape(array.shape[0], array.shape[1], -1).astype(np.float64)
            means, stds = flat.mean(axis=2), flat.std(axis=2)
            for j in range(array.shape[1]):
                columns[f"{name}.c{j}.mean"] = means[:, j]
                columns[f"{name}.c{j}.std"] = stds[:, j]
    return columns


def request_features(
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], list[Feature]]:
    """Inputs' and outputs' columns together; outputs get `output:` only on a name clash."""
    columns = features_of(inputs, "input")
    specs = [_spec(name, values, "input") for name, values in columns.items()]
    for name, values in features_of(outputs or {}, "output").items():
        key = f"{OUTPUT_PREFIX}{name}" if name in columns else name
        columns[key] = values
        specs.append(_spec(key, values, "output"))
    return columns, specs


def _spec(name: str, values: np.ndarray, source: Source) -> Feature:
    return Feature(name, kind_of(values), source, inferred_type_of(values))


def _as_strings(array: np.ndarray) -> np.ndarray:
    """Values as str objects (bytes decoded, booleans "true"/"false"); None stays missing."""
    if array.dtype.kind == "b":
        return np.where(array, "true", "false").astype(object)
    if array.dtype.kind == "U":
        return array.astype(object)
    out = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        out[index] = _text(value)
    return out


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
