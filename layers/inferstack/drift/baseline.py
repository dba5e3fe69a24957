"""A release's baseline: built from its reference sample, saved as SageMaker's files and ours.

`save(directory)` writes statistics.json and constraints.json (SageMaker Model Monitor's
schemas, so its tools read ours) and baseline.json (ours, lossless: serialized sketches, the
multivariate model, the thresholds). `Baseline.load(directory)` prefers baseline.json and
falls back to SageMaker's statistics.json (+ constraints.json), parsed leniently: SageMaker
writes floats where ints belong ("version": 0.0) and its keys vary between versions.
Schemas: https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-statistics.html
and https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-constraints.html
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.drift.compare import CategoricalStats, NumericStats, Thresholds, View, view_of
from inferstack.drift.features import Feature, request_features
from inferstack.drift.multivariate import PcaModel, fit_pca
from inferstack.drift.profile import DEFAULT_K, OTHER, Cdf, Profile, cdf_from_levels

if TYPE_CHECKING:
    from collections.abc import Mapping

STATISTICS = "statistics.json"
CONSTRAINTS = "constraints.json"
BASELINE = "baseline.json"
FORMAT = "inferstack-baseline"
CHUNK_ROWS = 65_536


class BaselineError(ValueError):
    """A baseline directory that cannot be read (missing or malformed files)."""


@dataclass
class Baseline:
    view: View
    thresholds: Thresholds = field(default_factory=Thresholds)
    profile: Profile | None = None  # None when loaded from SageMaker's files
    pca: PcaModel | None = None
    names: dict[str, str] = field(default_factory=dict)  # feature name -> the model's name

    @property
    def rows(self) -> int:
        return self.view.rows

    @property
    def features(self) -> list[Feature]:
        return list(self.view.features.values())

    @property
    def k(self) -> int:
        return self.profile.k if self.profile is not None else DEFAULT_K

    def new_profile(self) -> Profile:
        """An empty profile sized like the baseline's, for a window to fill."""
        return Profile(k=self.k)

    def columns(
        self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A request's (inputs, outputs) feature columns under the baseline's names."""
        columns, specs = request_features(inputs, outputs)
        named = {self.names.get(name, name): values for name, values in columns.items()}
        sources = {self.names.get(s.name, s.name): s.source for s in specs}
        return (
            {n: v for n, v in named.items() if sources[n] == "input"},
            {n: v for n, v in named.items() if sources[n] == "output"},
        )

    def profile_tensors(
        self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray] | None = None
    ) -> Profile:
        """A window's profile of these tensors (chunked), named as the baseline names them."""
        profile = self.new_profile()
        _fill(profile, *self.columns(inputs, outputs))
        return profile

    # ----------------------------------------------------------------------- files

    def save(self, directory: str | Path) -> None:
        if self.profile is None:
            raise BaselineError("a baseline loaded from SageMaker's files has no profile to save")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / STATISTICS).write_text(json.dumps(self.profile.to_statistics_json(), indent=1))
        (out / CONSTRAINTS).write_text(json.dumps(self.constraints(), indent=1))
        ours = {
            "format": FORMAT,
            "version": 1,
            "thresholds": self.thresholds.to_dict(),
            "names": self.names,
            "profile": self.profile.to_dict(),
            "pca": self.pca.to_dict() if self.pca is not None else None,
        }
        (out / BASELINE).write_text(json.dumps(ours))

    def constraints(self) -> dict[str, Any]:
        """SageMaker's constraints.json for this baseline."""
        features = []
        for feature in self.features:
            item: dict[str, Any] = {"name": feature.name}
            if feature.kind == "numeric":
                num = self.view.numeric[feature.name]
                item["inferred_type"] = num.inferred_type
                item["completeness"] = _share(num.present, num.present + num.missing)
                item["num_constraints"] = {"is_non_negative": bool(num.minimum >= 0)}
            else:
                cat = self.view.categorical[feature.name]
                item["inferred_type"] = "String"
                item["completeness"] = _share(cat.present, cat.present + cat.missing)
                if OTHER not in cat.counts:
                    item["string_constraints"] = {"domains": sorted(cat.counts)}
            features.append(item)
        return {
            "version": 0,
            "features": features,
            "monitoring_config": {
                "evaluate_constraints": "Enabled",
                "emit_metrics": "Enabled",
                # The share of values allowed to break the type / the domain.
                "datatype_check_threshold": self.thresholds.tolerance,
                "domain_content_threshold": self.thresholds.tolerance,
                "distribution_constraints": {
                    "perform_comparison": "Enabled",
                    # Ours adds the n-aware KS term and the sketch error to this floor.
                    "comparison_threshold": self.thresholds.min_effect,
                    "comparison_method": "Robust",
                    "categorical_comparison_threshold": self.thresholds.min_effect,
                    "categorical_drift_method": "LInfinity",
                },
            },
        }

    @classmethod
    def load(cls, directory: str | Path) -> Baseline:
        where = Path(directory)
        if (where / BASELINE).is_file():
            return cls._load_ours(_read_json(where / BASELINE))
        if (where / STATISTICS).is_file():
            constraints = _read_json(where / CONSTRAINTS) if (where / CONSTRAINTS).is_file() else {}
            return from_sagemaker(_read_json(where / STATISTICS), constraints)
        raise BaselineError(f"{where}: no {BASELINE} or {STATISTICS}")

    @classmethod
    def _load_ours(cls, doc: Mapping[str, Any]) -> Baseline:
        try:
            profile = Profile.from_dict(doc["profile"])
            pca = PcaModel.from_dict(doc["pca"]) if doc.get("pca") else None
            thresholds = Thresholds.from_dict(doc.get("thresholds"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"{BASELINE} is malformed: {exc!r}") from exc
        names = {str(k): str(v) for k, v in (doc.get("names") or {}).items()}
        return cls(view_of(profile), thresholds, profile, pca, names)


def build_baseline(
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray] | None = None,
    *,
    names: Mapping[str, str] | None = None,
    thresholds: Thresholds | None = None,
    k: int = DEFAULT_K,
    seed: int = 0,
) -> Baseline:
    """A baseline from a reference sample (tensors with the batch on axis 0).

    `names` renames features (`x[0]` -> the model's own column name)."""
    renames = dict(names or {})
    baseline = Baseline(View(0, {}), thresholds or Thresholds(), Profile(k=k), None, renames)
    ins, outs = baseline.columns(inputs, outputs)
    profile = baseline.profile
    assert profile is not None
    _fill(profile, ins, outs)
    baseline.view = view_of(profile)
    if profile.joint is not None:
        joint_names = profile.joint.names
        matrix = np.column_stack([_as_float({**ins, **outs}[n]) for n in joint_names])
        baseline.pca = fit_pca(joint_names, matrix, seed=seed)
    return baseline


