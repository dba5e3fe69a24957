"""Compare a window's profile with a baseline: per-feature distances, thresholds, violations.

Numeric features: the KS distance D (L-infinity between the two CDFs, as SageMaker and Deequ)
computed exactly on the two sketches' retained values. Its threshold is the largest of
- the two-sample KS critical value at a family-wise false-alarm rate: alpha / 2 is shared
  among all features (Bonferroni), so 64 features alarm no more often than one would;
  c(a) * sqrt((n + m) / (n m)) with c(a) = sqrt(-ln(a / 2) / 2) shrinks as windows grow;
- plus the two sketches' rank errors (99% bounds; 0 while a sketch is exact);
- and a minimum effect size (D = 0.05 by default: about a 0.12 sigma mean shift of a normal,
  or 5% of the mass moved) below which nothing alarms however large the window.
Categorical features: L-infinity between normalized frequencies, threshold z * sqrt(1/4 (1/n +
1/m)) (the worst case p = 1/2) at the same per-feature rate, and the same minimum effect.
The drift score is the largest distance / threshold over every check (> 1 means drift).
Violations follow SageMaker's constraint_violations.json check types:
https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-violations.html
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.drift.profile import OTHER, Cdf, Profile

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.drift.baseline import Baseline
    from inferstack.drift.features import Feature

HISTOGRAM_BINS = 20
PSI_BINS = 10
EPSILON = 1e-4  # PSI's floor for an empty bin


@dataclass(frozen=True)
class Thresholds:
    """What alarms. Stored with a baseline; the defaults are what the README documents."""

    alpha: float = 0.01  # false-alarm rate per check of a model, all features together
    min_effect: float = 0.05  # KS D / categorical L-infinity below which nothing alarms
    min_effect_multivariate: float = 0.02  # relative rise of the PCA reconstruction error
    min_rows: int = 100  # a window (or reference) with fewer rows decides nothing
    tolerance: float = 0.01  # data quality: share of values allowed to break a constraint

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Thresholds:
        known = {k: v for k, v in (doc or {}).items() if k in cls.__dataclass_fields__}
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in known.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NumericStats:
    """One numeric feature's summary as the comparison needs it (from a sketch or a file)."""

    cdf: Cdf
    present: int
    missing: int
    mean: float
    std: float
    minimum: float
    maximum: float
    inferred_type: str = "Fractional"
    non_integer: int = 0
    type_errors: int = 0


@dataclass
class CategoricalStats:
    counts: dict[str, int]
    missing: int

    @property
    def present(self) -> int:
        return sum(self.counts.values())


@dataclass
class View:
    """A profile (or a SageMaker statistics.json) reduced to what `check` reads."""

    rows: int
    features: dict[str, Feature]
    numeric: dict[str, NumericStats] = field(default_factory=dict)
    categorical: dict[str, CategoricalStats] = field(default_factory=dict)


def view_of(profile: Profile) -> View:
    view = View(profile.rows, dict(profile.features))
    for name, num in profile.numeric.items():
        inferred = profile.features[name].inferred_type
        view.numeric[name] = NumericStats(
            num.cdf(), num.present, num.missing, num.mean, num.std, num.minimum, num.maximum,
            "Fractional" if num.non_integer and inferred != "Integral" else inferred,
            num.non_integer, num.type_errors,
        )  # fmt: skip
    for name, cat in profile.categorical.items():
        view.categorical[name] = CategoricalStats(dict(cat.counts), cat.missing)
    return view


@dataclass
class FeatureResult:
    feature: Feature
    method: str
    distance: float
    threshold: float
    drift: bool
    psi: float | None = None
    wasserstein: float | None = None
    histogram: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.feature.name,
            "kind": self.feature.kind,
            "source": self.feature.source,
            "method": self.method,
            "distance": _round(self.distance),
            "threshold": _round(self.threshold),
            "drift": self.drift,
            "psi": None if self.psi is None else _round(self.psi),
            "wasserstein": None if self.wasserstein is None else _round(self.wasserstein),
            "histogram": self.histogram,
        }


