"""The drift statistics core on controlled synthetic data (fixed seeds): what a user sees.

Drift found where the data moved (and named), not found where it did not (many features,
large windows, tiny effects), SageMaker's file schemas, and round trips through the files.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import numpy as np
import pytest

from inferstack.drift import Baseline, BaselineError, Profile, build_baseline, check, features_of
from inferstack.drift.features import request_features

if TYPE_CHECKING:
    from pathlib import Path

FEATURES = 16


def tabular(seed: int, rows: int, *, shift: float = 0.0, column: int = 3, rho: float = 0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    x[:, column] += shift
    return x


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return build_baseline({"x": tabular(1, 20_000, rho=0.8)})


# --------------------------------------------------------------------------- features


def test_features_follow_the_tensor_ranks() -> None:
    columns = features_of({
        "table": np.zeros((4, 3)),
        "single": np.zeros((4, 1)),
        "image": np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3),
        "label": np.array([b"cat", b"dog", b"cat", b"cat"], dtype=object),
        "scalar": np.float32(2.5),
    })  # fmt: skip
    assert list(columns) == [
        "table[0]", "table[1]", "table[2]", "single",
        "image.c0.mean", "image.c0.std", "image.c1.mean", "image.c1.std",
        "label", "scalar",
    ]  # fmt: skip
    # Channel 1 of row 0 holds 9..17: mean 13.
    assert columns["image.c1.mean"][0] == pytest.approx(13.0)
    assert columns["image.c0.std"][0] == pytest.approx(np.arange(9).std())
    assert list(columns["label"]) == ["cat", "dog", "cat", "cat"]
    # A missing string is missing, not the category "None".
    profile = Profile()
    profile.update(features_of({"tag": np.array(["a", None, b"b"], dtype=object)}))
    assert profile.categorical["tag"].counts == {"a": 1, "b": 1}
    assert profile.categorical["tag"].missing == 1
    assert columns["scalar"].shape == (1,)


def test_outputs_are_prefixed_only_on_a_name_clash() -> None:
    _, specs = request_features(
        {"x": np.zeros((2, 1)), "y": np.zeros(2)},
        {"x": np.zeros(2, dtype=np.int64), "probs": np.zeros((2, 2))},
    )
    named = {s.name: (s.kind, s.source, s.inferred_type) for s in specs}
    assert named["output:x"] == ("numeric", "output", "Integral")
    assert named["probs[1]"] == ("numeric", "output", "Fractional")
    assert named["x"] == ("numeric", "input", "Fractional")


# --------------------------------------------------------------------------- profile


def test_profiles_merged_per_file_equal_one_profile() -> None:
    data = tabular(2, 30_000)
    whole = Profile()
    whole.update(features_of({"x": data}))
    parts = [Profile() for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(data, 3), strict=True):
        part.update(features_of({"x": chunk}))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.rows == whole.rows == 30_000
    for name in ("x[0]", "x[7]"):
        a, b = merged.numeric[name], whole.numeric[name]
        assert a.present == b.present and a.minimum == b.minimum and a.maximum == b.maximum
        assert a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)
        # The CDFs agree within the two sketches' rank errors (99% bounds, 0.28% each).
        points = np.array([-1.0, 0.0, 1.0])
        tolerance = a.cdf().error + b.cdf().error
        assert 0 < tolerance < 0.01
        assert np.abs(a.cdf().at(points) - b.cdf().at(points)).max() <= tolerance
    assert merged.joint is not None and whole.joint is not None
    point = np.full(FEATURES, 0.5)
    assert np.allclose(merged.joint.second_moment(point), whole.joint.second_moment(point))
    assert merged.joint.second_moment(point)[0, 0] == pytest.approx(1.25, abs=0.05)


def test_profile_serialization_is_lossless() -> None:
    profile = Profile()
    profile.update(
        {
            "a": np.random.default_rng(3).normal(size=50_000),
            "c": np.array(["u", "v"] * 25_000, dtype=object),
        }
    )
    again = Profile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.rows == profile.rows
    assert list(again.numeric["a"].items()) == list(profile.numeric["a"].items())
    assert again.categorical["c"].counts == {"u": 25_000, "v": 25_000}


def test_statistics_json_has_sagemakers_schema() -> None:
    profile = Profile()
    values = np.random.default_rng(4).normal(size=10_000)
    values[:10] = np.nan
    profile.update({"n": values, "i": np.arange(10_000), "s": np.array(["a", "b"] * 5_000)})
    doc = json.loads(json.dumps(profile.to_statistics_json()))
    assert doc["version"] == 0 and doc["dataset"] == {"item_count": 10_000}
    numeric, integral, text = doc["features"]
    assert (numeric["name"], numeric["inferred_type"]) == ("n", "Fractional")
    assert integral["inferred_type"] == "Integral"
    stats = numeric["numerical_statistics"]
    assert stats["common"] == {"num_present": 9_990, "num_missing": 10}
    assert {"mean", "sum", "std_dev", "min", "max"} <= set(stats)
    kll = stats["distribution"]["kll"]
    assert len(kll["buckets"]) == 10
    assert kll["buckets"][0]["lower_bound"] == stats["min"]
    assert kll["buckets"][-1]["upper_bound"] == stats["max"]
    assert sum(b["count"] for b in kll["buckets"]) == pytest.approx(9_990)
    assert kll["sketch"]["parameters"]["k"] == 1000 and kll["sketch"]["parameters"]["c"] == 0.64
    levels = kll["sketch"]["data"]
    assert sum(len(level) * 2**h for h, level in enumerate(levels)) == 9_990
    strings = text["string_statistics"]
    assert text["inferred_type"] == "String" and strings["distinct_count"] == 2
    assert {b["value"]: b["count"] for b in strings["distribution"]["categorical"]["buckets"]} == {
        "a": 5_000,
        "b": 5_000,
    }


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize(("seed", "rows"), [(10, 500), (11, 5_000), (12, 100_000)])
def test_no_drift_is_found_where_nothing_changed(baseline: Baseline, seed: int, rows: int) -> None:
    result = check(baseline, baseline.profile_tensors({"x": tabular(seed, rows, rho=0.8)}))
    summary = result.to_json()
    assert summary["drift"] is False and summary["enough_rows"] is True
    assert [f["name"] for f in summary["features"] if f["drift"]] == []
    assert summary["multivariate"]["drift"] is False
    assert summary["score"] < 1
    assert summary["violations"] == []


def test_a_small_shift_in_one_feature_is_found_and_named(baseline: Baseline) -> None:
    window = baseline.profile_tensors({"x": tabular(20, 5_000, shift=0.2, column=5, rho=0.8)})
    summary = check(baseline, window).to_json()
    assert summary["drift"] is True and summary["score"] > 1
    assert [f["name"] for f in summary["features"] if f["drift"]] == ["x[5]"]
    drifted = next(f for f in summary["features"] if f["name"] == "x[5]")
    assert drifted["method"] == "ks" and drifted["distance"] > drifted["threshold"]
    assert drifted["wasserstein"] == pytest.approx(0.2, abs=0.05)
    assert drifted["psi"] > 0.02
    # SageMaker's visualisation parses the distance and the threshold out of the description.
    (violation,) = summary["violations"]
    assert violation["constraint_check_type"] == "baseline_drift_check"
    found = re.search(
        r"distance: ([\d.e-]+) exceeds threshold: ([\d.e-]+)", violation["description"]
    )
    assert found and float(found[1]) == pytest.approx(drifted["distance"], rel=1e-3)


@pytest.mark.parametrize("shift", [0.02, 0.08])
def test_a_tiny_shift_in_a_large_window_does_not_alarm(baseline: Baseline, shift: float) -> None:
    window = baseline.profile_tensors({"x": tabular(21, 100_000, shift=shift, rho=0.8)})
    result = check(baseline, window)
    assert result.drift is False
    shifted = next(f for f in result.features if f.feature.name == "x[3]")
    assert shifted.distance < shifted.threshold == pytest.approx(0.05)
    # 0.08 sigma is past the n-aware KS critical value here: only the minimum effect size
    # keeps it quiet (a p-value test calls it significant).
    if shift == 0.08:
        assert shifted.distance > 0.03


def test_the_summary_has_the_contracted_shape(baseline: Baseline) -> None:
    summary = check(
        baseline, baseline.profile_tensors({"x": tabular(22, 1_000, rho=0.8)})
    ).to_json()
    assert set(summary) == {
        "drift", "score", "enough_rows", "reason", "rows", "features", "multivariate", "violations",
    }  # fmt: skip
    assert summary["rows"] == {"reference": 20_000, "current": 1_000}
    feature = summary["features"][0]
    assert set(feature) == {
        "name", "kind", "source", "method", "distance", "threshold", "drift", "psi",
        "wasserstein", "histogram",
    }  # fmt: skip
    histogram = feature["histogram"]
    assert len(histogram["edges"]) == len(histogram["reference"]) + 1
    assert sum(histogram["reference"]) == pytest.approx(1, abs=1e-3)
    assert sum(histogram["current"]) == pytest.approx(1, abs=1e-3)
    assert {"method", "error", "threshold", "drift", "components"} <= set(summary["multivariate"])
    json.dumps(summary)


def test_a_window_with_too_few_rows_says_so(baseline: Baseline) -> None:
    window = baseline.profile_tensors({"x": tabular(23, 40, shift=3.0, rho=0.8)})
    summary = check(baseline, window).to_json()
    assert summary["enough_rows"] is False and summary["drift"] is False
    assert summary["score"] == 0  # the alarm watches the score: undecided must not fire it
    assert "40 rows" in summary["reason"]
    assert not any(f["drift"] for f in summary["features"])


def test_a_correlation_flip_with_unchanged_marginals_is_found(baseline: Baseline) -> None:
    window = baseline.profile_tensors({"x": tabular(24, 5_000, rho=-0.8)})
    summary = check(baseline, window).to_json()
    assert not any(f["drift"] for f in summary["features"])  # each column looks the same
    assert summary["multivariate"]["drift"] is True
    assert summary["multivariate"]["error"] > summary["multivariate"]["threshold"]
    assert summary["drift"] is True and summary["score"] > 1


def test_categorical_and_output_features_are_compared() -> None:
    rng = np.random.default_rng(30)

    def sample(rows: int, p_red: float, p_high: float):
        colour = np.where(rng.random(rows) < p_red, "red", "blue").astype(object)
        score = (rng.random(rows) < p_high).astype(np.float32) + rng.normal(0, 0.1, rows)
        return {"colour": colour, "x": rng.normal(size=(rows, 2))}, {"score": score}

    base = build_baseline(*sample(10_000, 0.5, 0.3))
    same = check(base, base.profile_tensors(*sample(3_000, 0.5, 0.3)))
    assert same.drift is False
    moved = check(base, base.profile_tensors(*sample(3_000, 0.7, 0.6)))
    drifted = {(f.feature.name, f.feature.source, f.method) for f in moved.features if f.drift}
    assert drifted == {("colour", "input", "linf"), ("score", "output", "ks")}


# --------------------------------------------------------------------------- data quality


def test_data_quality_gives_sagemaker_violations() -> None:
    rng = np.random.default_rng(40)
    base = build_baseline({
        "a": rng.normal(size=5_000),
        "b": rng.normal(size=5_000),
        "kind": rng.choice(["x", "y"], 5_000).astype(object),
    })  # fmt: skip
    a = rng.normal(size=2_000)
    a[:400] = np.nan  # 20% missing
    kind = rng.choice(["x", "y", "z"], 2_000).astype(object)  # z: a third unknown
    window = Profile()
    window.update({"a": a, "kind": kind, "new": rng.normal(size=2_000)})
    found = {
        (v["feature_name"], v["constraint_check_type"]) for v in check(base, window).violations
    }
    assert ("a", "completeness_check") in found
    assert ("b", "missing_column_check") in found
    assert ("new", "extra_column_check") in found
    assert ("kind", "categorical_values_check") in found


def test_strings_where_numbers_belong_are_a_data_type_violation() -> None:
    rng = np.random.default_rng(41)
    base = build_baseline({"a": rng.normal(size=2_000), "b": rng.normal(size=2_000)})
    window = Profile()
    values = rng.normal(size=1_000).astype(object)
    values[:100] = "n/a"
    window.update({"a": rng.normal(size=1_000), "b": values})
    found = {
        (v["feature_name"], v["constraint_check_type"]) for v in check(base, window).violations
    }
    assert ("b", "data_type_check") in found


def test_values_outside_the_baseline_range_are_a_violation() -> None:
    rng = np.random.default_rng(42)
    base = build_baseline({"a": rng.uniform(0, 1, 5_000)})
    window = Profile()
    window.update({"a": np.concatenate([rng.uniform(0, 1, 900), rng.uniform(5, 6, 100)])})
    found = [v for v in check(base, window).violations if v["feature_name"] == "a"]
    assert any("Out of range" in v["description"] for v in found)


# --------------------------------------------------------------------------- files


def test_baseline_files_round_trip(baseline: Baseline, tmp_path: Path) -> None:
    baseline.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "statistics.json", "constraints.json", "baseline.json",
    }  # fmt: skip
    constraints = json.loads((tmp_path / "constraints.json").read_text())
    first = constraints["features"][0]
    assert first["name"] == "x[0]" and first["completeness"] == 1.0
    assert "is_non_negative" in first["num_constraints"]
    distribution = constraints["monitoring_config"]["distribution_constraints"]
    assert distribution["comparison_method"] == "Robust"
    loaded = Baseline.load(tmp_path)
    # One window profile for both (KLL compaction is randomized: two profiles of the same
    # rows differ by the sketch error).
    window = baseline.profile_tensors({"x": tabular(50, 5_000, shift=0.2, column=5, rho=-0.8)})
    after = check(loaded, window).to_json()
    assert after == check(baseline, window).to_json()
    assert after["drift"] is True and after["multivariate"]["drift"] is True


def test_a_baseline_written_by_sagemaker_loads_leniently(
    baseline: Baseline, tmp_path: Path
) -> None:
    statistics = baseline.profile.to_statistics_json()  # type: ignore[union-attr]
    # What SageMaker's own files look like: floats for ints, keys we do not know.
    statistics["version"] = 0.0
    statistics["dataset"]["item_count"] = float(statistics["dataset"]["item_count"])
    for feature in statistics["features"]:
        common = feature["numerical_statistics"]["common"]
        common["num_present"] = float(common["num_present"])
        feature["numerical_statistics"]["unknown_key"] = {"x": 1}
    (tmp_path / "statistics.json").write_text(json.dumps(statistics))
    (tmp_path / "constraints.json").write_text(json.dumps({"version": 0.0, "features": []}))
    loaded = Baseline.load(tmp_path)
    assert loaded.rows == 20_000 and loaded.pca is None
    moved = check(loaded, loaded.profile_tensors({"x": tabular(51, 5_000, shift=0.3, column=2)}))
    assert [f.feature.name for f in moved.features if f.drift] == ["x[2]"]
    calm = check(loaded, loaded.profile_tensors({"x": tabular(52, 5_000, rho=0.8)}))
    assert calm.drift is False and calm.multivariate is None


def test_an_unreadable_baseline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"no baseline\.json or statistics\.json"):
        Baseline.load(tmp_path)
    (tmp_path / "statistics.json").write_text("{not json")
    with pytest.raises(BaselineError, match="not readable JSON"):
        Baseline.load(tmp_path)


def test_brighter_images_drift_on_their_channel_means() -> None:
    rng = np.random.default_rng(60)

    def images(rows: int, gain: float) -> np.ndarray:
        base = rng.uniform(0.2, 0.6, size=(rows, 3, 1, 1))  # per-image exposure
        return (base + rng.normal(0, 0.05, size=(rows, 3, 8, 8))) * [[[gain]], [[1]], [[1]]]

    base = build_baseline({"image": images(3_000, 1.0).astype(np.float32)})
    moved = check(base, base.profile_tensors({"image": images(1_000, 1.3).astype(np.float32)}))
    drifted = {f.feature.name for f in moved.features if f.drift}
    assert "image.c0.mean" in drifted
    assert not drifted & {"image.c1.mean", "image.c2.mean", "image.c1.std"}


def test_features_can_carry_the_models_own_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(61)
    names = {"x[0]": "alcohol", "x[1]": "acidity"}
    base = build_baseline({"x": rng.normal(size=(2_000, 2))}, names=names)
    base.save(tmp_path)
    loaded = Baseline.load(tmp_path)
    assert [f.name for f in loaded.features] == ["alcohol", "acidity"]
    window = rng.normal(size=(2_000, 2)) + np.array([0.0, 0.5])
    result = check(loaded, loaded.profile_tensors({"x": window}))
    assert [f.feature.name for f in result.features if f.drift] == ["acidity"]
    stats = json.loads((tmp_path / "statistics.json").read_text())
    assert [f["name"] for f in stats["features"]] == ["alcohol", "acidity"]


def test_the_joint_check_survives_large_offsets() -> None:
    # Timestamps, prices in cents: raw second moments would cancel the variance away.
    offset = 1e8
    base = build_baseline({"x": tabular(70, 10_000, rho=0.8) + offset})
    calm = check(base, base.profile_tensors({"x": tabular(71, 5_000, rho=0.8) + offset}))
    assert calm.multivariate is not None and calm.multivariate["drift"] is False
    flipped = check(base, base.profile_tensors({"x": tabular(72, 5_000, rho=-0.8) + offset}))
    assert flipped.multivariate is not None and flipped.multivariate["drift"] is True
