"""The drift report: SageMaker's violations.json and a self-contained HTML page rendered from
a check's SUMMARY (the shape `DriftResult.to_json()` returns)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from inferstack.drift.report import (
    headline,
    render_html,
    score_history,
    violations_document,
    write_report,
)

from .deployed import use_fake_aws

if TYPE_CHECKING:
    from collections.abc import Iterator

# AWS's own visualisation code reads the distance back out of the description this way.
SAGEMAKER_DISTANCE = re.compile(r"distance: ([0-9.e+-]+) exceeds")


def numeric(name: str, distance: float, threshold: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "numeric",
        "source": "input",
        "method": "ks",
        "distance": distance,
        "threshold": threshold,
        "drift": distance > threshold,
        "psi": 0.31 if distance > threshold else 0.004,
        "wasserstein": 0.2 if distance > threshold else 0.01,
        "histogram": {
            "edges": [0.0, 1.0, 2.0, 3.0, 4.0],
            "reference": [0.1, 0.4, 0.4, 0.1],
            "current": [0.05, 0.15, 0.4, 0.4] if distance > threshold else [0.1, 0.4, 0.4, 0.1],
        },
        **extra,
    }


def summary(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": "wine",
        "release": "r-0007",
        "time": "2026-03-01T11:00:00Z",
        "window": {"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T11:00:00Z"},
        "skipped": {"bad_lines": 3, "undecodable": 0},
        "drift": True,
        "score": 2.4,
        "enough_rows": True,
        "reason": None,
        "rows": {"reference": 5000, "current": 1200},
        "features": [
            numeric("alcohol", 0.012, 0.05),
            numeric("acidity", 0.12, 0.05),
            {
                "name": "region",
                "kind": "categorical",
                "source": "input",
                "method": "linf",
                "distance": 0.02,
                "threshold": 0.08,
                "drift": False,
                "psi": None,
                "wasserstein": None,
                "histogram": {
                    "categories": ["north", "south"],
                    "reference": [0.5, 0.5],
                    "current": [0.52, 0.48],
                },
            },
            {**numeric("label", 0.01, 0.05), "source": "output"},
        ],
        "multivariate": {
            "method": "pca_reconstruction",
            "error": 0.8,
            "threshold": 1.1,
            "drift": False,
            "components": 2,
        },
        "violations": [
            {
                "feature_name": "region",
                "constraint_check_type": "categorical_values_check",
                "description": "1.2% of values are not in the baseline's domain",
            }
        ],
    }
    doc.update(changes)
    return doc


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def having(self, tag: str, css: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.found if t == tag and (css is None or a.get("class") == css)]


def parse(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


def test_violations_follow_sagemakers_schema_and_wording() -> None:
    document = violations_document(summary())
    assert all(
        set(v) == {"feature_name", "constraint_check_type", "description"}
        for v in document["violations"]
    )
    drift = [
        v for v in document["violations"] if v["constraint_check_type"] == "baseline_drift_check"
    ]
    assert [v["feature_name"] for v in drift] == ["acidity"]
    assert float(SAGEMAKER_DISTANCE.search(drift[0]["description"]).group(1)) == pytest.approx(0.12)


def test_a_drift_violation_already_in_the_summary_is_not_repeated() -> None:
    given = {
        "feature_name": "acidity",
        "constraint_check_type": "baseline_drift_check",
        "description": "distance: 0.12 exceeds threshold: 0.05",
    }
    document = violations_document(summary(violations=[given]))
    assert document == {"violations": [given]}


def test_the_page_is_self_contained() -> None:
    page = render_html(summary(), [{"time": "2026-03-01T09:00:00Z", "score": 0.4}])
    elements = parse(page)
    assert not elements.having("script") and not elements.having("link")
    assert not elements.having("img") and not elements.having("iframe")
    assert "http" not in page and "url(" not in page and "@import" not in page
    assert page.startswith("<!DOCTYPE html>")


def test_the_headline_names_the_drifted_features_first() -> None:
    page = render_html(summary())
    assert "Drift in 1 feature (acidity)" in page
    rows = re.findall(r'<tr class="(drifted|)"><td>([^<]+)</td>', page)
    assert rows[0] == ("drifted", "acidity")
    assert {name for _, name in rows} == {"acidity", "alcohol", "region", "label"}


def test_each_feature_draws_reference_and_current_bars() -> None:
    elements = parse(render_html(summary()))
    assert len(elements.having("svg", "histogram")) == 4
    reference = [float(a["height"] or 0) for a in elements.having("rect", "reference")]
    current = [float(a["height"] or 0) for a in elements.having("rect", "current")]
    # acidity, the drifted one (drawn first): reference 0.1 0.4 0.4 0.1, current
    # 0.05 0.15 0.4 0.4, on one scale (the tallest bar is the full height; 0.1 px steps).
    assert reference[:4] == pytest.approx([14.5, 58.0, 58.0, 14.5], abs=0.06)
    assert current[:4] == pytest.approx([7.25, 21.75, 58.0, 58.0], abs=0.06)


def test_distance_against_threshold_gauges_mark_the_drifted_feature() -> None:
    gauges = parse(render_html(summary())).having("rect", "gauge")
    widths = [float(g["width"] or 0) for g in gauges]
    fills = [g["fill"] for g in gauges]
    # acidity at 2.4x its threshold fills the gauge (capped at 2x) in red.
    assert widths[0] == pytest.approx(120.0) and fills[0] == "#c62828"
    assert all(fill == "#2e7d32" for fill in fills[1:])


def test_the_score_history_is_drawn_with_the_current_check() -> None:
    history = [
        {"time": f"2026-03-01T0{h}:00:00Z", "score": s} for h, s in ((7, 0.3), (8, 0.5), (9, 1.3))
    ]
    elements = parse(render_html(summary(), history))
    dots = elements.having("circle")
    assert len(dots) == 4  # three past checks and this one
    assert [d["fill"] for d in dots] == ["#2e7d32", "#2e7d32", "#c62828", "#c62828"]


def test_too_few_rows_says_so_and_claims_nothing() -> None:
    short = summary(
        drift=False,
        enough_rows=False,
        reason="40 rows in the window; at least 100 are needed",
        features=[],
        multivariate=None,
        violations=[],
    )
    assert headline(short).startswith("Not enough data to tell: 40 rows")
    page = render_html(short)
    assert 'class="verdict unknown"' in page and "Drift in" not in page


def test_no_drift_and_names_are_escaped() -> None:
    calm = summary(
        drift=False, score=0.3, features=[numeric("<b>pH</b>", 0.01, 0.05)], violations=[]
    )
    page = render_html(calm)
    assert "No drift" in page and 'class="verdict ok"' in page
    assert "&lt;b&gt;pH&lt;/b&gt;" in page and "<b>pH" not in page


def test_many_features_stay_bounded() -> None:
    many = summary(features=[numeric(f"f{i}", 0.01, 0.05) for i in range(250)])
    page = render_html(many)
    assert len(parse(page).having("svg", "histogram")) == 200
    assert "50 more features are listed without histograms" in page


# --------------------------------------------------------------------------- S3


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        yield client


def test_a_check_is_stored_under_drift_reports_model_time(s3: Any) -> None:
    when = datetime(2026, 3, 1, 11, 0, 5, tzinfo=UTC)
    uri = write_report(s3, "models", "wine", summary(), time=when)
    prefix = "drift-reports/wine/20260301T110005Z/"
    assert uri == f"s3://models/{prefix}report.html"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"])
    assert keys == [prefix + name for name in ("report.html", "summary.json", "violations.json")]
    page = s3.get_object(Bucket="models", Key=prefix + "report.html")
    assert page["ContentType"].startswith("text/html") and b"acidity" in page["Body"].read()
    stored = json.loads(
        s3.get_object(Bucket="models", Key=prefix + "violations.json")["Body"].read()
    )
    assert stored == violations_document(summary())


def test_the_score_history_comes_from_earlier_checks(s3: Any) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    write_report(s3, "models", "wine", summary(score=0.1), time=start - timedelta(days=40))
    for hour in range(6):
        write_report(
            s3, "models", "wine", summary(score=hour / 4), time=start + timedelta(hours=hour)
        )
    write_report(s3, "models", "other", summary(score=9.0), time=start)
    history = score_history(s3, "models", "wine", before=start + timedelta(hours=5), limit=4)
    # the four checks before this one (not this one, not the 40-day-old one, not "other")
    assert [h["score"] for h in history] == [0.25, 0.5, 0.75, 1.0]
    assert history[0]["time"] == "2026-03-01T01:00:00Z"
