"""A drift check's results for people and for tools: SageMaker's violations.json and one
self-contained HTML page (inline CSS and SVG; no script, no fonts or styles fetched).

Both render the SUMMARY (`DriftResult.to_json()`, plus "model", "release", "window" and
"skipped" around it when the scheduled check has them). The page leads with the verdict and
the features that moved, then the score over the last checks, then one row per feature:
reference and current histograms side by side, and the distance against its threshold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from inferstack.names import REPORTS_PREFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

SUMMARY_FILE, VIOLATIONS_FILE, REPORT_FILE = "summary.json", "violations.json", "report.html"
HISTORY_CHECKS = 48  # points on the score chart
HISTORY_DAYS = 31  # how far back the chart looks
# ISO 8601 basic format: sorts as time does and needs no escaping in a key.
_KEY_TIME = "%Y%m%dT%H%M%SZ"
VIOLATION_KEYS = ("feature_name", "constraint_check_type", "description")
DRIFT_CHECK = "baseline_drift_check"
# Past this many features the page lists the rest without drawing them (size stays bounded).
MAX_DRAWN = 200
_REFERENCE, _CURRENT, _ALARM, _OK = "#8a99ad", "#e07b39", "#c62828", "#2e7d32"
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.15rem;margin-top:2rem}
.verdict{padding:1rem 1.2rem;border-radius:6px;border-left:6px solid}
.headline{font-size:1.4rem;margin:0 0 .3rem}
.drift{background:#fdecea;border-color:#c62828}.ok{background:#edf7ed;border-color:#2e7d32}
.unknown{background:#fff8e1;border-color:#f9a825}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;border-bottom:1px solid #ddd;
text-align:left;vertical-align:middle}th{background:#f5f5f5}.num{text-align:right}
tr.drifted td:first-child{font-weight:600;color:#c62828}.meta{color:#555}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
"""


_KEY = (
    '<p class="meta">distance: for numbers the largest gap between the reference and current '
    "cumulative distributions (KS D, SageMaker's L-infinity); for categories the largest "
    "change in a category's share. threshold: what chance alone can reach with these two "
    "sample sizes, this many features and the sketches' error, never below the minimum "
    "effect worth an alarm. A feature drifts when its distance exceeds its threshold; the "
    "drift score is the largest distance / threshold of the check. PSI and Wasserstein "
    "(in reference standard deviations) are shown for comparison with other tools.</p>"
)


def violations_document(summary: Mapping[str, Any]) -> dict[str, list[dict[str, str]]]:
    """violations.json in SageMaker's schema; a drifted feature the summary has no
    baseline_drift_check for gets one, worded as SageMaker's ("distance: x exceeds ...")."""
    violations = [
        {key: str(item.get(key, "")) for key in VIOLATION_KEYS}
        for item in summary.get("violations") or []
    ]
    listed = {v["feature_name"] for v in violations if v["constraint_check_type"] == DRIFT_CHECK}
    for feature in summary.get("features") or []:
        if feature.get("drift") and feature["name"] not in listed:
            violations.append(
                {
                    "feature_name": feature["name"],
                    "constraint_check_type": DRIFT_CHECK,
                    "description": (
                        f"Data distribution is different from the baseline: "
                        f"distance: {feature['distance']:.4g} exceeds threshold: "
                        f"{feature['threshold']:.4g}"
                    ),
                }
            )
    return {"violations": violations}


def drifted(summary: Mapping[str, Any]) -> list[str]:
    """The names of the features that drifted, most first (distance over threshold)."""
    moved = [f for f in summary.get("features") or [] if f.get("drift")]
    return [f["name"] for f in sorted(moved, key=_ratio, reverse=True)]


def headline(summary: Mapping[str, Any]) -> str:
    """One sentence: the verdict, as the page, the CLI and the alarm message say it."""
    if not summary.get("enough_rows", True):
        return f"Not enough data to tell: {summary.get('reason') or 'too few rows'}"
    names = drifted(summary)
    multivariate = (summary.get("multivariate") or {}).get("drift", False)
    if not summary.get("drift") and not names and not multivariate:
        return "No drift"
    parts = []
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{len(names)} feature{'s' if len(names) != 1 else ''} ({shown})")
    if multivariate:
        parts.append("the features' joint distribution")
    return "Drift in " + (" and ".join(parts) if parts else "the data")


