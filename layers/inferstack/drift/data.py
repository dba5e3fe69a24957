"""DATA and CURRENT of `inferstack drift`: .npy, .npz, .csv and capture .jsonl files or
folders, read as batches of tensors by name (inputs, and outputs where the data has them).

Batches stream: a .npy is memory-mapped and sliced, a CSV read a chunk of rows at a time,
capture records grouped into batches, so a check never holds CURRENT whole. Without a
signature, names follow the drift features' rules: a .npy is one tensor `x` (features
`x[0]`, `x[1]`, ...), a CSV with a header names one feature per column, a CSV without one is
`x` again, a .npz names its tensors by key.
"""

from __future__ import annotations

import csv
import gzip
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from inferstack.drift.capture import (
    CAPTURE_SUFFIXES,
    DEFAULT_INPUT,
    CaptureStats,
    Record,
    read_capture,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from datetime import datetime

    from inferstack.drift.capture import Source

CHUNK_ROWS = 65_536
ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".csv.gz")
SUFFIXES = ARRAY_SUFFIXES + CAPTURE_SUFFIXES


class DataError(ValueError):
    """DATA or CURRENT cannot be read; the message says which file and why."""


class Batch(NamedTuple):
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        first = next(iter(self.inputs.values()), None)
        if first is None:
            first = next(iter(self.outputs.values()), np.empty(0))
        return 1 if first.ndim == 0 else len(first)


