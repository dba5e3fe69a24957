"""The scheduled drift check end to end on moto: the live release's baseline, the window's
captured traffic in S3, the report, the metrics and the alarm topic's message.

The drift function's handler runs in-process (moto never runs a function's code) with real
boto3 clients against moto's S3 and SNS; the topic's message is read from an SQS queue
subscribed to it, as an operator's e-mail subscription would receive it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from inferstack.drift.baseline import build_baseline
from inferstack.names import (
    ENV_ALARM_TOPIC_ARN,
    ENV_ENVIRONMENT,
    ENV_MODEL_BUCKET,
    live_pointer_key,
    manifest_key,
)
from tests.functional.conftest import FakeContext
from tests.functional.deployed import use_fake_aws, versioned_bucket
from tests.functional.drift_capture_records import json_record

if TYPE_CHECKING:
    from collections.abc import Iterator

BUCKET = "inferstack-dev-models"
MODEL = "wine"
NOW = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
HANDLER = Path(__file__).resolve().parents[2] / "functions" / "drift_check" / "handler.py"
ROWS = 2000


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        s3, sns, sqs = boto3.client("s3"), boto3.client("sns"), boto3.client("sqs")
        versioned_bucket(s3, BUCKET)
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        monkeypatch.setenv(ENV_MODEL_BUCKET, BUCKET)
        monkeypatch.setenv(ENV_ALARM_TOPIC_ARN, topic)
        monkeypatch.setenv(ENV_ENVIRONMENT, "dev")
        yield {"s3": s3, "sqs": sqs, "queue": queue}


def load_handler() -> Any:
    spec = importlib.util.spec_from_file_location("drift_check_handler", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def release_with_baseline(s3: Any, tmp_path: Path, reference: np.ndarray | None) -> None:
    """Release 1 live; its manifest names a baseline built from `reference` (or none)."""
    location = None
    if reference is not None:
        build_baseline({"x": reference}).save(tmp_path / "baseline")
        prefix = f"baselines/{MODEL}/abc123/"
        for path in (tmp_path / "baseline").iterdir():
            s3.put_object(Bucket=BUCKET, Key=prefix + path.name, Body=path.read_bytes())
        location = {"prefix": prefix}
    manifest = {"model": MODEL, "release": "1", "baseline": location}
    s3.put_object(Bucket=BUCKET, Key=manifest_key(MODEL, "1"), Body=json.dumps(manifest))
    s3.put_object(
        Bucket=BUCKET,
        Key=live_pointer_key(MODEL),
        Body=json.dumps({"model": MODEL, "release": "1"}),
    )


def capture(s3: Any, rows: np.ndarray, *, hour: datetime, minutes_before: int = 30) -> None:
    """One capture object: one record per row, from `minutes_before` minutes before `hour`
    on, a second apart (at most 25 minutes), in the prefix of the hour it starts in."""
    start = hour - timedelta(minutes=minutes_before)
    lines = [
        json_record((start + timedelta(seconds=i % 1500)).strftime("%Y-%m-%dT%H:%M:%SZ"), row[None])
        for i, row in enumerate(rows)
    ]
    key_hour = start.strftime("%Y/%m/%d/%H")
    s3.put_object(
        Bucket=BUCKET,
        Key=f"capture/{MODEL}/{key_hour}/00-00-000-{len(rows)}.jsonl",
        Body="\n".join(lines).encode(),
    )


def messages(aws: dict[str, Any]) -> list[str]:
    got = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10)
    return [m["Body"] for m in got.get("Messages", [])]


def emf(captured: str) -> list[dict[str, Any]]:
    documents = []
    for line in captured.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def run(**event: Any) -> dict[str, Any]:
    result: dict[str, Any] = load_handler().handler(
        {"model": MODEL, "window_minutes": 60, **event}, FakeContext()
    )
    return result


def check_now(aws: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The scheduled check over the hour before NOW, wired as the handler wires it (its
    metrics and the alarm topic's notifier)."""
    handler = load_handler()
    wiring: dict[str, Any] = {
        "bucket": BUCKET,
        "model": MODEL,
        "now": NOW,
        "window": timedelta(hours=1),
        "publish_metrics": handler.publish_metrics,
        "notify": handler.notifier(boto3.client("sns"), os.environ[ENV_ALARM_TOPIC_ARN]),
    }
    outcome: dict[str, Any] = handler.run_scheduled_check(aws["s3"], **{**wiring, **overrides})
    return outcome


