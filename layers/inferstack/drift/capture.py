"""Read data-capture JSONL, SageMaker's own and ours (the same format), as decoded tensors.

One record a line (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html):
`{"captureData": {"endpointInput": {"observedContentType", "mode", "data", "encoding"},
"endpointOutput": {...}}, "eventMetadata": {"eventId", "inferenceTime"}, "eventVersion"}`.
`encoding` is JSON, CSV or BASE64; BASE64 when the content type is in neither list of the
endpoint's CaptureContentTypeHeader
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CaptureContentTypeHeader.html).

Everything streams: a line is read, decoded and handed on; nothing holds a window. Records
are kept or dropped on their `inferenceTime`, never on the key they were found under (an hour
prefix can hold records of the hour before). What cannot be read is counted in
`CaptureStats`, never raised: one bad line must not stop a scheduled check.
"""

from __future__ import annotations

import base64
import binascii
import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from inferstack.exceptions import BadRequestError
from inferstack.protocol.codec import decode_request, parse_json
from inferstack.protocol.datatypes import BYTES
from inferstack.sagemaker import TRITON_BINARY, json_header_length

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from inferstack.protocol.types import InferInput

# Tensor names for bodies that carry none (CSV rows, v1 instances, bare JSON arrays): the
# same as a 2-D .npy file gets in the CLI, so a baseline from a .npy matches the capture.
DEFAULT_INPUT = "x"
DEFAULT_OUTPUT = "y"
CAPTURE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
MAX_EXAMPLES = 5
_HOUR_SLACK = timedelta(hours=1)
_HEADER_SIZE = re.compile(r"json-header-size\s*=\s*(\d+)", re.IGNORECASE)
_YEAR = re.compile(r"^\d{4}/$")
_NO_TENSORS: dict[str, np.ndarray] = {}


class Record(NamedTuple):
    """One captured request: its time and its tensors by name (inputs and outputs)."""

    inference_time: datetime
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    event_id: str | None = None


@dataclass
class CaptureStats:
    """What a read saw; `problems` keeps the first few reasons for a person to read."""

    files: int = 0
    lines: int = 0
    records: int = 0
    bad_lines: int = 0
    undecodable: int = 0
    outside_window: int = 0
    mismatched: int = 0  # records whose tensors differ from the first one's (data.py)
    problems: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.bad_lines + self.undecodable + self.mismatched

    def note(self, where: str, problem: str) -> None:
        if len(self.problems) < MAX_EXAMPLES:
            self.problems.append(f"{where}: {problem}")

    def as_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "lines": self.lines,
            "records": self.records,
            "bad_lines": self.bad_lines,
            "undecodable": self.undecodable,
            "outside_window": self.outside_window,
            "mismatched": self.mismatched,
        }


class S3Object(NamedTuple):
    """A capture object in S3, opened as a stream only when read."""

    client: Any
    bucket: str
    key: str

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def open(self) -> io.BufferedIOBase:
        body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
        stream = io.BufferedReader(body, buffer_size=1 << 20)
        return gzip.GzipFile(fileobj=stream) if self.key.endswith(".gz") else stream


Source = str | Path | S3Object


class _BadRecord(ValueError):
    """A line that is not a capture record (counted as a bad line)."""


# --------------------------------------------------------------------------- reading


def read_capture(
    sources: Iterable[Source],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    stats: CaptureStats | None = None,
    names: tuple[str, str] = (DEFAULT_INPUT, DEFAULT_OUTPUT),
) -> Iterator[Record]:
    """Records with `start <= inferenceTime < end` from files, folders or S3 objects.

    `names`: the (input, output) tensor names for bodies that carry none (CSV rows, v1
    instances and predictions): pass a single-input model's own names."""
    stats = stats if stats is not None else CaptureStats()
    for source in sources:
        for name, opener in _expand(source):
            stats.files += 1
            with opener() as stream:
                for number, line in enumerate(stream, 1):
                    yield from _records(
                        line, f"{name}:{number}", start=start, end=end, stats=stats, names=names
                    )


