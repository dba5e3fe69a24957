"""Capture JSONL throughput, for benchmarks/drift.py: how fast records are read and written.

The records are the wine demo model's real exchanges: requests of 2 rows x 13 features drawn
from its reference sample (JSON, and the binary extension), answered by the data plane, and
written by `inferstack.capture.Capture` exactly as a serving host writes them (one line
each; Firehose gzips the lines it receives into `.jsonl.gz` objects, infra/constructs/
capture.py). Reading, in this process on one core, from local files:
- `read_capture`: the reader alone (a line -> a Record of decoded tensors);
- capture -> profile: `capture_batches` into the release baseline's profile, the per-object
  path of the scheduled check (inferstack.drift.scheduled), S3 listing and transfer aside.
Writing: `Capture(1.0, write=<list append>).offer(...)` in a hot loop over ready responses
(no inference, no stdout): the most one serving process can produce, not a request's cost
(benchmarks/warm_overhead.py measures that).
"""

from __future__ import annotations

import gc
import gzip
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import SEED, Config, binary_request_body, json_request_body, md_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from inferstack.protocol.types import HttpResponse

    # An exchange: the request body, its binary header length (None: JSON) and the answer.
    Exchange = tuple[bytes, int | None, HttpResponse]

MB = 1e6
ROWS_PER_REQUEST = 2  # as the demo's example request
POOL = 256  # distinct exchanges, cycled through
REPEATS = 2


def run(config: Config, folder: Path) -> dict[str, Any]:
    began = time.perf_counter()
    records = config.pick(15_000, 5_000)
    exchanges = _exchanges()
    writing = {
        kind: _write_rate(pool, config.pick(100_000, 20_000)) for kind, pool in exchanges.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        (kind, suffix): _write_file(folder / f"wine-{kind}{suffix}", exchanges[kind], records)
        for kind, suffix in (("json", ".jsonl.gz"), ("json", ".jsonl"), ("binary", ".jsonl.gz"))
    }
    profile = _profile()
    cases = {
        "read_capture, JSON, .jsonl.gz": (files["json", ".jsonl.gz"], _read),
        "read_capture, JSON, .jsonl": (files["json", ".jsonl"], _read),
        "read_capture, binary (BASE64), .jsonl.gz": (files["binary", ".jsonl.gz"], _read),
        "capture -> profile, JSON, .jsonl.gz": (files["json", ".jsonl.gz"], profile),
        "capture -> profile, binary (BASE64), .jsonl.gz": (files["binary", ".jsonl.gz"], profile),
    }
    # Each case REPEATS times, interleaved; the fastest pass counts (the first pays warm-up,
    # the others whatever else the machine runs).
    reading: dict[str, dict[str, Any]] = {}
    for _ in range(REPEATS):
        for label, (file, read) in cases.items():
            this = _read_rate(file, read)
            if label not in reading or this["seconds"] < reading[label]["seconds"]:
                reading[label] = this
    return {
        "records": records,
        "rows_per_record": ROWS_PER_REQUEST,
        "repeats": REPEATS,
        "reading": reading,
        "writing": writing,
        "duration_s": round(time.perf_counter() - began, 1),
    }


# --------------------------------------------------------------------------- records


def _exchanges() -> dict[str, list[Exchange]]:
    """POOL real exchanges of the wine model per body kind (JSON, binary): distinct requests
    and the data plane's answers."""
    from inferstack.bootstrap import lambda_entry_from_env
    from inferstack.demo import demo_model_path, reference_sample_path
    from inferstack.protocol.types import HttpRequest

    dataplane = lambda_entry_from_env(
        {
            "INFERSTACK_MODEL_NAME": "wine",
            "INFERSTACK_MODEL_URI": str(demo_model_path()),
            "INFERSTACK_METRICS": "false",
        }
    ).dataplane
    sample = np.load(reference_sample_path())
    rng = np.random.default_rng(SEED)
    out: dict[str, list[Exchange]] = {"json": [], "binary": []}
    for _ in range(POOL):
        rows = sample[rng.choice(len(sample), ROWS_PER_REQUEST, replace=False)]
        binary, length = binary_request_body("features", rows)
        kinds = (
            ("json", json_request_body("features", rows), None, "application/json"),
            ("binary", binary, length, "application/octet-stream"),
        )
        for kind, body, header_length, content_type in kinds:
            headers = {"content-type": content_type}
            if header_length is not None:
                headers["inference-header-content-length"] = str(header_length)
            request = HttpRequest("POST", "/v2/models/wine/infer", headers, body)
            response = dataplane.handle(request)
            if response.status != 200:
                raise RuntimeError(f"wine answered {response.status}: {response.body[:200]!r}")
            out[kind].append((body, header_length, response))
    return out


def _write_file(path: Path, pool: list[Exchange], records: int) -> dict[str, Any]:
    """`records` capture lines, as Firehose leaves them in S3 (one record a line)."""
    from inferstack.capture import Capture

    opener = gzip.open if path.name.endswith(".gz") else open
    raw = 0
    with opener(path, "wt", encoding="utf-8") as handle:

        def write(line: str) -> None:
            nonlocal raw
            raw += len(line) + 1
            handle.write(line + "\n")

        capture = Capture(1.0, write=write)
        for index in range(records):
            body, header_length, response = pool[index % len(pool)]
            capture.offer("wine", body, header_length, response)
    return {"path": path, "records": records, "raw_bytes": raw, "file_bytes": path.stat().st_size}