def render_html(summary: Mapping[str, Any], history: Iterable[Mapping[str, Any]] = ()) -> str:
    """The whole report as one HTML document (open it from disk, mail it, keep it in S3)."""
    model = summary.get("model")
    title = f"Drift report{f': {model}' if model else ''}"
    body = [
        f"<h1>{escape(title)}</h1>",
        _verdict(summary),
        _history(list(history), summary),
        _features(summary.get("features") or []),
        _multivariate(summary.get("multivariate")),
        _violations(violations_document(summary)["violations"]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# --------------------------------------------------------------------------- sections


def _verdict(summary: Mapping[str, Any]) -> str:
    if not summary.get("enough_rows", True):
        css = "unknown"
    else:
        css = "drift" if summary.get("drift") else "ok"
    rows = summary.get("rows") or {}
    facts = [
        f"drift score {_number(summary.get('score'))} (drift above 1)",
        f"{rows.get('current', 0):,} current rows against {rows.get('reference', 0):,} "
        "reference rows",
    ]
    if summary.get("release"):
        facts.append(f"release {summary['release']}")
    window = summary.get("window")
    if isinstance(window, dict) and window.get("start"):
        facts.append(f"window {window['start']} to {window.get('end', '')}")
    violations = len(violations_document(summary)["violations"])
    if violations:
        facts.append(f"{violations} violation{'s' if violations != 1 else ''} (below)")
    skipped = summary.get("skipped")
    if isinstance(skipped, dict) and any(skipped.values()):
        facts.append(
            "skipped: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
        )
    return (
        f'<div class="verdict {css}"><h2 class="headline">{escape(headline(summary))}</h2>'
        f'<div class="meta">{escape(" · ".join(facts))}</div></div>'
    )


def _history(history: list[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    points = [(str(h.get("time", "")), float(h.get("score") or 0.0)) for h in history]
    if summary.get("score") is not None and summary.get("time"):
        points.append((str(summary["time"]), float(summary["score"])))
    if not points:
        return ""
    width, height, pad = 900, 160, 30
    top = max(1.5, *(score for _, score in points)) * 1.1
    step = (width - 2 * pad) / max(1, len(points) - 1)

    def y(score: float) -> float:
        return height - pad - (height - 2 * pad) * min(score, top) / top

    line = " ".join(f"{pad + i * step:.1f},{y(s):.1f}" for i, (_, s) in enumerate(points))
    dots = "".join(
        f'<circle cx="{pad + i * step:.1f}" cy="{y(s):.1f}" r="3.5" '
        f'fill="{_ALARM if s > 1 else _OK}"><title>{escape(t)}: {s:.3f}</title></circle>'
        for i, (t, s) in enumerate(points)
    )
    return (
        "<h2>Drift score over the last checks</h2>"
        f'<svg class="history" width="{width}" height="{height}" role="img" '
        f'aria-label="drift score over the last {len(points)} checks">'
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(1.0):.1f}" y2="{y(1.0):.1f}" '
        f'stroke="{_ALARM}" stroke-dasharray="4 3"/>'
        f'<text x="{width - pad}" y="{y(1.0) - 4:.1f}" text-anchor="end" font-size="11" '
        f'fill="{_ALARM}">drift (1.0)</text>'
        f'<polyline points="{line}" fill="none" stroke="#555"/>{dots}'
        f'<text x="{pad}" y="{height - 8}" font-size="11">{escape(points[0][0])}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">'
        f"{escape(points[-1][0])}</text></svg>"
    )


def _features(features: Sequence[Mapping[str, Any]]) -> str:
    if not features:
        return ""
    ordered = sorted(features, key=lambda f: (not f.get("drift"), -_ratio(f)))
    rows = []
    for index, feature in enumerate(ordered):
        drawn = index < MAX_DRAWN
        rows.append(
            f'<tr class="{"drifted" if feature.get("drift") else ""}">'
            f"<td>{escape(str(feature['name']))}</td>"
            f"<td>{escape(str(feature.get('source', 'input')))}</td>"
            f"<td>{escape(str(feature.get('method', '')))}</td>"
            f'<td class="num">{_number(feature.get("distance"))}</td>'
            f'<td class="num">{_number(feature.get("threshold"))}</td>'
            f"<td>{_gauge(feature)}</td>"
            f'<td class="num">{_number(feature.get("psi"))}</td>'
            f'<td class="num">{_number(feature.get("wasserstein"))}</td>'
            f"<td>{_histogram(feature.get('histogram')) if drawn else ''}</td></tr>"
        )
    more = len(ordered) - MAX_DRAWN
    note = f'<p class="meta">{more} more features are listed without histograms.</p>'
    return (
        "<h2>Features</h2>"
        f'<p class="legend">histograms:<span style="background:{_REFERENCE}"></span>reference'
        f'<span style="background:{_CURRENT}"></span>current</p>'
        "<table><tr><th>feature</th><th>source</th><th>method</th><th>distance</th>"
        "<th>threshold</th><th>distance / threshold</th><th>PSI</th>"
        "<th>Wasserstein / std</th><th>reference vs current</th></tr>"
        f"{''.join(rows)}</table>{note if more > 0 else ''}{_KEY}"
    )


def _gauge(feature: Mapping[str, Any]) -> str:
    """A bar of distance / threshold on a 0..2 scale, the threshold marked at the middle."""
    ratio = _ratio(feature)
    width = 120
    filled = width * min(ratio, 2.0) / 2
    colour = _ALARM if feature.get("drift") else _OK
    return (
        f'<svg width="{width}" height="14" role="img" aria-label="{ratio:.2f} of the threshold">'
        f'<rect width="{width}" height="14" fill="#eee"/>'
        f'<rect class="gauge" width="{filled:.1f}" height="14" fill="{colour}"/>'
        f'<line x1="{width / 2}" x2="{width / 2}" y1="0" y2="14" stroke="#222"/></svg> '
        f"{ratio:.2f}"
    )


def _histogram(histogram: Mapping[str, Any] | None) -> str:
    """Reference and current fractions as paired bars (bins or categories)."""
    if not histogram:
        return ""
    reference = [float(v) for v in histogram.get("reference") or []]
    current = [float(v) for v in histogram.get("current") or []]
    if "categories" in histogram:
        labels = [str(c) for c in histogram["categories"]]
    else:
        edges = [float(e) for e in histogram.get("edges") or []]
        labels = [f"{a:.4g} to {b:.4g}" for a, b in pairwise(edges)]
    bins = max(len(reference), len(current))
    if not bins:
        return ""
    width, height = 240, 60
    slot = width / bins
    tallest = max([*reference, *current, 1e-12])
    bars = []
    for i in range(bins):
        label = labels[i] if i < len(labels) else str(i)
        for offset, values, colour, what in (
            (0.0, reference, _REFERENCE, "reference"),
            (0.5, current, _CURRENT, "current"),
        ):
            value = values[i] if i < len(values) else 0.0
            bar = (height - 2) * value / tallest
            bars.append(
                f'<rect class="{what}" x="{i * slot + offset * slot * 0.9:.1f}" '
                f'y="{height - bar:.1f}" width="{slot * 0.45:.1f}" height="{bar:.1f}" '
                f'fill="{colour}"><title>{escape(label)}: {what} {value:.1%}</title></rect>'
            )
    return (
        f'<svg class="histogram" width="{width}" height="{height}" role="img" '
        f'aria-label="reference and current distribution">{"".join(bars)}</svg>'
    )


def _multivariate(result: Mapping[str, Any] | None) -> str:
    if not result:
        return ""
    verdict = "drift" if result.get("drift") else "no drift"
    return (
        "<h2>Joint distribution</h2>"
        f"<p>{escape(str(result.get('method', '')).replace('_', ' '))} with "
        f"{result.get('components', '?')} components: error {_number(result.get('error'))} "
        f"against threshold {_number(result.get('threshold'))}: <strong>{verdict}</strong>. "
        "This catches changes in how features move together (a correlation that flips) "
        "that no single feature shows.</p>"
    )


def _violations(violations: Sequence[Mapping[str, str]]) -> str:
    if not violations:
        return "<h2>Violations</h2><p>None.</p>"
    rows = "".join(
        f"<tr><td>{escape(v['feature_name'])}</td><td>{escape(v['constraint_check_type'])}</td>"
        f"<td>{escape(v['description'])}</td></tr>"
        for v in violations
    )
    return (
        "<h2>Violations</h2><table><tr><th>feature</th><th>check</th><th>description</th>"
        f"</tr>{rows}</table>"
    )


def _ratio(feature: Mapping[str, Any]) -> float:
    threshold = feature.get("threshold") or 0.0
    distance = feature.get("distance") or 0.0
    return float(distance) / float(threshold) if threshold else 0.0


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


# --------------------------------------------------------------------------- S3


def report_prefix(model: str, time: datetime) -> str:
    """drift-reports/<model>/<time>/: one check's files, in time order under the model."""
    return f"{REPORTS_PREFIX}{model}/{time.astimezone(UTC).strftime(_KEY_TIME)}/"


def write_report(
    s3: Any,
    bucket: str,
    model: str,
    summary: dict[str, Any],
    *,
    time: datetime,
    history: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Store summary.json, violations.json and report.html; returns the report's S3 URI
    (what the alarm topic's message points to)."""
    prefix = report_prefix(model, time)
    summary = {**summary, "model": model, "time": _iso(time)}
    files = {
        SUMMARY_FILE: (json.dumps(summary).encode(), "application/json"),
        VIOLATIONS_FILE: (json.dumps(violations_document(summary)).encode(), "application/json"),
        REPORT_FILE: (render_html(summary, history).encode(), "text/html; charset=utf-8"),
    }
    for name, (body, content_type) in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType=content_type)
    return f"s3://{bucket}/{prefix}{REPORT_FILE}"


def score_history(
    s3: Any, bucket: str, model: str, *, before: datetime, limit: int = HISTORY_CHECKS
) -> list[dict[str, Any]]:
    """The last checks' scores ({"time", "score"}), oldest first, from their summary.json."""
    # Keys list in UTF-8 binary order, from StartAfter on
    # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html): the key's
    # time format sorts as time does, so only the last HISTORY_DAYS are listed.
    root = f"{REPORTS_PREFIX}{model}/"
    start = report_prefix(model, before - timedelta(days=HISTORY_DAYS))
    end = report_prefix(model, before)
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=root, StartAfter=start
        )
        for item in page.get("Contents", [])
        if item["Key"].endswith(f"/{SUMMARY_FILE}") and item["Key"] < end
    ]
    history = []
    for key in keys[-limit:]:
        try:
            doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            history.append({"time": str(doc["time"]), "score": float(doc["score"])})
        except (KeyError, TypeError, ValueError):
            continue  # a summary someone edited by hand: leave it off the chart
    return history


def _iso(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