def capture_files(folder: Path) -> list[Path]:
    """The capture files under a folder, in key order (which is time order)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES))


def _expand(source: Source) -> Iterator[tuple[str, Any]]:
    if isinstance(source, S3Object):
        yield source.name, source.open
        return
    path = Path(source)
    for file in capture_files(path) if path.is_dir() else [path]:
        yield str(file), partial(_open_file, file)


def _open_file(path: Path) -> io.BufferedIOBase:
    return gzip.GzipFile(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _records(
    line: bytes,
    where: str,
    *,
    start: datetime | None,
    end: datetime | None,
    stats: CaptureStats,
    names: tuple[str, str],
) -> Iterator[Record]:
    if not line.strip():
        return
    stats.lines += 1
    try:
        documents = _documents(line)
    except _BadRecord as exc:
        stats.bad_lines += 1
        stats.note(where, str(exc))
        return
    for document in documents:
        try:
            time, event_id, capture = _envelope(document)
        except _BadRecord as exc:
            stats.bad_lines += 1
            stats.note(where, str(exc))
            continue
        if (start is not None and time < start) or (end is not None and time >= end):
            stats.outside_window += 1
            continue
        try:
            inputs = _tensors(capture.get("endpointInput"), "inputs", names[0])
            outputs = _tensors(capture.get("endpointOutput"), "outputs", names[1])
        except (BadRequestError, ValueError, TypeError, binascii.Error) as exc:
            stats.undecodable += 1
            stats.note(where, f"body cannot be decoded: {exc}")
            continue
        stats.records += 1
        yield Record(time, inputs, outputs, event_id)


def _documents(line: bytes) -> list[dict[str, Any]]:
    """A line's capture records: usually one; several when JSON objects were concatenated
    (Firehose adds no delimiter), or a CloudWatch Logs subscription envelope's messages."""
    try:
        parsed = [orjson.loads(line)]
    except orjson.JSONDecodeError:
        parsed = _concatenated(line.decode("utf-8", "replace"))
    documents: list[dict[str, Any]] = []
    for item in parsed:
        if not isinstance(item, dict):
            raise _BadRecord("not a JSON object")
        events = item.get("logEvents")
        if isinstance(events, list):  # a CloudWatch Logs subscription's DATA_MESSAGE
            for event in events:
                message = event.get("message") if isinstance(event, dict) else None
                if isinstance(message, str) and "{" in message:
                    documents.extend(_documents(message[message.index("{") :].encode()))
        else:
            documents.append(item)
    return documents


def _concatenated(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    items: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:
            raise _BadRecord("not JSON") from None
        items.append(item)
        while position < len(text) and text[position].isspace():
            position += 1
    return items


def _envelope(document: dict[str, Any]) -> tuple[datetime, str | None, dict[str, Any]]:
    capture = document.get("captureData")
    metadata = document.get("eventMetadata")
    if not isinstance(capture, dict) or not isinstance(metadata, dict):
        raise _BadRecord("not a capture record (no captureData/eventMetadata)")
    event_id = metadata.get("eventId")
    try:
        time = parse_time(metadata.get("inferenceTime"))
    except ValueError as exc:
        raise _BadRecord(f"inferenceTime {exc}") from None
    return time, event_id if isinstance(event_id, str) else None, capture


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time (SageMaker's `2022-02-14T17:25:49Z`), as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError("missing")
    try:
        time = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)


# --------------------------------------------------------------------------- bodies


def _tensors(part: Any, key: str, default: str) -> dict[str, np.ndarray]:
    """One side of a capture (endpointInput or endpointOutput) as tensors by name."""
    if part is None:
        return _NO_TENSORS
    if not isinstance(part, dict) or "data" not in part:
        raise ValueError(f"endpoint{key[:-1].title()} has no 'data'")
    data = part["data"]
    content_type = str(part.get("observedContentType") or "")
    encoding = str(part.get("encoding") or "").upper()
    media = content_type.partition(";")[0].strip().lower()
    if encoding == "CSV" or (encoding != "BASE64" and media == "text/csv"):
        return {default: _csv(_text(data))}
    if encoding == "BASE64":
        body = base64.b64decode(_text(data), validate=True)
        if media == "text/csv":
            return {default: _csv(body.decode("utf-8"))}
        return _body(body, content_type, media, key, default)
    if isinstance(data, (dict, list)):  # already parsed (lenient: some writers inline it)
        return _document(data, key, default, b"")
    return _body(_text(data).encode("utf-8"), content_type, media, key, default)


def _text(data: Any) -> str:
    if not isinstance(data, str):
        raise ValueError("'data' must be a string")
    return data


def _body(
    body: bytes, content_type: str, media: str, key: str, default: str
) -> dict[str, np.ndarray]:
    """A protocol body: JSON, or JSON header + binary tensors (Triton's extension)."""
    length: int | None = None
    if media == TRITON_BINARY:
        match = _HEADER_SIZE.search(content_type)
        if match is None:
            raise ValueError(f"{TRITON_BINARY} without json-header-size")
        length = int(match.group(1))
    elif not media.endswith("json"):
        # application/octet-stream and the like: a JSON header, if any, ends the first
        # object (as the SageMaker host itself finds it).
        length = json_header_length(body)
        if length is None:
            raise ValueError(f"{media or 'a body'} without a JSON header cannot be decoded")
    if length is not None and length == len(body):
        length = None
    if key == "inputs" and body.startswith(b"{"):  # a request: the codec reads it as sent
        try:
            return _named(decode_request(body, length).inputs)
        except BadRequestError:
            pass  # not a v2 request: v1 or a bare array, below
    header = body if length is None else body[:length]
    binary = b"" if length is None else body[length:]
    return _document(parse_json(header), key, default, binary)


def _document(doc: Any, key: str, default: str, binary: bytes) -> dict[str, np.ndarray]:
    if isinstance(doc, dict) and isinstance(doc.get(key), list):
        # A response's outputs have the inputs' layout: one decoder serves both.
        header = orjson.dumps({"inputs": doc[key]})
        return _named(decode_request(header + binary, len(header) if binary else None).inputs)
    for name in ("instances", "predictions"):  # the v1 format
        if isinstance(doc, dict) and name in doc:
            doc = doc[name]
    if isinstance(doc, list) and doc:
        return {default: _array(doc)}
    raise ValueError(f"JSON body has no '{key}'")


def _named(tensors: list[InferInput]) -> dict[str, np.ndarray]:
    return {t.name: _strings(t.data) if t.datatype == BYTES else t.data for t in tensors}


def _strings(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)
    ]
    return out


