"""When a model's outputs count as equal to a reference's: TensorRT vs ONNX Runtime on the
CPU at load, and a release's FP16 copy vs its FP32 original.

Floating outputs: |actual - expected| <= atol + rtol * |expected| elementwise (numpy's
`isclose`), with atol scaled by the output's largest finite magnitude so a model whose
outputs are in the thousands is not held to 1e-4. NaN and inf must match exactly (a NaN
where the reference has a number is always a failure). Other types must be equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping


class Tolerance(NamedTuple):
    rtol: float
    atol: float  # times s = max(1, max |expected|)


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-3, atol=1e-4),
    "fp16": Tolerance(rtol=1e-2, atol=1e-2),
}


def mismatch(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], precision: str
) -> str | None:
    """Why `actual` is not `expected` within `precision`'s tolerance, or None when it is.

    The message names the output, the worst element's index and both values."""
    tolerance = TOLERANCES.get(precision)
    if tolerance is None:
        raise ValueError(f"precision {precision!r} is not one of {sorted(TOLERANCES)}")
    for name, want in expected.items():
        if name not in actual:
            return f"output '{name}' is missing"
        problem = _output_mismatch(name, np.asarray(want), np.asarray(actual[name]), tolerance)
        if problem:
            return f"{problem} ({precision} tolerance)"
    return None


def max_abs_error(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> float:
    """The largest finite |actual - expected| over the floating outputs both hold."""
    worst = 0.0
    for name, want in expected.items():
        got = actual.get(name)
        if got is None or not _floating(np.asarray(want)) or np.shape(got) != np.shape(want):
            continue
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
        worst = max(worst, float(np.max(diff[np.isfinite(diff)], initial=0.0)))
    return worst


def _output_mismatch(name: str, want: np.ndarray, got: np.ndarray, tol: Tolerance) -> str | None:
    if want.shape != got.shape:
        return f"output '{name}' has shape {list(got.shape)}; expected {list(want.shape)}"
    if want.size == 0:
        return None
    if not _floating(want):
        equal = want == got
        if bool(np.all(equal)):
            return None
        index = np.unravel_index(int(np.argmin(equal)), want.shape)
        return (
            f"output '{name}' differs at {list(map(int, index))}: {got[index]!r} != {want[index]!r}"
        )
    w = want.astype(np.float64)
    g = got.astype(np.float64)
    finite = np.abs(w[np.isfinite(w)])
    atol = tol.atol * max(1.0, float(np.max(finite, initial=0.0)))
    close = np.isclose(g, w, rtol=tol.rtol, atol=atol, equal_nan=True)
    if bool(np.all(close)):
        return None
    # The worst element: NaN/inf disagreements first, then the largest difference.
    with np.errstate(invalid="ignore"):  # inf - inf is NaN here, counted as worst
        diff = np.nan_to_num(np.abs(g - w), nan=np.inf, posinf=np.inf)
    index = np.unravel_index(int(np.argmax(np.where(close, -1.0, diff))), w.shape)
    return (
        f"output '{name}' differs by {diff[index]:.3g} at {list(map(int, index))}: "
        f"expected {w[index]:.6g}, got {g[index]:.6g}; allowed {atol:.3g} + "
        f"{tol.rtol:g}*|expected|"
    )


def _floating(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))
