"""The capture reader: SageMaker's data-capture JSONL (and ours) from files, folders and S3,
filtered on inferenceTime, with bad lines counted instead of raised."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from inferstack.drift.capture import CaptureStats, read_capture, s3_capture_objects

from .deployed import use_fake_aws
from .drift_capture_records import TRITON, binary_request, json_record, part, record, v2_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WINDOW = (datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC))


def rows(seed: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_json_records_decode_to_the_tensors_sent_and_answered(tmp_path: Path) -> None:
    sent, answered = rows(1), np.array([[0.25], [0.75]], dtype=np.float32)
    file = write(
        tmp_path / "a.jsonl",
        [json_record("2026-03-01T10:15:00Z", sent, answered)],
    )
    (only,) = list(read_capture([file]))
    np.testing.assert_array_equal(only.inputs["x"], sent)
    np.testing.assert_array_equal(only.outputs["y"], answered)
    assert only.inference_time == datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


def test_key_order_and_trailing_newlines_do_not_matter(tmp_path: Path) -> None:
    body = part("INPUT", v2_request({"x": rows(2)}) + "\n", "application/json", "JSON")
    lines = [
        record("2026-03-01T10:00:01Z", dict(reversed(list(body.items()))), reverse_keys=True),
        record("2026-03-01T10:00:02.123Z", body),
    ]
    records = list(read_capture([write(tmp_path / "a.jsonl", lines)]))
    assert len(records) == 2
    np.testing.assert_array_equal(records[0].inputs["x"], records[1].inputs["x"])


def test_csv_endpoints_give_one_row_per_line(tmp_path: Path) -> None:
    """SageMaker's own capture of a CSV endpoint: the rows, no header."""
    line = record(
        "2026-03-01T10:00:00Z",
        part("INPUT", "1.5,2,3\n4,5,6.25\n", "text/csv", "CSV"),
        part("OUTPUT", "0.1\n0.9\n", "text/csv", "CSV"),
    )
    (only,) = list(read_capture([write(tmp_path / "c.jsonl", [line])]))
    np.testing.assert_array_equal(only.inputs["x"], [[1.5, 2, 3], [4, 5, 6.25]])
    np.testing.assert_array_equal(only.outputs["y"], [[0.1], [0.9]])


def test_base64_binary_bodies_decode_with_the_header_size(tmp_path: Path) -> None:
    """Binary tensor bodies are captured as BASE64; Triton's Content-Type says where the
    JSON header ends, a plain octet-stream body is read up to its first JSON object."""
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    words = np.array([b"red", b"blue"], dtype=object)
    body, length = binary_request({"image": ("FP32", image), "colour": ("BYTES", words)})
    lines = [
        record(
            "2026-03-01T10:00:00Z",
            part("INPUT", body, f"{TRITON};json-header-size={length}", "BASE64"),
        ),
        record("2026-03-01T10:00:01Z", part("INPUT", body, "application/octet-stream", "BASE64")),
    ]
    records = list(read_capture([write(tmp_path / "b.jsonl", lines)]))
    assert len(records) == 2
    for each in records:
        np.testing.assert_array_equal(each.inputs["image"], image)
        assert each.inputs["colour"].tolist() == ["red", "blue"]


def test_bad_lines_are_counted_and_reading_goes_on(tmp_path: Path) -> None:
    good = json_record("2026-03-01T10:00:00Z", rows(3))
    lines = [
        "{not json",
        json.dumps({"hello": "world"}),
        record("2026-03-01T10:00:00Z", part("INPUT", "!!!not base64", "image/png", "BASE64")),
        record("2026-03-01T10:00:00Z", part("INPUT", '{"inputs": 3}', "application/json", "JSON")),
        record("yesterday", part("INPUT", v2_request({"x": rows(4)}), "application/json", "JSON")),
        good,
        "",
    ]
    stats = CaptureStats()
    records = list(read_capture([write(tmp_path / "bad.jsonl", lines)], stats=stats))
    assert len(records) == 1
    assert (stats.bad_lines, stats.undecodable, stats.records) == (3, 2, 1)
    assert stats.problems[0].endswith("bad.jsonl:1: not JSON")
    assert any("inferenceTime 'yesterday'" in p for p in stats.problems)


def test_the_window_is_inference_time_not_the_file(tmp_path: Path) -> None:
    """An hour folder can hold the previous hour's records: the time decides."""
    lines = [
        json_record("2026-03-01T09:59:59Z", rows(5)),
        json_record("2026-03-01T10:00:00+00:00", rows(6)),
        json_record("2026-03-01T10:59:59.999Z", rows(7)),
        json_record("2026-03-01T11:00:00Z", rows(8)),
    ]
    write(tmp_path / "2026/03/01/10/00-01-000-a.jsonl", lines[:2])
    write(tmp_path / "2026/03/01/11/00-01-000-b.jsonl.gz", lines[2:])
    write(tmp_path / "2026/03/01/11/notes.txt", ["not capture"])
    stats = CaptureStats()
    records = list(read_capture([tmp_path], start=WINDOW[0], end=WINDOW[1], stats=stats))
    np.testing.assert_array_equal(records[0].inputs["x"], rows(6))
    np.testing.assert_array_equal(records[1].inputs["x"], rows(7))
    assert (stats.files, stats.records, stats.outside_window) == (2, 2, 2)