def _array(rows: list[Any]) -> np.ndarray:
    array = np.asarray(rows)
    if array.dtype.kind in "biuf":
        return array
    return np.asarray(rows, dtype=object)


def _csv(text: str) -> np.ndarray:
    """CSV rows (no header: SageMaker's CSV endpoints take none) -> [rows, columns]."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError("CSV rows are empty or of different lengths")
    try:
        return np.asarray(rows, dtype=np.float64)
    except ValueError:
        return np.asarray(rows, dtype=object)


# --------------------------------------------------------------------------- S3


def s3_capture_objects(
    s3: Any,
    bucket: str,
    prefix: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[S3Object]:
    """Capture objects under `prefix` whose hour prefix can hold records of the window.

    Works for ours (`<prefix>yyyy/mm/dd/hh/`) and SageMaker's
    (`<prefix><endpoint>/<variant>/yyyy/mm/dd/hh/`): the date roots are found by listing,
    then only the window's hours (one hour of slack either side) are listed.
    """
    prefix = prefix if not prefix or prefix.endswith("/") else f"{prefix}/"
    if start is None or end is None:
        yield from _list(s3, bucket, prefix)
        return
    hours: list[str] = []
    hour = (start - _HOUR_SLACK).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end + _HOUR_SLACK:
        hours.append(hour.strftime("%Y/%m/%d/%H/"))
        hour += timedelta(hours=1)
    for root in _date_roots(s3, bucket, prefix, depth=3):
        for hour_prefix in hours:
            yield from _list(s3, bucket, root + hour_prefix)


def _date_roots(s3: Any, bucket: str, prefix: str, depth: int) -> Iterator[str]:
    """Prefixes under which yyyy/ folders start (the capture root, or endpoint/variant/).

    A delimiter listing returns the next level's prefixes as CommonPrefixes
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html)."""
    children = [
        common["Prefix"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        )
        for common in page.get("CommonPrefixes", [])
    ]
    if any(_YEAR.match(child[len(prefix) :]) for child in children):
        yield prefix
    if depth > 0:
        for child in children:
            if not _YEAR.match(child[len(prefix) :]):
                yield from _date_roots(s3, bucket, child, depth - 1)


def _list(s3: Any, bucket: str, prefix: str) -> Iterator[S3Object]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(CAPTURE_SUFFIXES):
                yield S3Object(s3, bucket, item["Key"])
