"""Drift capture on the serving hosts: the real Lambda handler and the real container entry.

A sampled request becomes one SageMaker data-capture record on stdout (inferstack.capture);
CloudWatch Logs, a subscription filter and Firehose carry it to S3 (infra/constructs/
capture.py). The last test runs that path through moto as far as moto goes (see there).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from inferstack.capture import BINARY_CONTENT_TYPE, MAX_RECORD_BYTES, Capture
from inferstack.names import CAPTURE_PREFIX, ENV_CAPTURE_RATE, METRIC_CAPTURE_SKIPPED
from inferstack.protocol.types import HttpResponse
from inferstack.settings import ConfigurationError, Settings
from tests.functional.conftest import (
    DEMO_MODEL,
    HTTP,
    REPO_ROOT,
    demo_env,
    http_event,
    import_function_module,
    invoke,
    json_infer_body,
    reference_rows,
)

INFER = "/v2/models/wine/infer"
RECORD_KEYS = {"captureData", "eventMetadata", "eventVersion"}
PAYLOAD_KEYS = {"observedContentType", "mode", "data", "encoding"}
SAGEMAKER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ENTRYPOINT = REPO_ROOT / "gpu_endpoints" / "entrypoint.py"


def capture_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if '"captureData"' in line]


def handler_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """functions/inference/handler.py imported afresh under `env`, as Lambda starts it."""
    return import_function_module(monkeypatch, demo_env(**env)).handler


def infer_json(handler: Any, rows: np.ndarray, **extra: Any) -> Any:
    body = json_infer_body(rows, **extra)
    reply = invoke(handler, http_event(HTTP, "POST", INFER, body=body, base64_body=False))
    assert reply.status == 200, reply.text
    return body, reply


def assert_sagemaker_record(record: dict[str, Any]) -> None:
    """Exactly SageMaker's data-capture schema (shared/DRIFT.md)."""
    assert set(record) == RECORD_KEYS
    assert record["eventVersion"] == "0"
    assert set(record["captureData"]) == {"endpointInput", "endpointOutput"}
    for part, mode in (("endpointInput", "INPUT"), ("endpointOutput", "OUTPUT")):
        assert set(record["captureData"][part]) == PAYLOAD_KEYS
        assert record["captureData"][part]["mode"] == mode
    metadata = record["eventMetadata"]
    assert set(metadata) <= {"eventId", "inferenceTime", "inferenceId"}
    uuid.UUID(metadata["eventId"])
    assert SAGEMAKER_TIME.match(metadata["inferenceTime"])
    when = datetime.strptime(metadata["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


# ------------------------------------------------------------------ Lambda


def test_a_sampled_lambda_request_is_one_sagemaker_record_of_what_was_sent_and_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    capsys.readouterr()
    body, reply = infer_json(handler, reference_rows(3), id="req-7")

    [record] = capture_lines(capsys.readouterr().out)
    assert_sagemaker_record(record)
    sent, answered = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert (sent["observedContentType"], sent["encoding"]) == ("application/json", "JSON")
    assert json.loads(sent["data"]) == json.loads(body)
    assert (answered["observedContentType"], answered["encoding"]) == ("application/json", "JSON")
    assert json.loads(answered["data"]) == reply.json()
    assert record["eventMetadata"]["inferenceId"] == "req-7"


def test_a_binary_request_is_captured_base64_with_its_header_length(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.functional.test_lambda_handler import binary_request

    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    body, header_length = binary_request(reference_rows(4), binary_data_output=True)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(header_length),
    }
    capsys.readouterr()
    event = http_event(HTTP, "POST", INFER, body=body, base64_body=True, headers=headers)
    reply = invoke(handler, event)
    assert reply.status == 200, reply.text

    [record] = capture_lines(capsys.readouterr().out)
    assert_sagemaker_record(record)
    sent, answered = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert sent["encoding"] == answered["encoding"] == "BASE64"
    assert sent["observedContentType"] == f"{BINARY_CONTENT_TYPE}{header_length}"
    assert base64.b64decode(sent["data"]) == body
    answer_length = reply.headers["inference-header-content-length"]
    assert answered["observedContentType"] == f"{BINARY_CONTENT_TYPE}{answer_length}"
    assert base64.b64decode(answered["data"]) == reply.body


@pytest.mark.parametrize("rate", ["0", None])
def test_rate_zero_or_unset_captures_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rate: str | None
) -> None:
    monkeypatch.delenv(ENV_CAPTURE_RATE, raising=False)
    handler = handler_with(monkeypatch, **({ENV_CAPTURE_RATE: rate} if rate else {}))
    for start in range(20):
        infer_json(handler, reference_rows(1, start=start))
    assert capture_lines(capsys.readouterr().out) == []


def test_a_record_over_the_size_cap_is_skipped_and_counted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from infra.constructs.monitoring import METRIC_DIMENSIONS

    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1", "INFERSTACK_ENV": "prod"})
    rows = np.tile(reference_rows(100), (40, 1))  # 4,000 rows: ~600 KB of JSON
    assert len(json_infer_body(rows)) > MAX_RECORD_BYTES
    capsys.readouterr()
    infer_json(handler, rows)  # still answered

    out = capsys.readouterr().out
    assert capture_lines(out) == []
    skipped = [
        json.loads(line) for line in out.splitlines() if f'"{METRIC_CAPTURE_SKIPPED}"' in line
    ]
    assert len(skipped) == 1
    [directive] = skipped[0]["_aws"]["CloudWatchMetrics"]
    [dimensions] = directive["Dimensions"]
    assert (frozenset(dimensions),) == METRIC_DIMENSIONS[METRIC_CAPTURE_SKIPPED]
    assert skipped[0][METRIC_CAPTURE_SKIPPED] in (1.0, [1.0])
    assert (skipped[0]["model"], skipped[0]["environment"]) == ("wine", "prod")
    # A small request right after is captured again: one large request stops nothing.
    infer_json(handler, reference_rows(2))
    assert len(capture_lines(capsys.readouterr().out)) == 1


def test_a_capture_that_cannot_write_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def closed_stdout(line: str) -> None:
        raise OSError("stdout is closed")

    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    handler.dataplane.capture = Capture(1.0, write=closed_stdout)
    _, reply = infer_json(handler, reference_rows(2))
    assert set(reply.json()) >= {"outputs"}


class WriteCalls:
    """A stdout that keeps each write call apart, as a pipe to CloudWatch Logs sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_every_line_a_request_writes_is_one_whole_write_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record, the request's EMF line, an error's metric and CaptureSkipped each go out
    in ONE write: print() writes text and newline apart (two system calls on Lambda's
    write-through stdout), and a line another thread writes in between corrupts both for
    CloudWatch Logs, which splits stdout on newlines."""
    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    stdout = WriteCalls()
    monkeypatch.setattr(sys, "stdout", stdout)
    infer_json(handler, reference_rows(2))  # a record + the request's metrics
    big = np.tile(reference_rows(100), (40, 1))
    infer_json(handler, big)  # over the record cap: CaptureSkipped
    bad = invoke(handler, http_event(HTTP, "POST", INFER, body="{", base64_body=False))
    assert bad.status == 400  # the Errors metric

    written = "".join(stdout.calls)
    assert '"captureData"' in written and METRIC_CAPTURE_SKIPPED in written
    assert '"Errors"' in written
    for call in stdout.calls:
        assert call.endswith("\n") and call.count("\n") == 1, call[:80]
        json.loads(call)


def test_event_ids_are_version_4_uuids_unique_per_record() -> None:
    lines: list[str] = []
    captures = [Capture(1.0, write=lines.append) for _ in range(2)]  # two processes' worth
    answer = HttpResponse(200, b'{"outputs": []}')
    for capture in captures:
        for _ in range(500):
            capture.offer("wine", b'{"inputs": []}', None, answer)
    ids = [json.loads(line)["eventMetadata"]["eventId"] for line in lines]
    assert len(set(ids)) == len(ids) == 1000
    assert {uuid.UUID(value).version for value in ids} == {4}
    assert {uuid.UUID(value).variant for value in ids} == {uuid.RFC_4122}


def test_the_share_sampled_is_the_rate() -> None:
    written: list[str] = []
    capture = Capture(0.25, write=written.append)
    draws = sum(capture.sampled() for _ in range(20_000))
    # Binomial(20000, 0.25): sd ~61; 6 sd either side never fails by chance.
    assert 5000 - 370 < draws < 5000 + 370
    assert not any(Capture(0.0).sampled() for _ in range(1000))
    assert all(Capture(1.0).sampled() for _ in range(1000))


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "ten", "nan", "10%"])
def test_a_rate_outside_zero_to_one_fails_the_host_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=ENV_CAPTURE_RATE):
        Settings.from_env({ENV_CAPTURE_RATE: raw})
    assert Settings.from_env({ENV_CAPTURE_RATE: "0.05"}).capture_rate == 0.05