def iter_batches(
    paths: Sequence[Path | str],
    *,
    stats: CaptureStats | None = None,
    chunk_rows: int = CHUNK_ROWS,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[Batch]:
    """Every row of `paths`, in batches; DataError for what is not data at all.
    `start`/`end` keep the capture records of that window (array files have no times)."""
    stats = stats if stats is not None else CaptureStats()
    signature: dict[str, tuple[int, ...]] | None = None
    first = ""
    for path in _files(paths):
        if path.name.endswith(CAPTURE_SUFFIXES):
            batches = _capture(path, stats, chunk_rows, start, end)
        else:
            batches = _arrays(path, chunk_rows)
        for batch in batches:
            shape = _signature(batch)
            if signature is None:
                signature, first = shape, str(path)
            elif shape != signature:
                raise DataError(
                    f"{path}: its tensors {_describe(shape)} do not match {first}'s "
                    f"{_describe(signature)}"
                )
            yield batch


def load(paths: Sequence[Path | str], *, stats: CaptureStats | None = None) -> Batch:
    """All rows at once (a reference sample: building a baseline needs it whole)."""
    batches = list(iter_batches(paths, stats=stats))
    if not batches:
        raise DataError(f"no rows in {', '.join(str(p) for p in paths)}")
    return Batch(_join([b.inputs for b in batches]), _join([b.outputs for b in batches]))


def _files(paths: Sequence[Path | str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            if not found:
                raise DataError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
            yield from found
        elif not path.exists():
            raise DataError(f"{path}: no such file or folder")
        elif not path.name.endswith(SUFFIXES):
            raise DataError(f"{path}: expected one of {', '.join(SUFFIXES)}")
        else:
            yield path


# --------------------------------------------------------------------------- arrays


def _arrays(path: Path, chunk_rows: int) -> Iterator[Batch]:
    try:
        if path.name.endswith((".csv", ".csv.gz")):
            yield from _csv(path, chunk_rows)
            return
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                tensors = {key: archive[key] for key in archive.files}
        else:
            tensors = {DEFAULT_INPUT: np.load(path, mmap_mode="r", allow_pickle=False)}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable {path.suffix} file ({exc})") from None
    yield from _slices(path, tensors, chunk_rows)


def _slices(path: Path, tensors: dict[str, np.ndarray], chunk_rows: int) -> Iterator[Batch]:
    if not tensors:
        raise DataError(f"{path}: holds no arrays")
    if any(t.ndim == 0 for t in tensors.values()):
        yield Batch({k: np.asarray(v) for k, v in tensors.items()}, {})
        return
    rows = {len(t) for t in tensors.values()}
    if len(rows) != 1:
        raise DataError(f"{path}: its arrays have different row counts {sorted(rows)}")
    total = rows.pop()
    for start in range(0, total, chunk_rows):
        # np.array copies the memory-mapped slice: only one chunk is ever resident.
        yield Batch({k: np.array(v[start : start + chunk_rows]) for k, v in tensors.items()}, {})


def _csv(path: Path, chunk_rows: int) -> Iterator[Batch]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as text:
        reader = csv.reader(text)
        first = next(reader, None)
        if not first:
            raise DataError(f"{path}: empty CSV file")
        header = None if all(_is_number(cell) for cell in first) else [c.strip() for c in first]
        rows = reader if header is not None else chain([first], reader)
        number = 1
        while chunk := [row for row in islice(rows, chunk_rows) if row]:
            width = len(header) if header is not None else len(chunk[0])
            for offset, row in enumerate(chunk):
                if len(row) != width:
                    raise DataError(
                        f"{path}: data row {number + offset} has {len(row)} values, "
                        f"expected {width}"
                    )
            number += len(chunk)
            columns = list(zip(*chunk, strict=True))
            if header is None:
                yield Batch({DEFAULT_INPUT: np.column_stack([_column(c) for c in columns])}, {})
            else:
                yield Batch({name: _column(c) for name, c in zip(header, columns, strict=True)}, {})


def _column(cells: Sequence[str]) -> np.ndarray:
    """Numbers when every present cell is one (empty cells are missing), else strings."""
    text = np.array([c.strip() for c in cells])
    for dtype in (np.int64, np.float64):
        try:
            if dtype is np.float64:
                return np.where(text == "", "nan", text).astype(np.float64)
            if not (text == "").any():
                return text.astype(np.int64)
        except ValueError:
            continue
    return np.array(list(cells), dtype=object)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- capture


def _capture(
    path: Path,
    stats: CaptureStats,
    chunk_rows: int,
    start: datetime | None,
    end: datetime | None,
) -> Iterator[Batch]:
    return capture_batches([path], stats=stats, chunk_rows=chunk_rows, start=start, end=end)


def capture_batches(
    sources: Iterable[Source],
    *,
    stats: CaptureStats,
    chunk_rows: int = CHUNK_ROWS,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[Batch]:
    """Capture records from files or S3 objects, in batches of about `chunk_rows` rows;
    records whose tensors differ from the first one's are skipped and counted."""
    group: list[Record] = []
    shape: dict[str, tuple[int, ...]] | None = None
    rows = 0
    for record in read_capture(sources, start=start, end=end, stats=stats):
        this = _signature(Batch(record.inputs, record.outputs))
        if shape is None:
            shape = this
        elif this != shape:
            stats.mismatched += 1
            stats.note(
                str(record.event_id or record.inference_time),
                f"a record's tensors {_describe(this)} differ from the first's",
            )
            continue
        group.append(record)
        rows += Batch(record.inputs, record.outputs).rows
        if rows >= chunk_rows:
            yield _records_batch(group)
            group, rows = [], 0
    if group:
        yield _records_batch(group)


def _records_batch(records: list[Record]) -> Batch:
    return Batch(_join([r.inputs for r in records]), _join([r.outputs for r in records]))


def _join(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts or not parts[0]:
        return {}
    return {
        name: np.stack([p[name] for p in parts])
        if parts[0][name].ndim == 0
        else np.concatenate([p[name] for p in parts])
        for name in parts[0]
    }


def _signature(batch: Batch) -> dict[str, tuple[int, ...]]:
    """What must agree between batches: the tensors' names and each row's shape (a text
    value where numbers belong is the check's business: a data_type_check violation)."""
    return {
        f"{side}:{name}": a.shape[1:]
        for side, tensors in (("input", batch.inputs), ("output", batch.outputs))
        for name, a in tensors.items()
    }


def _describe(signature: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(
        f"{name.partition(':')[2]}{list(shape) if shape else ''}"
        for name, shape in signature.items()
    )