@dataclass
class DriftResult:
    drift: bool
    score: float
    enough_rows: bool
    reason: str | None
    reference_rows: int
    current_rows: int
    features: list[FeatureResult]
    multivariate: dict[str, Any] | None
    violations: list[dict[str, str]]

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature.name for f in self.features if f.drift]

    def to_json(self) -> dict[str, Any]:
        """The summary (DESIGN8.md's SUMMARY): what io writes, renders and prints."""
        return {
            "drift": self.drift,
            "score": _round(self.score),
            "enough_rows": self.enough_rows,
            "reason": self.reason,
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "features": [f.to_json() for f in self.features],
            "multivariate": self.multivariate,
            "violations": self.violations,
        }


def check(
    baseline: Baseline,
    current: Profile,
    *,
    min_rows: int | None = None,
    thresholds: Thresholds | None = None,
) -> DriftResult:
    """Compare a window's profile with the baseline (see the module docstring)."""
    from inferstack.drift.multivariate import check_multivariate

    limits = thresholds or baseline.thresholds
    needed = limits.min_rows if min_rows is None else min_rows
    reference, window = baseline.view, view_of(current)
    compared = [n for n in reference.features if n in window.features]
    per_feature_alpha = limits.alpha / 2 / max(len(compared), 1)

    results, violations = _compare_features(reference, window, per_feature_alpha, limits)

    multivariate = None
    if baseline.pca is not None and current.joint is not None:
        multivariate = check_multivariate(baseline.pca, current.joint, limits.alpha / 2, limits)

    enough, reason = True, None
    if reference.rows < needed or current.rows < needed:
        enough = False
        which = "reference" if reference.rows < needed else "window"
        have = reference.rows if which == "reference" else current.rows
        reason = f"the {which} has {have} rows; at least {needed} are needed to decide"
        for item in results:
            item.drift = False
        if multivariate is not None:
            multivariate["drift"] = False
    for item in results:
        if item.drift:
            violations.append(_violation(
                item.feature.name, "baseline_drift_check",
                f"Baseline drift distance: {item.distance:.6g} exceeds threshold: "
                f"{item.threshold:.6g}",
            ))  # fmt: skip
    ratios = [r.distance / r.threshold for r in results if r.threshold > 0]
    if multivariate is not None:
        ratios.append(multivariate["ratio"])
    drift = enough and (
        any(r.drift for r in results) or bool(multivariate and multivariate["drift"])
    )
    return DriftResult(
        drift=drift,
        # Undecided is not drift: the alarm watches the score.
        score=max(ratios, default=0.0) if enough else 0.0,
        enough_rows=enough,
        reason=reason,
        reference_rows=reference.rows,
        current_rows=current.rows,
        features=results,
        multivariate=multivariate,
        violations=violations,
    )


def _compare_features(
    reference: View, window: View, alpha: float, limits: Thresholds
) -> tuple[list[FeatureResult], list[dict[str, str]]]:
    results: list[FeatureResult] = []
    violations = _column_violations(reference, window)
    for name in [n for n in reference.features if n in window.features]:
        feature = reference.features[name]
        if name in reference.numeric and name in window.numeric:
            ref, cur = reference.numeric[name], window.numeric[name]
            if cur.present and ref.present:
                results.append(_numeric(feature, ref, cur, alpha, limits))
            violations += _numeric_quality(name, ref, cur, limits)
        elif name in reference.categorical and name in window.categorical:
            rcat, ccat = reference.categorical[name], window.categorical[name]
            if rcat.present and ccat.present:
                results.append(_categorical(feature, rcat, ccat, alpha, limits))
            violations += _categorical_quality(name, rcat, ccat, limits)
        else:
            violations.append(_violation(
                name, "data_type_check",
                f"Data type mismatch: baseline {feature.inferred_type}, current "
                f"{window.features[name].inferred_type}",
            ))  # fmt: skip
    return results, violations


