"""The scheduled drift check of one model: the live release's baseline against the window's
captured traffic, a report in S3, metrics, and a message when it drifted.

    run_scheduled_check(s3, bucket=..., model=..., now=..., window=...) -> outcome

1. The live pointer names the release; its manifest names the baseline (computed from the
   release's reference sample when the release was made). No release, or a release without
   a reference sample: the outcome says so, and no score is published (a missing score is
   not "no drift": the alarm treats missing data as missing).
2. The window's capture objects (capture/<model>/..., the hours of the window with an hour of
   slack) are streamed; records are kept on their inferenceTime, profiled in batches and
   merged: the window is never held in memory whole.
3. The comparison (inferstack.drift.compare) -> summary.json, violations.json and report.html
   under drift-reports/<model>/<time>/.
4. DriftScore and DriftedFeatures (when the window had enough rows to decide), and, when the
   score is over the model's alarm level (its drift threshold, 1.0 by default: the check
   found drift), one message to the alarm topic with the report's location (an alarm
   cannot carry it).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstack.drift.baseline import BASELINE, CONSTRAINTS, STATISTICS, Baseline
from inferstack.drift.capture import CaptureStats, s3_capture_objects
from inferstack.drift.compare import check
from inferstack.drift.data import capture_batches
from inferstack.drift.report import headline, score_history, write_report
from inferstack.names import CAPTURE_PREFIX, live_pointer_key, manifest_key

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta

logger = logging.getLogger(__name__)

BASELINE_FILES = (STATISTICS, CONSTRAINTS, BASELINE)


def run_scheduled_check(
    s3: Any,
    *,
    bucket: str,
    model: str,
    now: datetime,
    window: timedelta,
    alarm_level: float = 1.0,
    publish_metrics: Callable[[str, float, int], None] = lambda model, score, drifted: None,
    notify: Callable[[str, str], None] = lambda subject, message: None,
) -> dict[str, Any]:
    """Check `model` over [now - window, now); returns what happened (the function's answer).

    `alarm_level`: the drift score above which the alarm topic is told (the model's drift
    threshold, as its alarm's); `publish_metrics(model, score, drifted_features)`;
    `notify(subject, message)`: the alarm topic."""
    start = now - window
    release = _live_release(s3, bucket, model)
    if release is None:
        return {"status": "no-release", "model": model}
    manifest = _json(s3, bucket, manifest_key(model, release))
    location = (manifest or {}).get("baseline")
    if not location:
        reason = "the release has no reference sample, so no baseline: nothing to compare with"
        logger.info("drift check of %s release %s: %s", model, release, reason)
        return {"status": "no-baseline", "model": model, "release": release, "reason": reason}

    baseline = _load_baseline(s3, bucket, str(location["prefix"]))
    stats = CaptureStats()
    objects = s3_capture_objects(s3, bucket, f"{CAPTURE_PREFIX}{model}/", start, now)
    profile = baseline.new_profile()
    for batch in capture_batches(objects, stats=stats, start=start, end=now):
        profile.merge(baseline.profile_tensors(batch.inputs, batch.outputs or None))

    summary = check(baseline, profile).to_json()
    summary.update(
        release=release,
        window={"start": start.isoformat(), "end": now.isoformat()},
        skipped={**stats.as_dict(), "problems": stats.problems},
    )
    history = score_history(s3, bucket, model, before=now)
    report = write_report(s3, bucket, model, summary, time=now, history=history)
    drifted = [f["name"] for f in summary["features"] if f["drift"]]
    if summary["enough_rows"]:
        publish_metrics(model, float(summary["score"]), len(drifted))
    if summary["enough_rows"] and summary["score"] > alarm_level:
        notify(
            f"InferStack drift: {model} release {release}"[:100],  # SNS subjects: 100 chars
            f"{headline(summary)}\nScore {summary['score']:.2f} (drift above 1).\n"
            f"Window {start.isoformat()} to {now.isoformat()}, {summary['rows']['current']} rows.\n"
            f"Report: {report}",
        )
    return {
        "status": "drift"
        if summary["drift"]
        else "checked"
        if summary["enough_rows"]
        else "too-few-rows",
        "model": model,
        "release": release,
        "score": summary["score"],
        "drifted_features": drifted,
        "rows": summary["rows"],
        "reason": summary.get("reason"),
        "report": report,
    }


def _status(summary: dict[str, Any]) -> str:
    if summary["drift"]:
        return "drift"
    return "checked" if summary["enough_rows"] else "too-few-rows"


def _live_release(s3: Any, bucket: str, model: str) -> str | None:
    pointer = _json(s3, bucket, live_pointer_key(model))
    return str(pointer["release"]) if pointer and pointer.get("release") else None


def _read(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key."""
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def _json(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    body = _read(s3, bucket, key)
    return None if body is None else dict(json.loads(body))


def _load_baseline(s3: Any, bucket: str, prefix: str) -> Baseline:
    with tempfile.TemporaryDirectory(prefix="inferstack-baseline-") as work:
        for name in BASELINE_FILES:
            body = _read(s3, bucket, prefix + name)
            if body is None and name == BASELINE:
                continue  # SageMaker's statistics/constraints alone are a baseline too
            if body is None:
                raise FileNotFoundError(f"s3://{bucket}/{prefix}{name}: the baseline is incomplete")
            (Path(work) / name).write_bytes(body)
        return Baseline.load(work)
