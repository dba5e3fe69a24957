"""The whole drift chain on moto, one link after another, as an operator meets it.

A live release of the wine model with its baseline (built from the demo's reference sample,
as the promoter builds it) -> real inferences through the real Lambda handler with capture
on -> its stdout lines through moto's CloudWatch Logs, subscription filter and Firehose into
the model bucket -> the object as the deployed Firehose writes it, under capture/<model>/
yyyy/MM/dd/HH/ -> the drift_check function's handler on the schedule's event -> the report
under drift-reports/<model>/<time>/, the metrics, and the alarm topic's message.

moto 5.2.5 delivers a subscription's log events to Firehose and S3 but applies neither the
filter pattern nor Firehose's processors (tests/functional/test_capture.py measured it): the
test applies those two documented steps to moto's delivered batch and puts the result where
the deployed stream writes it. Everything else is the real code.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import numpy as np
import pytest

from inferstack.names import ENV_CAPTURE_RATE, live_pointer_key, manifest_key
from inferstack.release.baselines import store_baseline
from infra.config import Drift
from infra.constructs.capture import FILE_EXTENSION, capture_key_prefix
from infra.constructs.drift import window_minutes
from tests.functional.conftest import DEMO_DIR, DEMO_MODEL, FakeContext
from tests.functional.test_capture import (
    capture_lines,
    deliver_through_logs_and_firehose,
    handler_with,
    infer_json,
)
from tests.functional.test_drift_scheduled import BUCKET, MODEL, aws, emf, load_handler, messages

__all__ = ["aws"]  # the moto fixture (S3, SNS -> SQS inbox) of test_drift_scheduled

REGION = "us-east-1"
LOG_GROUP = f"/aws/lambda/inferstack-dev-{MODEL}"
STREAM = f"inferstack-dev-capture-{MODEL}"
BATCH = 7  # rows per request: 19 requests carry the 133-row reference sample
DRIFTED = 9  # the feature the drifted traffic moves ("features[9]", colour intensity)
SHIFT_SDS = 6.0


def reference_sample() -> np.ndarray:
    sample: np.ndarray = np.load(DEMO_DIR / "reference_sample.npy").astype(np.float32)
    return sample


def make_release(s3: Any) -> dict[str, Any]:
    """Release 1 of the wine model live, its manifest naming the baseline the promoter
    computes from the reference sample (inputs and the model's outputs on them)."""
    entry = store_baseline(
        s3,
        BUCKET,
        model=MODEL,
        content="e2e",
        model_path=DEMO_MODEL,
        reference={"features": reference_sample()},
    )
    manifest = {"model": MODEL, "release": "1", "baseline": entry}
    s3.put_object(Bucket=BUCKET, Key=manifest_key(MODEL, "1"), Body=json.dumps(manifest))
    pointer = {"model": MODEL, "release": "1"}
    s3.put_object(Bucket=BUCKET, Key=live_pointer_key(MODEL), Body=json.dumps(pointer))
    return entry


def serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rows: np.ndarray
) -> list[str]:
    """`rows` through the real inference handler, BATCH a request, every request sampled;
    the function's stdout lines (records, EMF and logs, as CloudWatch Logs receives them)."""
    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    capsys.readouterr()
    for start in range(0, len(rows), BATCH):
        infer_json(handler, rows[start : start + BATCH])
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def through_logs_and_firehose(lines: list[str]) -> str:
    """The lines into the log group; what Firehose delivers; the object, transformed as the
    deployed stream transforms it, put where that stream writes it. Returns its key."""
    s3 = boto3.client("s3", region_name=REGION)
    raw, delivered = deliver_through_logs_and_firehose(
        lines,
        bucket=BUCKET,
        prefix=capture_key_prefix(MODEL).partition("!")[0],
        log_group=LOG_GROUP,
        region=REGION,
    )
    s3.delete_object(Bucket=BUCKET, Key=raw)  # moto's unprocessed batch
    # Firehose names the object <stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid> + extension
    # (https://docs.aws.amazon.com/firehose/latest/dev/s3-object-name.html), under the
    # arrival hour (https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html), gzip.
    arrived = datetime.now(UTC)
    prefix = capture_key_prefix(MODEL).replace(
        "!{timestamp:yyyy/MM/dd/HH}", arrived.strftime("%Y/%m/%d/%H")
    )
    key = (
        f"{prefix}{STREAM}-1-{arrived.strftime('%Y-%m-%d-%H-%M-%S')}-{uuid.uuid4()}{FILE_EXTENSION}"
    )
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(delivered.encode()))
    return key


