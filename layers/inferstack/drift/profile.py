"""A mergeable summary of many rows of features: what a baseline keeps and a window collects.

Per numeric feature a KLL sketch (datasketches) with count, missing, sum, sum of squares, min,
max and how many values were not integers; per categorical feature bounded value counts; for
the multivariate check the first and second moments of the numeric features' rows (exact,
mergeable, F x F floats: no sample of rows is kept). Files are read a chunk at a time and
their profiles merged, so a window never sits in memory whole.

Sketch size: k = 1000 gives a normalized rank error of 0.28% (99% confidence, one query;
`kll_doubles_sketch.get_normalized_rank_error(1000, False)`), so the KS distance between two
sketches is off by at most ~0.56%: ten times finer than the 5% minimum effect alarmed on
(compare.py). The sketch keeps ~3,000 values (~24 kB) per feature whatever the row count; it
is exact (no error) until about 2,000 values have been seen.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from datasketches import kll_doubles_sketch  # type: ignore[import-untyped]

from inferstack.drift.features import Feature, Source, inferred_type_of, kind_of

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

DEFAULT_K = 1000
KLL_C = 0.64  # KLL's compactor capacity ratio, as SageMaker writes it
MAX_CATEGORIES = 1000  # distinct values kept per categorical feature; the rest count as OTHER
OTHER = "__other__"
MAX_JOINT_FEATURES = 256  # the multivariate moments are F x F: above this, no joint check


def rank_error(k: int, n: int, retained: int) -> float:
    """The sketch's normalized rank error (99% confidence); 0 while it holds every value."""
    if n <= retained:
        return 0.0
    return float(kll_doubles_sketch.get_normalized_rank_error(k, False))


@dataclass
class Cdf:
    """A weighted sample's step CDF: sorted values and cumulative fractions (exact for a
    sketch's retained items, which is what a KLL sketch answers queries from)."""

    values: np.ndarray
    cumulative: np.ndarray  # fraction of the weight at or below values[i]
    n: int
    error: float  # the normalized rank error of the source (0 when exact)

    @classmethod
    def from_weighted(cls, values: np.ndarray, weights: np.ndarray, n: int, error: float) -> Cdf:
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order].astype(np.float64)
        total = weights.sum()
        cumulative = np.cumsum(weights) / total if total > 0 else weights
        return cls(values, cumulative, n, error)

    def at(self, points: np.ndarray) -> np.ndarray:
        """F(x) = fraction <= x, at each point."""
        index = np.searchsorted(self.values, points, side="right")
        padded = np.concatenate(([0.0], self.cumulative))
        return np.asarray(padded[index])

    def below(self, points: np.ndarray) -> np.ndarray:
        """Fraction < x, at each point."""
        index = np.searchsorted(self.values, points, side="left")
        padded = np.concatenate(([0.0], self.cumulative))
        return np.asarray(padded[index])

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.cumulative, ranks, side="left")
        return np.asarray(self.values[np.minimum(index, len(self.values) - 1)])