# --------------------------------------------------------------------------- writing


def _write_rate(pool: list[Exchange], calls: int) -> dict[str, Any]:
    """Capture.offer on every call (rate 1), lines appended to a list (emptied per block)."""
    from inferstack.capture import Capture

    lines: list[str] = []
    capture = Capture(1.0, write=lines.append)
    wall, cpu, written, chars = 0.0, 0.0, 0, 0
    for _ in range(max(1, calls // len(pool))):
        began, began_cpu = time.perf_counter(), time.process_time()
        for body, header_length, response in pool:
            capture.offer("wine", body, header_length, response)
        wall += time.perf_counter() - began
        cpu += time.process_time() - began_cpu
        written += len(lines)
        chars += sum(len(line) + 1 for line in lines)  # ASCII: characters are bytes
        lines.clear()
    return {
        "records": written,
        "seconds": round(wall, 3),
        "records_per_s": round(written / wall),
        "records_per_cpu_s": round(written / cpu),
        "mb_per_s": round(chars / wall / MB, 1),
        "bytes_per_record": round(chars / written),
    }


# --------------------------------------------------------------------------- reading


def _read(path: Path) -> int:
    from inferstack.drift.capture import CaptureStats, read_capture

    stats = CaptureStats()
    count = sum(1 for _ in read_capture([path], stats=stats))
    _clean(stats)
    return count


def _profile() -> Callable[[Path], int]:
    """The scheduled check's path: records batched, profiled against the release baseline."""
    from inferstack.demo import demo_model_path, reference_sample_path
    from inferstack.drift import build_baseline
    from inferstack.drift.capture import CaptureStats
    from inferstack.drift.data import capture_batches
    from inferstack.release.baselines import reference_outputs

    reference = {"features": np.load(reference_sample_path())}
    baseline = build_baseline(reference, reference_outputs(demo_model_path(), reference))

    def profile(path: Path) -> int:
        stats = CaptureStats()
        current = baseline.new_profile()
        for batch in capture_batches([path], stats=stats):
            current.merge(baseline.profile_tensors(batch.inputs, batch.outputs or None))
        _clean(stats)
        if current.rows != stats.records * ROWS_PER_REQUEST:
            raise RuntimeError(f"profiled {current.rows} rows of {stats.records} records")
        return stats.records

    return profile


def _clean(stats: Any) -> None:
    if stats.skipped or not stats.records:
        raise RuntimeError(f"the benchmark's own records were not read: {stats.as_dict()}")


def _read_rate(file: dict[str, Any], read: Callable[[Path], int]) -> dict[str, Any]:
    gc.collect()  # no collection of an earlier pass's garbage inside this one
    wall, cpu = time.perf_counter(), time.process_time()
    records = read(file["path"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if records != file["records"]:
        raise RuntimeError(f"read {records} of {file['records']} records from {file['path']}")
    return {
        "records": records,
        "file_mb": round(file["file_bytes"] / MB, 2),
        "jsonl_mb": round(file["raw_bytes"] / MB, 2),
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "records_per_s": round(records / wall),
        "records_per_cpu_s": round(records / cpu),
        "jsonl_mb_per_s": round(file["raw_bytes"] / wall / MB, 1),
    }


# --------------------------------------------------------------------------- report


READ_COLUMNS = {
    "file MB": "file_mb",
    "JSONL MB": "jsonl_mb",
    "seconds": "seconds",
    "records/s": "records_per_s",
    "records/CPU s": "records_per_cpu_s",
    "JSONL MB/s": "jsonl_mb_per_s",
}
WRITE_COLUMNS = {
    "records": "records",
    "seconds": "seconds",
    "records/s": "records_per_s",
    "records/CPU s": "records_per_cpu_s",
    "MB/s": "mb_per_s",
    "bytes a record": "bytes_per_record",
}


def markdown(capture: dict[str, Any]) -> list[str]:
    writing = {f"Capture.offer, {kind}": w for kind, w in capture["writing"].items()}
    return [
        f"Capture JSONL throughput: the wine model's records ({capture['rows_per_record']} rows "
        "x 13 features a request, with the model's answer) as `inferstack.capture.Capture` "
        f"writes them, {capture['records']:,} records a file, read from local files in this "
        "process (one core; the fastest of "
        f"{capture.get('repeats', 1)} passes; records/CPU s discounts what else the machine ran). "
        "capture -> profile is the scheduled check's path per object, S3 aside.",
        "",
        _table("reading", capture["reading"], READ_COLUMNS),
        "",
        "Writing, a hot-loop figure: `Capture(1.0, write=<list append>).offer(...)` over ready "
        "answers, no inference and no stdout: the most one serving process can produce, not "
        "what a request costs (warm_overhead measures that).",
        "",
        _table("writing", writing, WRITE_COLUMNS),
    ]


def _table(title: str, entries: dict[str, Any], columns: dict[str, str]) -> str:
    def cell(value: Any) -> Any:
        return f"{value:,}" if isinstance(value, int) else value

    rows = [[label, *(cell(e[key]) for key in columns.values())] for label, e in entries.items()]
    return md_table([title, *columns], rows)
