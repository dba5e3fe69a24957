"""`inferstack drift baseline | check` on files: .npy, .csv, capture .jsonl and folders.

Exit status 0 no drift, 1 drift, 2 bad input; bad input is a one-line message, never a
traceback. The sub-app is mounted here as cli/lifecycle.py mounts it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from inferstack.cli.drift import drift_app
from inferstack.drift.data import DataError, iter_batches, load

from .drift_capture_records import json_record, record

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

app = typer.Typer()
app.add_typer(drift_app, name="drift")
ROWS, FEATURES = 3000, 4


def inferstack(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def gaussian(seed: int, rows: int = ROWS, shift: float = 0.0, column: int = 2) -> np.ndarray:
    data = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    data[:, column] += shift
    return data


def summary_of(result: Result) -> dict[str, Any]:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return json.loads(result.stdout)


def refused(result: Result, *words: str) -> str:
    """Exit 2 with a message (on stderr) that has `words`, and no traceback anywhere."""
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def baseline_dir(tmp_path: Path) -> Path:
    np.save(tmp_path / "reference.npy", gaussian(1))
    result = inferstack("drift", "baseline", tmp_path / "reference.npy", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    return tmp_path / "b"


def test_baseline_writes_sagemaker_files(baseline_dir: Path) -> None:
    statistics = json.loads((baseline_dir / "statistics.json").read_text())
    constraints = json.loads((baseline_dir / "constraints.json").read_text())
    assert statistics["dataset"]["item_count"] == ROWS
    assert [f["name"] for f in statistics["features"]] == [f"x[{i}]" for i in range(FEATURES)]
    assert [f["name"] for f in constraints["features"]] == [f"x[{i}]" for i in range(FEATURES)]
    assert (baseline_dir / "baseline.json").is_file()


def test_the_same_distribution_is_no_drift(tmp_path: Path, baseline_dir: Path) -> None:
    np.save(tmp_path / "current.npy", gaussian(2, rows=2000))
    result = inferstack(
        "drift", "check", "--baseline", baseline_dir, tmp_path / "current.npy", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = summary_of(result)
    assert summary["drift"] is False
    assert summary["rows"] == {"reference": ROWS, "current": 2000}
    assert [f["name"] for f in summary["features"]] == [f"x[{i}]" for i in range(FEATURES)]
    for feature in summary["features"]:
        assert {"name", "kind", "method", "distance", "threshold", "drift"} <= set(feature)
    assert "multivariate" in summary


def test_a_shifted_feature_is_drift_named_in_json_and_report(
    tmp_path: Path, baseline_dir: Path
) -> None:
    np.save(tmp_path / "current.npy", gaussian(3, rows=2000, shift=0.5))
    page = tmp_path / "report.html"
    args = ("drift", "check", "--baseline", baseline_dir, tmp_path / "current.npy")
    result = inferstack(*args, "--json", "--report", page)
    assert result.exit_code == 1, result.output
    summary = summary_of(result)
    assert summary["drift"] is True
    assert [f["name"] for f in summary["features"] if f["drift"]] == ["x[2]"]
    assert "Drift in 1 feature (x[2])" in page.read_text()
    table = inferstack(*args)
    assert table.exit_code == 1 and "Drift in 1 feature (x[2])" in table.stdout


def test_folders_and_several_files_are_one_window(tmp_path: Path, baseline_dir: Path) -> None:
    (tmp_path / "w").mkdir()
    np.save(tmp_path / "w" / "a.npy", gaussian(4, rows=700, shift=0.5))
    np.save(tmp_path / "w" / "b.npy", gaussian(5, rows=800, shift=0.5))
    np.save(tmp_path / "c.npy", gaussian(6, rows=500, shift=0.5))
    result = inferstack(
        "drift", "check", "--baseline", baseline_dir, tmp_path / "w", tmp_path / "c.npy", "--json"
    )
    assert result.exit_code == 1
    assert summary_of(result)["rows"]["current"] == 2000


def test_capture_jsonl_is_checked_against_an_npy_baseline(
    tmp_path: Path, baseline_dir: Path
) -> None:
    """A request's tensor `x` is the .npy's `x`: capture from the service checks against a
    baseline made from the reference sample. Bad lines are skipped and counted."""
    rows = gaussian(7, rows=1000, shift=0.5)
    lines = [
        json_record(f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}Z", rows[i : i + 10])
        for i in range(0, 1000, 10)
    ]
    lines.insert(5, "{not json")
    (tmp_path / "capture" / "2026" / "03").mkdir(parents=True)
    (tmp_path / "capture" / "2026" / "03" / "x.jsonl").write_text("\n".join(lines) + "\n")
    result = inferstack(
        "drift", "check", "--baseline", baseline_dir, tmp_path / "capture", "--json"
    )
    assert result.exit_code == 1, result.output
    summary = summary_of(result)
    assert summary["rows"]["current"] == 1000
    assert summary["skipped"]["bad_lines"] == 1
    assert "skipped 1 bad lines" in " ".join(result.stderr.split())


def test_csv_with_a_header_names_features_by_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)

    def write(path: Path, colours: list[str], rows: int) -> None:
        lines = ["alcohol,colour"] + [
            f"{rng.normal():.5f},{rng.choice(colours)}" for _ in range(rows)
        ]
        path.write_text("\n".join(lines) + "\n")

    write(tmp_path / "ref.csv", ["red", "white"], 2000)
    write(tmp_path / "cur.csv", ["red", "red", "red", "white"], 2000)
    assert (
        inferstack("drift", "baseline", tmp_path / "ref.csv", "--out", tmp_path / "b").exit_code
        == 0
    )
    result = inferstack(
        "drift", "check", "--baseline", tmp_path / "b", tmp_path / "cur.csv", "--json"
    )
    features = {f["name"]: f for f in summary_of(result)["features"]}
    assert result.exit_code == 1
    assert features["colour"]["kind"] == "categorical" and features["colour"]["drift"] is True
    assert features["alcohol"]["kind"] == "numeric" and features["alcohol"]["drift"] is False


# --------------------------------------------------------------------------- bad input


def test_a_different_feature_count_is_refused(tmp_path: Path, baseline_dir: Path) -> None:
    np.save(tmp_path / "wide.npy", np.zeros((500, FEATURES + 1), dtype=np.float32))
    result = inferstack("drift", "check", "--baseline", baseline_dir, tmp_path / "wide.npy")
    refused(result, "CURRENT's 5 input features are not the baseline's 4", "x[4]")


def test_an_empty_window_is_refused(tmp_path: Path, baseline_dir: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("{not json\n" + json.dumps({"a": 1}) + "\n")
    result = inferstack("drift", "check", "--baseline", baseline_dir, tmp_path / "empty.jsonl")
    refused(result, "no rows in", "empty.jsonl:1: not JSON")


def test_too_few_rows_decide_nothing(tmp_path: Path, baseline_dir: Path) -> None:
    np.save(tmp_path / "few.npy", gaussian(9, rows=20, shift=3.0))
    result = inferstack(
        "drift", "check", "--baseline", baseline_dir, tmp_path / "few.npy", "--json"
    )
    assert result.exit_code == 2
    summary = summary_of(result)
    assert summary["drift"] is False and summary["enough_rows"] is False
    assert "20 rows" in summary["reason"]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.npy", None, ["missing.npy: no such file or folder"]),
        ("broken.npy", b"not numpy", ["broken.npy: not a readable .npy file"]),
        ("data.parquet", b"PAR1", ["data.parquet: expected one of"]),
        ("ragged.csv", b"a,b\n1,2\n3\n", ["ragged.csv: data row 2 has 1 values, expected 2"]),
    ],
)
def test_unreadable_data_is_refused(
    tmp_path: Path, baseline_dir: Path, name: str, content: bytes | None, words: list[str]
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    refused(inferstack("drift", "check", "--baseline", baseline_dir, tmp_path / name), *words)
    refused(inferstack("drift", "baseline", tmp_path / name, "--out", tmp_path / "o"), *words)


def test_a_folder_that_is_not_a_baseline_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", gaussian(10))
    result = inferstack("drift", "check", "--baseline", tmp_path / "nothing", tmp_path / "c.npy")
    refused(result, "nothing: not a folder")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "baseline.json").write_text("{oops")
    refused(
        inferstack("drift", "check", "--baseline", tmp_path / "junk", tmp_path / "c.npy"),
        "not a readable baseline",
    )


def test_files_of_different_shapes_are_not_one_dataset(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((10, 3)))
    np.save(tmp_path / "b.npy", np.zeros((10, 4)))
    with pytest.raises(DataError, match=r"b.npy: its tensors x\[4\] do not match .*a.npy's x\[3\]"):
        load([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_capture_records_of_another_shape_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = [
        json_record("2026-03-01T10:00:00Z", np.ones((2, 3))),
        json_record("2026-03-01T10:00:01Z", np.ones((1, 5))),
    ]
    lines.append(record("2026-03-01T10:00:02Z", None))
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    from inferstack.drift.capture import CaptureStats

    stats = CaptureStats()
    batches = list(iter_batches([tmp_path / "c.jsonl"], stats=stats))
    assert [b.inputs["x"].shape for b in batches] == [(2, 3)]
    assert stats.mismatched == 2


def test_a_big_npy_is_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    data = np.arange(10_000 * 2, dtype=np.float64).reshape(10_000, 2)
    np.save(tmp_path / "big.npy", data)
    sizes = [b.rows for b in iter_batches([tmp_path / "big.npy"], chunk_rows=4096)]
    assert sizes == [4096, 4096, 1808]


def test_data_quality_violations_are_printed(tmp_path: Path, baseline_dir: Path) -> None:
    current = gaussian(12, rows=2000)
    current[::2, 1] = np.nan
    np.save(tmp_path / "holes.npy", current)
    result = inferstack("drift", "check", "--baseline", baseline_dir, tmp_path / "holes.npy")
    assert result.exit_code == 0, result.output
    assert "x[1]: completeness_check:" in result.stdout


def test_a_window_keeps_the_capture_records_of_its_times(
    tmp_path: Path, baseline_dir: Path
) -> None:
    """The first half hour is the reference's distribution, the second is shifted: the
    window decides what is compared, on inferenceTime."""
    calm, moved = gaussian(13, rows=1500), gaussian(14, rows=1500, shift=0.5)
    lines = [
        json_record(f"2026-03-01T10:{i // 50:02d}:00Z", calm[i : i + 50])
        for i in range(0, 1500, 50)
    ]
    lines += [
        json_record(f"2026-03-01T10:{30 + i // 50:02d}:00Z", moved[i : i + 50])
        for i in range(0, 1500, 50)
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    args = ("drift", "check", "--baseline", baseline_dir, tmp_path / "c.jsonl", "--json")
    first = inferstack(*args, "--end", "2026-03-01T10:30:00Z")
    second = inferstack(*args, "--start", "2026-03-01T10:30:00Z")
    assert (first.exit_code, second.exit_code) == (0, 1)
    assert summary_of(first)["rows"]["current"] == summary_of(second)["rows"]["current"] == 1500
    assert summary_of(second)["skipped"]["outside_window"] == 30
    refused(inferstack(*args, "--start", "last tuesday"), "--start: 'last tuesday' is not")