def scheduled_check() -> dict[str, Any]:
    """The drift_check function on the event its schedule sends (infra/constructs/drift.py)
    with the configuration's defaults."""
    drift = Drift()
    event = {
        "model": MODEL,
        "threshold": drift.threshold,
        "window_minutes": window_minutes(drift.schedule),
    }
    outcome: dict[str, Any] = load_handler().handler(event, FakeContext())
    return outcome


@pytest.mark.parametrize("drifted", [False, True], ids=["reference-traffic", "shifted-feature"])
def test_served_traffic_is_captured_checked_reported_and_alarmed_on_drift_only(
    aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    drifted: bool,
) -> None:
    s3 = aws["s3"]
    entry = make_release(s3)
    sample = reference_sample()
    assert entry["rows"] == len(sample)
    traffic = sample.copy()
    if drifted:
        traffic[:, DRIFTED] += SHIFT_SDS * sample[:, DRIFTED].std()
    requests = -(-len(traffic) // BATCH)

    lines = serve(monkeypatch, capsys, traffic)
    records = capture_lines("\n".join(lines))
    assert len(records) == requests  # every request captured, one record each
    key = through_logs_and_firehose(lines)
    assert re.fullmatch(
        rf"capture/{MODEL}/\d{{4}}/\d\d/\d\d/\d\d/{STREAM}-1-[\w-]+\.jsonl\.gz", key
    )

    capsys.readouterr()
    outcome = scheduled_check()
    out = capsys.readouterr().out

    # Every served row reached the check: none lost on the way, none skipped by the reader.
    assert outcome["rows"] == {"reference": len(sample), "current": len(traffic)}
    assert outcome["status"] == ("drift" if drifted else "checked")
    report = outcome["report"]
    assert report.startswith(f"s3://{BUCKET}/drift-reports/{MODEL}/")
    folder = report.removeprefix(f"s3://{BUCKET}/").rpartition("/")[0]
    assert folder.count("/") == 2  # drift-reports/<model>/<time>

    def fetched(name: str) -> bytes:
        return bytes(s3.get_object(Bucket=BUCKET, Key=f"{folder}/{name}")["Body"].read())

    summary = json.loads(fetched("summary.json"))
    assert summary["drift"] is drifted and summary["enough_rows"] is True
    skipped = summary["skipped"]
    assert (skipped["files"], skipped["records"]) == (1, requests)
    assert skipped["bad_lines"] == skipped["undecodable"] == skipped["mismatched"] == 0
    violations = json.loads(fetched("violations.json"))
    assert set(violations) == {"violations"}
    for violation in violations["violations"]:
        assert set(violation) == {"feature_name", "constraint_check_type", "description"}
    drift_violations = {
        v["feature_name"]: v["description"]
        for v in violations["violations"]
        if v["constraint_check_type"] == "baseline_drift_check"
    }
    html = fetched("report.html").decode()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html
    assert "<script" not in html.lower()

    (document,) = [d for d in emf(out) if "DriftScore" in d]
    assert document["DriftScore"] == [pytest.approx(outcome["score"])]
    assert document["DriftedFeatures"] == [float(len(outcome["drifted_features"]))]
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == {"service", "environment", "model"}
    assert document["model"] == MODEL

    inbox = messages(aws)
    feature = f"features[{DRIFTED}]"
    if drifted:
        assert outcome["score"] > 1
        assert feature in outcome["drifted_features"]
        # SageMaker's wording, which AWS's own visualization code parses.
        assert re.search(r"distance: [\d.]+ exceeds threshold: [\d.]+", drift_violations[feature])
        assert feature in html
        (message,) = inbox
        assert report in message and feature in message
    else:
        # The traffic is the reference sample itself: nothing moved, nothing to tell.
        assert outcome["score"] < 0.5
        assert outcome["drifted_features"] == [] and drift_violations == {}
        assert inbox == []