def from_sagemaker(statistics: Mapping[str, Any], constraints: Mapping[str, Any]) -> Baseline:
    """A baseline from files SageMaker Model Monitor wrote (no multivariate model)."""
    try:
        dataset = statistics.get("dataset") or {}
        view = View(int(float(dataset.get("item_count", 0))), {})
        for item in statistics.get("features") or []:
            _sagemaker_feature(view, item)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BaselineError(f"{STATISTICS} is malformed: {exc!r}") from exc
    config = (constraints.get("monitoring_config") or {}).get("distribution_constraints") or {}
    limits = Thresholds()
    if "comparison_threshold" in config:
        limits = Thresholds(min_effect=float(config["comparison_threshold"]))
    return Baseline(view, limits)


def _sagemaker_feature(view: View, item: Mapping[str, Any]) -> None:
    name = str(item["name"])
    inferred = str(item.get("inferred_type", "Fractional"))
    if "numerical_statistics" in item:
        stats = item["numerical_statistics"]
        common = stats.get("common") or {}
        present = int(float(common.get("num_present", 0)))
        kll = (stats.get("distribution") or {}).get("kll") or {}
        sketch = kll.get("sketch") or {}
        k = int(float((sketch.get("parameters") or {}).get("k", 200)))
        if sketch.get("data"):
            cdf = cdf_from_levels([list(map(float, lv)) for lv in sketch["data"]], present, k)
        else:
            cdf = _cdf_from_buckets(kll.get("buckets") or [], present)
        view.numeric[name] = NumericStats(
            cdf, present, int(float(common.get("num_missing", 0))),
            _float(stats.get("mean")), _float(stats.get("std_dev")),
            _float(stats.get("min")), _float(stats.get("max")), inferred,
        )  # fmt: skip
        view.features[name] = Feature(name, "numeric", "input", inferred)
    elif "string_statistics" in item:
        stats = item["string_statistics"]
        common = stats.get("common") or {}
        buckets = ((stats.get("distribution") or {}).get("categorical") or {}).get("buckets") or []
        counts = {str(b["value"]): int(float(b["count"])) for b in buckets}
        view.categorical[name] = CategoricalStats(counts, int(float(common.get("num_missing", 0))))
        view.features[name] = Feature(name, "categorical", "input", "String")


def _cdf_from_buckets(buckets: list[Mapping[str, Any]], present: int) -> Cdf:
    """Without a sketch, only the 10 buckets: their upper bounds, as coarse as they are."""
    values = np.array([float(b["upper_bound"]) for b in buckets])
    weights = np.array([float(b["count"]) for b in buckets])
    error = float(weights.max() / weights.sum()) if len(weights) and weights.sum() else 1.0
    return Cdf.from_weighted(values, weights, present, error)


def _fill(profile: Profile, ins: Mapping[str, np.ndarray], outs: Mapping[str, np.ndarray]) -> None:
    """Profile the columns a chunk at a time (outputs describe the same rows as inputs)."""
    rows = len(next(iter((ins or outs).values()))) if ins or outs else 0
    for start in range(0, rows, CHUNK_ROWS):
        stop = start + CHUNK_ROWS
        counted = profile.rows
        if ins:
            profile.update({n: v[start:stop] for n, v in ins.items()}, "input")
            counted = profile.rows
        if outs:
            profile.update({n: v[start:stop] for n, v in outs.items()}, "output")
            profile.rows = counted if ins else profile.rows


def _as_float(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise BaselineError(f"{path}: expected a JSON object")
    return doc