# --------------------------------------------------------------------------- numeric


def ks_critical(alpha: float, n: int, m: int) -> float:
    """The asymptotic two-sample KS critical value at level alpha."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def ks_distance(ref: Cdf, cur: Cdf) -> float:
    """sup |F_ref - F_cur|: both are step functions, so their retained values suffice."""
    points = np.union1d(ref.values, cur.values)
    return float(np.max(np.abs(ref.at(points) - cur.at(points)))) if len(points) else 0.0


def numeric_threshold(
    ref: NumericStats, cur: NumericStats, alpha: float, limits: Thresholds
) -> float:
    statistical = ks_critical(alpha, ref.present, cur.present) + ref.cdf.error + cur.cdf.error
    return max(limits.min_effect, statistical)


def psi(ref: Cdf, cur: Cdf, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's deciles."""
    edges = np.unique(ref.quantiles(np.arange(1, bins) / bins))
    r = np.diff(np.concatenate(([0.0], ref.at(edges), [1.0])))
    c = np.diff(np.concatenate(([0.0], cur.at(edges), [1.0])))
    r, c = np.maximum(r, EPSILON), np.maximum(c, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def wasserstein(ref: Cdf, cur: Cdf, scale: float, points: int = 1000) -> float | None:
    """W1 between the two distributions (mean |quantile difference|) over the reference std."""
    if not scale > 0:
        return None
    ranks = (np.arange(points) + 0.5) / points
    return float(np.mean(np.abs(ref.quantiles(ranks) - cur.quantiles(ranks)))) / scale


def _numeric(
    feature: Feature, ref: NumericStats, cur: NumericStats, alpha: float, limits: Thresholds
) -> FeatureResult:
    distance = ks_distance(ref.cdf, cur.cdf)
    threshold = numeric_threshold(ref, cur, alpha, limits)
    return FeatureResult(
        feature, "ks", distance, threshold, distance > threshold,
        psi=psi(ref.cdf, cur.cdf),
        wasserstein=wasserstein(ref.cdf, cur.cdf, ref.std),
        histogram=_numeric_histogram(ref.cdf, cur.cdf),
    )  # fmt: skip


def _numeric_histogram(ref: Cdf, cur: Cdf) -> dict[str, Any]:
    """Shares per equal-width bin over both windows' 0.5%..99.5% range (tails in the end bins)."""
    ends = np.concatenate(
        (ref.quantiles(np.array([0.005, 0.995])), cur.quantiles(np.array([0.005, 0.995])))
    )
    lo, hi = float(ends.min()), float(ends.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    inner = edges[1:-1]

    def shares(cdf: Cdf) -> list[float]:
        return [_round(v) for v in np.diff(np.concatenate(([0.0], cdf.at(inner), [1.0])))]

    return {"edges": [_round(e) for e in edges], "reference": shares(ref), "current": shares(cur)}


def _numeric_quality(
    name: str, ref: NumericStats, cur: NumericStats, limits: Thresholds
) -> list[dict[str, str]]:
    total = cur.present + cur.missing + cur.type_errors
    found = _completeness(name, ref, cur.present, total, limits)
    wrong = cur.type_errors + (cur.non_integer if ref.inferred_type == "Integral" else 0)
    if total and wrong / total > limits.tolerance:
        found.append(_violation(
            name, "data_type_check",
            f"Data type match {1 - wrong / total:.4g}: {wrong} of {total} values are not "
            f"{ref.inferred_type}",
        ))  # fmt: skip
    if cur.present and ref.present:
        outside = float(cur.cdf.below(np.array([ref.minimum]))[0])
        outside += 1.0 - float(cur.cdf.at(np.array([ref.maximum]))[0])
        expected = 2.0 / (ref.present + 1)  # a new value lands outside the old range this often
        allowed = (
            limits.tolerance + expected + 3 * math.sqrt(expected / cur.present) + cur.cdf.error
        )
        if outside > allowed:
            found.append(_violation(
                name, "data_type_check",
                f"Out of range: {outside:.4g} of values outside the baseline's "
                f"[{ref.minimum:.6g}, {ref.maximum:.6g}]",
            ))  # fmt: skip
    return found


def _completeness(
    name: str, ref: NumericStats | CategoricalStats, present: int, total: int, limits: Thresholds
) -> list[dict[str, str]]:
    """A completeness_check violation when the window's share of present values dropped."""
    if not total or not _completeness_dropped(ref.present, ref.missing, present, total, limits):
        return []
    return [
        _violation(
            name,
            "completeness_check",
            f"Data completeness {present / total:.4g} is below the baseline's "
            f"{ref.present / max(ref.present + ref.missing, 1):.4g}",
        )
    ]


def _completeness_dropped(
    ref_present: int, ref_missing: int, cur_present: int, cur_total: int, limits: Thresholds
) -> bool:
    base = ref_present / max(ref_present + ref_missing, 1)
    now = cur_present / cur_total
    spread = 3 * math.sqrt(max(base * (1 - base), 0.0) / cur_total)
    return now < base - max(limits.tolerance, spread)


# --------------------------------------------------------------------------- categorical


def _categorical(
    feature: Feature,
    ref: CategoricalStats,
    cur: CategoricalStats,
    alpha: float,
    limits: Thresholds,
) -> FeatureResult:
    categories = sorted(set(ref.counts) | set(cur.counts), key=lambda c: -ref.counts.get(c, 0))
    r = np.array([ref.counts.get(c, 0) for c in categories], dtype=np.float64) / ref.present
    c = np.array([cur.counts.get(c, 0) for c in categories], dtype=np.float64) / cur.present
    distance = float(np.max(np.abs(r - c)))
    z = NormalDist().inv_cdf(1 - alpha / (2 * max(len(categories), 1)))
    statistical = z * math.sqrt(0.25 * (1 / ref.present + 1 / cur.present))
    threshold = max(limits.min_effect, statistical)
    return FeatureResult(
        feature, "linf", distance, threshold, distance > threshold,
        psi=psi_categorical(r, c),
        histogram={
            "categories": categories,
            "reference": [_round(v) for v in r],
            "current": [_round(v) for v in c],
        },
    )  # fmt: skip


def psi_categorical(ref: np.ndarray, cur: np.ndarray) -> float:
    r, c = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def _categorical_quality(
    name: str, ref: CategoricalStats, cur: CategoricalStats, limits: Thresholds
) -> list[dict[str, str]]:
    total = cur.present + cur.missing
    found = _completeness(name, ref, cur.present, total, limits)
    if OTHER not in ref.counts and cur.present:
        unknown = sum(n for value, n in cur.counts.items() if value not in ref.counts)
        if unknown / cur.present > limits.tolerance:
            found.append(_violation(
                name, "categorical_values_check",
                f"Baseline domain check: {unknown / cur.present:.4g} of values "
                f"({unknown}) are not in the baseline's {len(ref.counts)} categories",
            ))  # fmt: skip
    return found


# --------------------------------------------------------------------------- shared


def _column_violations(reference: View, window: View) -> list[dict[str, str]]:
    if not window.rows:
        return []
    found = [
        _violation(name, "missing_column_check", f"Column {name!r} is missing from the data")
        for name in reference.features
        if name not in window.features
    ]
    found += [
        _violation(name, "extra_column_check", f"Column {name!r} is not in the baseline")
        for name in window.features
        if name not in reference.features
    ]
    return found


def _violation(name: str, check_type: str, description: str) -> dict[str, str]:
    return {"feature_name": name, "constraint_check_type": check_type, "description": description}


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")
