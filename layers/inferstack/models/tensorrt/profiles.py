"""TensorRT optimization profiles from a model's signature and the configured batch range.

Every dynamic input needs a (min, opt, max) shape in the engine's profile
(https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/OptimizationProfile.html).
A variable first dimension is the batch: 1..max_batch, optimised for max_batch (the batcher
fills batches under load). Any other variable dimension has no safe default, so the model's
`settings.json` must give it: {"profiles": {"<input>": {"min": [...], "opt": [...],
"max": [...]}}}, full shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from inferstack.exceptions import ModelLoadError
from inferstack.protocol.datatypes import NUMPY_DTYPES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from inferstack.protocol.types import TensorSpec

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]  # min, opt, max
_KINDS = ("min", "opt", "max")


class Profiles(NamedTuple):
    shapes: dict[str, ShapeRange]  # dynamic inputs only; static ones need no profile
    max_rows: int  # the most rows one run takes (the batcher's and validation's limit)
    batchable: bool  # every input's first dimension is the batch, and more than 1 fits

    def as_json(self) -> dict[str, list[list[int]]]:
        """Canonical form (sorted names, lists) for the engine cache key."""
        return {name: [list(s) for s in self.shapes[name]] for name in sorted(self.shapes)}


def profiles_from_signature(
    inputs: Sequence[TensorSpec], max_batch: int, overrides: Mapping[str, Any] | None = None
) -> Profiles:
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    overrides = dict(overrides or {})
    known = {spec.name for spec in inputs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ModelLoadError(
            f'settings.json "profiles" names inputs {unknown} the model does not have; '
            f"its inputs are {sorted(known)}"
        )
    shapes: dict[str, ShapeRange] = {}
    for spec in inputs:
        if spec.name in overrides:
            shapes[spec.name] = _override(spec, overrides[spec.name])
        elif any(d < 0 for d in spec.shape):
            shapes[spec.name] = _default(spec, max_batch)
    batch_inputs = [s for s in inputs if s.shape and s.shape[0] < 0]
    firsts = [shapes[s.name][2][0] if s.name in shapes else s.shape[0] for s in inputs if s.shape]
    max_rows = min(firsts) if firsts else 1
    batchable = bool(inputs) and len(batch_inputs) == len(inputs) and max_rows > 1
    return Profiles(shapes, max_rows, batchable)


def max_shapes(inputs: Sequence[TensorSpec], profiles: Profiles) -> dict[str, Shape]:
    """Each input's largest shape: what its buffers are allocated for."""
    return {
        spec.name: profiles.shapes[spec.name][2] if spec.name in profiles.shapes else spec.shape
        for spec in inputs
    }


def shape_problem(profiles: Profiles, name: str, shape: tuple[int, ...]) -> str | None:
    """Why the engine cannot take `shape` for input `name` (a client's 400), or None."""
    bounds = profiles.shapes.get(name)
    if bounds is None:
        return None  # static: the signature check already matched it
    low, _, high = bounds
    for axis, (size, lo, hi) in enumerate(zip(shape, low, high, strict=True)):
        if not lo <= size <= hi:
            if axis == 0 and lo == 1 and size > hi:
                return (
                    f"input '{name}' has a batch of {size} rows, over the model's maximum of "
                    f"{hi} (its TensorRT profile): send at most {hi} rows per request"
                )
            return (
                f"input '{name}' has size {size} at axis {axis}; the model's TensorRT profile "
                f"takes {lo} to {hi} there"
            )
    return None


def load_check_inputs(
    inputs: Sequence[TensorSpec], profiles: Profiles, reference: Path | None
) -> tuple[dict[str, np.ndarray], str]:
    """What the load check runs: the release's reference sample (.npy: the single input;
    .npz: by input name), cut to the profile's rows and cast to the signature's types; else
    seeded inputs at the profile's opt shapes. Returns the inputs and which it was."""
    if reference is None:
        return synthetic_inputs(inputs, profiles), "synthetic"
    kinds = {spec.name: np.dtype(NUMPY_DTYPES[spec.datatype]) for spec in inputs}
    try:
        loaded = np.load(reference, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {name: loaded[name] for name in kinds}
        else:
            arrays = {inputs[0].name: loaded}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"the release's reference sample is unusable: {exc}") from exc
    rows = profiles.max_rows
    cut = {name: a[:rows] if a.ndim else a for name, a in arrays.items()}
    return {name: np.asarray(a, dtype=kinds[name]) for name, a in cut.items()}, "reference"


def synthetic_inputs(inputs: Sequence[TensorSpec], profiles: Profiles) -> dict[str, np.ndarray]:
    """Seeded inputs at the profile's opt shapes (the batch size that will run most): normal
    noise for floats, zeros for integers and flags (a valid index or switch in any model)."""
    rng = np.random.default_rng(0)
    feed: dict[str, np.ndarray] = {}
    for spec in inputs:
        bounds = profiles.shapes.get(spec.name)
        shape = spec.shape if bounds is None else bounds[1]
        dtype = np.dtype(NUMPY_DTYPES[spec.datatype])
        if np.issubdtype(dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype)
    return feed


def _default(spec: TensorSpec, max_batch: int) -> ShapeRange:
    for axis, dim in enumerate(spec.shape):
        if dim < 0 and axis > 0:
            raise ModelLoadError(
                f"input '{spec.name}' has a variable dimension at axis {axis} "
                f"(shape {list(spec.shape)}): TensorRT needs its range; give it in the model's "
                f'settings.json as "profiles": {{"{spec.name}": {{"min": [...], "opt": [...], '
                '"max": [...]}}'
            )
    rest = spec.shape[1:]
    return (1, *rest), (max_batch, *rest), (max_batch, *rest)


def _override(spec: TensorSpec, value: Any) -> ShapeRange:
    where = f"settings.json \"profiles\" for input '{spec.name}'"
    if not isinstance(value, dict) or set(value) != set(_KINDS):
        raise ModelLoadError(f'{where} must be an object with "min", "opt" and "max" shapes')
    found: list[Shape] = []
    for kind in _KINDS:
        shape = value[kind]
        if (
            not isinstance(shape, list)
            or len(shape) != len(spec.shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
        ):
            raise ModelLoadError(
                f"{where}: {kind!r} must list {len(spec.shape)} positive sizes "
                f"(the input's shape is {list(spec.shape)})"
            )
        for axis, (got, fixed) in enumerate(zip(shape, spec.shape, strict=True)):
            if fixed >= 0 and got != fixed:
                raise ModelLoadError(
                    f"{where}: {kind!r} has {got} at axis {axis}, where the model fixes {fixed}"
                )
        found.append(tuple(shape))
    low, opt, high = found
    if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
        raise ModelLoadError(f"{where}: needs min <= opt <= max on every axis")
    return low, opt, high