@dataclass
class NumericSummary:
    k: int = DEFAULT_K
    sketch: kll_doubles_sketch = field(init=False)
    present: int = 0
    missing: int = 0
    total: float = 0.0
    squares: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    non_integer: int = 0  # present values with a fractional part (Integral vs Fractional)
    type_errors: int = 0  # values that were not numbers at all (a data_type_check)

    def __post_init__(self) -> None:
        self.sketch = kll_doubles_sketch(self.k)

    def update(self, values: np.ndarray) -> None:
        if values.dtype.kind in "OSU":
            values = self._numbers(values)
        self.update_floats(np.ascontiguousarray(values, dtype=np.float64), values.dtype.kind == "f")

    def update_floats(self, values: np.ndarray, check_integral: bool = False) -> None:
        """Add contiguous float64 values (NaN = missing)."""
        finite = ~np.isnan(values)
        present = values if finite.all() else values[finite]
        self.missing += len(values) - len(present)
        if not len(present):
            return
        # Sorted first: the sketch's compactions sort, and numpy's sort is faster (update
        # time -40%). KLL's error bound holds for any input order.
        self.sketch.update(np.sort(present))
        self.present += len(present)
        self.total += float(present.sum())
        self.squares += float(np.dot(present, present))
        self.minimum = min(self.minimum, float(present.min()))
        self.maximum = max(self.maximum, float(present.max()))
        if check_integral:
            self.non_integer += int(np.count_nonzero(present != np.floor(present)))

    def _numbers(self, values: np.ndarray) -> np.ndarray:
        out = np.full(len(values), np.nan)
        for i, value in enumerate(values):
            if value is None or (isinstance(value, str) and value.strip() == ""):
                continue
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                self.type_errors += 1
        return out

    def merge(self, other: NumericSummary) -> None:
        self.sketch.merge(other.sketch)
        self.present += other.present
        self.missing += other.missing
        self.total += other.total
        self.squares += other.squares
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.non_integer += other.non_integer
        self.type_errors += other.type_errors

    @property
    def mean(self) -> float:
        return self.total / self.present if self.present else math.nan

    @property
    def std(self) -> float:
        if self.present < 2:
            return 0.0 if self.present else math.nan
        var = (self.squares - self.present * self.mean**2) / (self.present - 1)
        return math.sqrt(max(var, 0.0))

    def items(self) -> Iterator[tuple[float, int]]:
        """(value, weight) of the sketch's retained values, weights summing to n."""
        cdf = self.cdf()
        counts = np.rint(np.diff(np.concatenate(([0.0], cdf.cumulative))) * self.present)
        for value, weight in zip(
            cdf.values.tolist(), counts.astype(np.int64).tolist(), strict=True
        ):
            if weight:
                yield value, weight

    def cdf(self) -> Cdf:
        """The sketch's CDF at its retained values (asked of the sketch: datasketches 5.2's
        Python iterator reports weight 1 for every value of a merged sketch)."""
        error = rank_error(self.k, self.present, self.sketch.num_retained)
        if self.sketch.is_empty():
            return Cdf(np.zeros(0), np.zeros(0), 0, error)
        values = np.unique(np.fromiter((v for v, _ in self.sketch), np.float64))
        cumulative = np.asarray(self.sketch.get_cdf(values.tolist(), True)[:-1])
        return Cdf(values, cumulative, self.present, error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "sketch": base64.b64encode(self.sketch.serialize()).decode(),
            "present": self.present,
            "missing": self.missing,
            "sum": self.total,
            "sum_of_squares": self.squares,
            "min": self.minimum if self.present else None,
            "max": self.maximum if self.present else None,
            "non_integer": self.non_integer,
            "type_errors": self.type_errors,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> NumericSummary:
        summary = cls(int(doc.get("k", DEFAULT_K)))
        summary.sketch = kll_doubles_sketch.deserialize(base64.b64decode(doc["sketch"]))
        summary.present = int(doc["present"])
        summary.missing = int(doc.get("missing", 0))
        summary.total = float(doc.get("sum", 0.0))
        summary.squares = float(doc.get("sum_of_squares", 0.0))
        summary.minimum = math.inf if doc.get("min") is None else float(doc["min"])
        summary.maximum = -math.inf if doc.get("max") is None else float(doc["max"])
        summary.non_integer = int(doc.get("non_integer", 0))
        summary.type_errors = int(doc.get("type_errors", 0))
        return summary


@dataclass
class CategoricalSummary:
    max_categories: int = MAX_CATEGORIES
    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0

    def update(self, values: np.ndarray) -> None:
        strings = np.asarray(values, dtype=object)
        empty = np.array([v is None or v == "" for v in strings], dtype=bool)
        self.missing += int(empty.sum())
        uniques, counts = np.unique(strings[~empty].astype(str), return_counts=True)
        self._add(zip(uniques.tolist(), counts.tolist(), strict=True))

    def _add(self, pairs: Any) -> None:
        for value, count in pairs:
            key = value if value in self.counts or len(self.counts) < self.max_categories else OTHER
            self.counts[key] = self.counts.get(key, 0) + int(count)

    def merge(self, other: CategoricalSummary) -> None:
        self.missing += other.missing
        self._add(sorted(other.counts.items(), key=lambda item: -item[1]))

    @property
    def present(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "missing": self.missing}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CategoricalSummary:
        summary = cls()
        summary.counts = {str(k): int(v) for k, v in doc.get("counts", {}).items()}
        summary.missing = int(doc.get("missing", 0))
        return summary


@dataclass
class Joint:
    """Moments of the numeric features' complete rows (multivariate check), about a shift
    (the first rows' means) so that large offsets do not cancel the variance away."""

    names: tuple[str, ...]
    rows: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of x - shift
    products: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        size = len(self.names)
        if self.sums.shape != (size,):
            self.sums = np.zeros(size)
            self.products = np.zeros((size, size))
        if self.shift.shape != (size,):
            self.shift = np.zeros(size)

    def update(self, stacked: np.ndarray) -> None:
        """Add rows given as a (features x rows) matrix; rows with a missing value are left out."""
        missing = np.isnan(stacked).any(axis=0)
        complete = stacked[:, ~missing] if missing.any() else stacked
        if not complete.shape[1]:
            return
        if self.rows == 0:
            self.shift = complete.mean(axis=1)
        centered = complete - self.shift[:, None]
        self.rows += complete.shape[1]
        self.sums += centered.sum(axis=1)
        self.products += centered @ centered.T

    def merge(self, other: Joint) -> None:
        if other.names != self.names or other.rows == 0:
            return  # a different feature set has no joint moments in common
        if self.rows == 0:
            self.shift = other.shift.copy()
        offset = other.shift - self.shift
        self.rows += other.rows
        self.sums += other.sums + other.rows * offset
        self.products += (
            other.products
            + np.outer(other.sums, offset)
            + np.outer(offset, other.sums)
            + other.rows * np.outer(offset, offset)
        )

    def second_moment(self, point: np.ndarray) -> np.ndarray:
        """E[(x - point)(x - point)^T] over the rows."""
        mean = self.sums / self.rows
        d = self.shift - point
        return np.asarray(
            self.products / self.rows + np.outer(mean, d) + np.outer(d, mean) + np.outer(d, d)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "rows": self.rows,
            "shift": self.shift.tolist(),
            "sums": self.sums.tolist(),
            "products": self.products.tolist(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Joint:
        size = len(doc["names"])
        return cls(
            tuple(doc["names"]),
            int(doc["rows"]),
            np.asarray(doc["sums"], dtype=np.float64),
            np.asarray(doc["products"], dtype=np.float64).reshape(size, size),
            np.asarray(doc.get("shift") or np.zeros(size), dtype=np.float64),
        )


@dataclass
class Profile:
    """Mergeable summary of rows: `update(columns)` per chunk, `merge(other)` per file."""

    k: int = DEFAULT_K
    max_categories: int = MAX_CATEGORIES
    rows: int = 0
    numeric: dict[str, NumericSummary] = field(default_factory=dict)
    categorical: dict[str, CategoricalSummary] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    joint: Joint | None = None

    def update(self, columns: Mapping[str, np.ndarray], source: Source = "input") -> None:
        """Add rows given as feature columns (features.features_of's output)."""
        count = None
        numeric: list[str] = []
        for name, given in columns.items():
            values = np.asarray(given).reshape(-1)
            if count is None:
                count = len(values)
            elif len(values) != count:
                raise ValueError(f"feature {name!r} has {len(values)} rows, expected {count}")
            self._remember(name, values, source)
            if name in self.categorical:
                self.categorical[name].update(values)
            elif values.dtype.kind in "OSU":
                self.numeric[name].update(values)  # strings where numbers belong: counted
            else:
                numeric.append(name)
        if numeric:
            # One (features x rows) copy: each feature's values contiguous for its sketch,
            # and the joint moments one matrix product.
            stacked = np.empty((len(numeric), count or 0))
            for row, name in enumerate(numeric):
                stacked[row] = columns[name].reshape(-1)
            for row, name in enumerate(numeric):
                integral = self.features[name].inferred_type == "Integral"
                floats = np.asarray(columns[name]).dtype.kind == "f"
                self.numeric[name].update_floats(stacked[row], integral and floats)
            self._update_joint(tuple(numeric), stacked)
        self.rows += count or 0

    def _remember(self, name: str, values: np.ndarray, source: Source) -> None:
        if name in self.features:
            return
        kind = kind_of(values)
        self.features[name] = Feature(name, kind, source, inferred_type_of(values))
        if kind == "numeric":
            self.numeric[name] = NumericSummary(self.k)
        else:
            self.categorical[name] = CategoricalSummary(self.max_categories)

    def _update_joint(self, names: tuple[str, ...], stacked: np.ndarray) -> None:
        if self.joint is None and self.rows == 0 and 2 <= len(names) <= MAX_JOINT_FEATURES:
            self.joint = Joint(names)
        if self.joint is None:
            return
        if names != self.joint.names:
            where = {name: i for i, name in enumerate(names)}
            if not all(name in where for name in self.joint.names):
                return  # rows without every joint feature add nothing to the moments
            stacked = stacked[[where[name] for name in self.joint.names]]
        self.joint.update(stacked)

    def merge(self, other: Profile) -> Profile:
        for name, feature in other.features.items():
            if name not in self.features:
                self.features[name] = feature
                if feature.kind == "numeric":
                    self.numeric[name] = NumericSummary(other.numeric[name].k)
                else:
                    self.categorical[name] = CategoricalSummary(self.max_categories)
            if name in self.numeric and name in other.numeric:
                self.numeric[name].merge(other.numeric[name])
            elif name in self.categorical and name in other.categorical:
                self.categorical[name].merge(other.categorical[name])
        if other.joint is not None:
            if self.joint is None and self.rows == 0:
                self.joint = Joint(other.joint.names)
            if self.joint is not None:
                self.joint.merge(other.joint)
        self.rows += other.rows
        return self

    def to_dict(self) -> dict[str, Any]:
        """Lossless: sketches serialized (base64), counts exact."""
        return {
            "version": 1,
            "k": self.k,
            "rows": self.rows,
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "source": f.source,
                    "inferred_type": f.inferred_type,
                    **(
                        self.numeric[f.name] if f.kind == "numeric" else self.categorical[f.name]
                    ).to_dict(),
                }
                for f in self.features.values()
            ],
            "joint": self.joint.to_dict() if self.joint is not None else None,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Profile:
        profile = cls(k=int(doc.get("k", DEFAULT_K)), rows=int(doc.get("rows", 0)))
        for item in doc.get("features", []):
            feature = Feature(item["name"], item["kind"], item["source"], item["inferred_type"])
            profile.features[feature.name] = feature
            if feature.kind == "numeric":
                profile.numeric[feature.name] = NumericSummary.from_dict(item)
            else:
                profile.categorical[feature.name] = CategoricalSummary.from_dict(item)
        if doc.get("joint"):
            profile.joint = Joint.from_dict(doc["joint"])
        return profile

    def to_statistics_json(self) -> dict[str, Any]:
        """SageMaker Model Monitor's statistics.json for these rows."""
        return {
            "version": 0,
            "dataset": {"item_count": self.rows},
            "features": [self._statistics(f) for f in self.features.values()],
        }

    def _statistics(self, feature: Feature) -> dict[str, Any]:
        if feature.kind == "categorical":
            cat = self.categorical[feature.name]
            return {
                "name": feature.name,
                "inferred_type": "String",
                "string_statistics": {
                    "common": {"num_present": cat.present, "num_missing": cat.missing},
                    "distinct_count": float(len(cat.counts)),
                    "distribution": {
                        "categorical": {
                            "buckets": [
                                {"value": value, "count": count}
                                for value, count in sorted(cat.counts.items(), key=lambda i: -i[1])
                            ]
                        }
                    },
                },
            }
        num = self.numeric[feature.name]
        inferred = "Fractional" if num.non_integer else feature.inferred_type
        return {
            "name": feature.name,
            "inferred_type": inferred,
            "numerical_statistics": {
                "common": {"num_present": num.present, "num_missing": num.missing},
                "mean": _number(num.mean),
                "sum": num.total,
                "std_dev": _number(num.std),
                "min": _number(num.minimum),
                "max": _number(num.maximum),
                "distribution": {
                    "kll": {
                        "buckets": _buckets(num),
                        "sketch": {
                            "parameters": {"c": KLL_C, "k": float(num.k)},
                            "data": _levels(num),
                        },
                    }
                },
            },
        }


def _number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _buckets(num: NumericSummary) -> list[dict[str, float]]:
    """SageMaker's 10 equal-width buckets between min and max, counts from the sketch."""
    if not num.present:
        return []
    edges = np.linspace(num.minimum, num.maximum, 11)
    cdf = num.cdf()
    cumulative = cdf.at(edges[1:-1]) * num.present
    counts = np.diff(np.concatenate(([0.0], cumulative, [float(num.present)])))
    return [
        {"lower_bound": float(lo), "upper_bound": float(hi), "count": float(c)}
        for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def _levels(num: NumericSummary) -> list[list[float]]:
    """The sketch's retained values per compactor level (an item at level h weighs 2**h; a
    value of weight w is written once per set bit of w, so the weights sum to n)."""
    by_level: dict[int, list[float]] = {}
    for value, weight in num.items():
        for level in range(weight.bit_length()):
            if weight >> level & 1:
                by_level.setdefault(level, []).append(value)
    top = max(by_level, default=-1)
    return [by_level.get(level, []) for level in range(top + 1)]


def cdf_from_levels(levels: list[list[float]], n: int, k: int) -> Cdf:
    """A CDF from SageMaker's serialized sketch (compactor levels, level h weighing 2**h)."""
    empty = np.zeros(0)
    values = np.concatenate([np.asarray(level, dtype=np.float64) for level in levels] + [empty])
    weights = np.concatenate([np.full(len(lv), 2.0**h) for h, lv in enumerate(levels)] + [empty])
    retained = len(values)
    error = rank_error(k, n, retained)
    return Cdf.from_weighted(values, weights, n or int(weights.sum()), error)