def test_a_shifted_window_is_reported_alarmed_and_scored(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    release_with_baseline(aws["s3"], tmp_path, rng.normal(size=(ROWS, 4)).astype(np.float32))
    shifted = rng.normal(size=(ROWS, 4)).astype(np.float32)
    shifted[:, 2] += 1.0
    capture(aws["s3"], shifted, hour=NOW)
    # Out of the window (an hour before it) though in a prefix it lists: filtered on time.
    capture(aws["s3"], rng.normal(size=(50, 4)).astype(np.float32), hour=NOW, minutes_before=90)

    outcome = check_now(aws)

    assert outcome["status"] == "drift"
    assert outcome["drifted_features"] == ["x[2]"]
    assert outcome["rows"] == {"reference": ROWS, "current": ROWS}
    report = outcome["report"]
    assert report.startswith(f"s3://{BUCKET}/drift-reports/{MODEL}/20260301T130000Z/")
    prefix = report.removeprefix(f"s3://{BUCKET}/").rpartition("/")[0]
    summary = json.loads(
        aws["s3"].get_object(Bucket=BUCKET, Key=f"{prefix}/summary.json")["Body"].read()
    )
    assert summary["skipped"]["outside_window"] == 50
    violations = json.loads(
        aws["s3"].get_object(Bucket=BUCKET, Key=f"{prefix}/violations.json")["Body"].read()
    )["violations"]
    assert {"x[2]"} == {
        v["feature_name"]
        for v in violations
        if v["constraint_check_type"] == "baseline_drift_check"
    }
    html = aws["s3"].get_object(Bucket=BUCKET, Key=f"{prefix}/report.html")["Body"].read()
    assert b"<svg" in html and b"x[2]" in html

    (message,) = messages(aws)
    assert report in message and "x[2]" in message

    (document,) = [d for d in emf(capsys.readouterr().out) if "DriftScore" in d]
    assert document["DriftScore"] == [pytest.approx(outcome["score"])]
    assert document["DriftedFeatures"] == [1.0]
    assert outcome["score"] > 1
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == {"service", "environment", "model"}
    assert (document["model"], document["environment"]) == (MODEL, "dev")


def test_an_unchanged_window_is_scored_without_a_message(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    release_with_baseline(aws["s3"], tmp_path, rng.normal(size=(ROWS, 4)).astype(np.float32))
    capture(aws["s3"], rng.normal(size=(ROWS, 4)).astype(np.float32), hour=NOW)
    outcome = check_now(aws)
    assert outcome["status"] == "checked"
    assert outcome["score"] < 1 and outcome["drifted_features"] == []
    assert messages(aws) == []
    (document,) = [d for d in emf(capsys.readouterr().out) if "DriftScore" in d]
    assert document["DriftedFeatures"] == [0.0]


def test_a_window_with_too_few_rows_says_so_and_publishes_no_score(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    release_with_baseline(aws["s3"], tmp_path, rng.normal(size=(ROWS, 4)).astype(np.float32))
    capture(aws["s3"], rng.normal(size=(3, 4)).astype(np.float32) + 5, hour=NOW)
    outcome = check_now(aws)
    assert outcome["status"] == "too-few-rows"
    assert "rows" in outcome["reason"]
    assert not [d for d in emf(capsys.readouterr().out) if "DriftScore" in d]
    assert messages(aws) == []


def test_a_release_without_a_reference_sample_has_no_baseline_to_check(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    release_with_baseline(aws["s3"], tmp_path, None)
    assert run()["status"] == "no-baseline"


def test_a_model_with_no_release_yet_is_not_checked(aws: dict[str, Any]) -> None:
    assert run() == {"status": "no-release", "model": MODEL}


@pytest.mark.parametrize(
    ("event", "reason"),
    [({"model": "a/b"}, "'model'"), ({"model": MODEL, "window_minutes": "soon"}, "window_minutes")],
)
def test_bad_schedule_input_is_refused(
    aws: dict[str, Any], event: dict[str, Any], reason: str
) -> None:
    result = load_handler().handler(event, FakeContext())
    assert result["status"] == "invalid-input" and reason in result["reason"]


def test_a_raised_alarm_level_tells_the_topic_only_above_it(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(6)
    release_with_baseline(aws["s3"], tmp_path, rng.normal(size=(ROWS, 4)).astype(np.float32))
    shifted = rng.normal(size=(ROWS, 4)).astype(np.float32)
    shifted[:, 1] += 1.0
    capture(aws["s3"], shifted, hour=NOW)
    outcome = check_now(aws, alarm_level=1000.0)
    assert outcome["status"] == "drift" and 1 < outcome["score"] < 1000
    assert messages(aws) == []  # the alarm (same level) would not fire either
    (document,) = [d for d in emf(capsys.readouterr().out) if "DriftScore" in d]
    assert document["DriftScore"] == [pytest.approx(outcome["score"])]