def test_cloudwatch_logs_envelopes_and_concatenated_objects(tmp_path: Path) -> None:
    """What a Firehose stream fed by a Logs subscription writes: envelopes whose messages
    are capture records, and objects with no newline between them."""
    inner = [
        json_record("2026-03-01T10:00:00Z", rows(9)),
        json_record("2026-03-01T10:00:01Z", rows(10)),
    ]
    envelope = json.dumps(
        {
            "messageType": "DATA_MESSAGE",
            "logEvents": [{"id": "1", "timestamp": 0, "message": m} for m in inner],
        }
    )
    file = write(tmp_path / "f.jsonl", [envelope + envelope, inner[0] + inner[1]])
    assert len(list(read_capture([file]))) == 6


# --------------------------------------------------------------------------- S3


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        yield client


def put(s3: Any, key: str, lines: list[str]) -> None:
    data = "".join(f"{line}\n" for line in lines).encode()
    s3.put_object(
        Bucket="models", Key=key, Body=gzip.compress(data) if key.endswith(".gz") else data
    )


def test_s3_lists_only_the_window_hours_in_both_layouts(s3: Any) -> None:
    ours = "capture/wine/2026/03/01/{}/part.jsonl"
    theirs = "capture/wine/wine-endpoint/AllTraffic/2026/03/01/{}/00-00-000-x.jsonl.gz"
    for hour in ("07", "09", "10", "12"):
        put(s3, ours.format(hour), [json_record(f"2026-03-01T{hour}:30:00Z", rows(int(hour)))])
    put(s3, theirs.format("11"), [json_record("2026-03-01T10:59:00Z", rows(20))])
    keys = [o.key for o in s3_capture_objects(s3, "models", "capture/wine/", *WINDOW)]
    # 09 and 11 are the hour of slack either side; 07 and 12 are never listed.
    assert sorted(keys) == sorted([ours.format("09"), ours.format("10"), theirs.format("11")])
    stats = CaptureStats()
    objects = s3_capture_objects(s3, "models", "capture/wine", *WINDOW)
    records = list(read_capture(objects, start=WINDOW[0], end=WINDOW[1], stats=stats))
    found = sorted(r.inference_time.hour * 100 + r.inference_time.minute for r in records)
    assert found == [1030, 1059]
    assert stats.outside_window == 1  # 09:30, in the slack hour


def test_s3_without_a_window_reads_everything(s3: Any) -> None:
    put(s3, "capture/wine/2025/01/01/00/a.jsonl", [json_record("2025-01-01T00:00:00Z", rows(1))])
    put(s3, "capture/wine/2026/03/01/10/b.jsonl", [json_record("2026-03-01T10:00:00Z", rows(2))])
    assert len(list(read_capture(s3_capture_objects(s3, "models", "capture/wine/")))) == 2


def test_records_the_serving_hosts_write_read_back(tmp_path: Path) -> None:
    """inferstack.capture (Lambda, ECS) writes what this reads: a JSON request with its JSON
    answer, and a binary request with its binary answer (header lengths in the type)."""
    from inferstack.capture import Capture
    from inferstack.protocol.codec import encode_response
    from inferstack.protocol.types import HttpResponse, InferOutput, InferResponse

    lines: list[str] = []
    capture = Capture(1.0, write=lines.append)
    sent, scores = rows(11), np.array([[0.2], [0.8]], dtype=np.float32)
    answer, length = encode_response(
        InferResponse("wine", None, "1", [InferOutput("y", "FP32", scores, binary=True)])
    )
    headers = {"inference-header-content-length": str(length)}
    binary, header_length = binary_request({"x": ("FP32", sent)})
    capture.offer("wine", binary, header_length, HttpResponse(200, answer, headers=headers))
    plain, _ = encode_response(InferResponse("wine", None, "2", [InferOutput("y", "FP32", scores)]))
    capture.offer("wine", v2_request({"x": sent}).encode(), None, HttpResponse(200, plain))
    records = list(read_capture([write(tmp_path / "ours.jsonl", lines)]))
    assert len(records) == 2
    for each in records:
        np.testing.assert_array_equal(each.inputs["x"], sent)
        np.testing.assert_array_equal(each.outputs["y"], scores)


def test_v1_bodies_take_the_names_given(tmp_path: Path) -> None:
    line = record(
        "2026-03-01T10:00:00Z",
        part("INPUT", json.dumps({"instances": [[1, 2], [3, 4]]}), "application/json", "JSON"),
        part("OUTPUT", json.dumps({"predictions": [0, 1]}), "application/json", "JSON"),
    )
    file = write(tmp_path / "v1.jsonl", [line])
    (only,) = list(read_capture([file], names=("float_input", "label")))
    np.testing.assert_array_equal(only.inputs["float_input"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(only.outputs["label"], [0, 1])