# ------------------------------------------------------------------ the container (ECS)


def test_the_serving_container_captures_a_sampled_request(tmp_path: Path) -> None:
    """gpu_endpoints/entrypoint.py, as ECS runs it, over real HTTP on 127.0.0.1."""
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INFERSTACK_", "SAGEMAKER_", "AWS_", "POWERTOOLS_"))
    }
    env.update(
        PYTHONUNBUFFERED="1",
        INFERSTACK_MODEL_NAME="wine",
        INFERSTACK_MODEL_URI=str(DEMO_MODEL),
        INFERSTACK_HOST="127.0.0.1",
        SAGEMAKER_BIND_TO_PORT=str(port),
        **{ENV_CAPTURE_RATE: "1"},
    )
    log = tmp_path / "container.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    body = json_infer_body(reference_rows(2, start=10)).encode()
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{INFER}",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = response.read()
            except OSError:
                time.sleep(0.2)
        assert answer is not None, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    [record] = capture_lines(log.read_text())
    assert_sagemaker_record(record)
    assert record["captureData"]["endpointInput"]["data"].encode() == body
    assert json.loads(record["captureData"]["endpointOutput"]["data"]) == json.loads(answer)


# ------------------------------------------------------------------ to S3, through moto


def test_captured_lines_reach_s3_under_the_model_and_hour_and_the_reader_decodes_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Handler stdout -> CloudWatch Logs -> subscription filter -> Firehose -> S3 in moto.

    moto 5.2.5 delivers a subscription's events to Firehose and S3, but (measured) it
    applies neither the filter pattern nor Firehose's processors, and writes under the
    static prefix + its own yyyy/mm/dd/hh/. So the test applies the two documented steps
    itself: the JSON filter pattern (a record is a line whose captureData.endpointInput.mode
    is "INPUT") and CloudWatch Logs decompression + message extraction + newline
    (https://docs.aws.amazon.com/firehose/latest/dev/writing-with-cloudwatch-logs.html).
    """
    from moto import mock_aws

    from inferstack.drift.capture import CaptureStats, read_capture

    handler = handler_with(monkeypatch, **{ENV_CAPTURE_RATE: "1"})
    capsys.readouterr()
    sent = [reference_rows(2, start=20), reference_rows(3, start=30)]
    for rows in sent:
        infer_json(handler, rows)
    stdout_lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert any('"_aws"' in line for line in stdout_lines)  # EMF lines travel beside them

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        region = "us-east-1"
        s3 = boto3.client("s3", region_name=region)
        s3.create_bucket(Bucket="models")
        key, delivered = deliver_through_logs_and_firehose(
            stdout_lines,
            bucket="models",
            prefix=f"{CAPTURE_PREFIX}wine/",
            log_group="/aws/lambda/wine",
            region=region,
        )
        hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
        assert key.startswith(f"{CAPTURE_PREFIX}wine/{hour}/")

    assert len(delivered.splitlines()) == len(sent)
    stats = CaptureStats()
    records = list(read_capture([_as_file(delivered, tmp_path)], stats=stats))
    assert stats.skipped == 0
    assert len(records) == len(sent)
    for record, rows in zip(records, sent, strict=True):
        np.testing.assert_array_equal(record.inputs["features"], rows)
        assert set(record.outputs) == {"label", "probabilities"}


def deliver_through_logs_and_firehose(
    lines: list[str], *, bucket: str, prefix: str, log_group: str, region: str
) -> tuple[str, str]:
    """`lines` into a log group whose subscription filter feeds a Firehose stream writing to
    s3://bucket/prefix, in moto; (the key moto wrote, the text the deployed stream delivers).

    moto delivers the subscription's CloudWatch Logs batch as it is, so the two documented
    steps it skips are applied here: the filter pattern, and the stream's decompression,
    message extraction and newline after each message
    (https://docs.aws.amazon.com/firehose/latest/dev/writing-with-cloudwatch-logs.html)."""
    from infra.constructs.capture import CAPTURE_FILTER_PATTERN

    s3 = boto3.client("s3", region_name=region)
    firehose = boto3.client("firehose", region_name=region)
    stream = firehose.create_delivery_stream(
        DeliveryStreamName="capture-stream",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": prefix,
        },
    )["DeliveryStreamARN"]
    logs = boto3.client("logs", region_name=region)
    logs.create_log_group(logGroupName=log_group)
    logs.create_log_stream(logGroupName=log_group, logStreamName="s1")
    logs.put_subscription_filter(
        logGroupName=log_group,
        filterName="capture",
        filterPattern=CAPTURE_FILTER_PATTERN,
        destinationArn=stream,
        roleArn="arn:aws:iam::123456789012:role/logs-to-firehose",
    )
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=log_group,
        logStreamName="s1",
        logEvents=[{"timestamp": now, "message": line} for line in lines],
    )
    [listed] = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    batch = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
    envelope = json.loads(gzip.decompress(batch))
    assert envelope["messageType"] == "DATA_MESSAGE"
    delivered = "".join(
        event["message"] + "\n"
        for event in envelope["logEvents"]
        if matches_capture_pattern(event["message"])
    )
    return listed["Key"], delivered


def matches_capture_pattern(message: str) -> bool:
    """`{ $.captureData.endpointInput.mode = "INPUT" }` as CloudWatch Logs evaluates it."""
    with contextlib.suppress(ValueError):
        doc = json.loads(message)
        return bool(doc.get("captureData", {}).get("endpointInput", {}).get("mode") == "INPUT")
    return False


def _as_file(text: str, folder: Path) -> Path:
    """The object as Firehose writes it: gzip (the stream's compression), .jsonl.gz."""
    path = folder / "capture-wine-1-2026-01-01-00-00-00-x.jsonl.gz"
    with gzip.open(path, "wb") as out:
        out.write(text.encode())
    return path
