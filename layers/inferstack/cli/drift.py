"""`inferstack drift baseline | check`: the scheduled drift check's code, on a laptop.

    inferstack drift baseline DATA... --out DIR
    inferstack drift check --baseline DIR CURRENT... [--report report.html] [--json]

DATA and CURRENT are .npy, .npz, .csv or data-capture .jsonl(.gz) files, or folders of
them. Exit status: 0 no drift, 1 drift, 2 bad input or too few rows to decide (the message
says which; never a traceback). The statistics (numpy, datasketches) load only when a
command runs: `inferstack validate` and friends do not pay for them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from inferstack.drift.baseline import Baseline
    from inferstack.drift.capture import CaptureStats
    from inferstack.drift.profile import Profile

NO_DRIFT, DRIFT, BAD_INPUT = 0, 1, 2
SHOWN = 20  # feature rows in the terminal table (the report has them all)

drift_app = typer.Typer(
    name="drift",
    help="Compare data with a release's baseline: the scheduled drift check, run locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataArgument = Annotated[
    list[Path],
    typer.Argument(help=".npy, .npz, .csv or capture .jsonl files, or folders of them"),
]


@drift_app.command()
def baseline(
    data: DataArgument,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the baseline's files")],
) -> None:
    """Compute a baseline (statistics.json, constraints.json, baseline.json) from DATA."""
    from inferstack.drift.baseline import build_baseline
    from inferstack.drift.data import load

    stats = _capture_stats()
    with _bad_input():
        batch = load(data, stats=stats)
        built = build_baseline(batch.inputs, batch.outputs or None)
        out_dir.mkdir(parents=True, exist_ok=True)
        built.save(out_dir)
    _say_skipped(stats)
    err.print(
        f"baseline of {batch.rows:,} rows written to {out_dir} "
        "(statistics.json, constraints.json, baseline.json)"
    )


@drift_app.command()
def check(
    current: DataArgument,
    *,
    baseline_dir: Annotated[
        Path, typer.Option("--baseline", help="a folder `drift baseline` (or a release) wrote")
    ],
    report: Annotated[Path | None, typer.Option(help="write the HTML report here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    start: Annotated[
        str | None, typer.Option(help="capture records from this time on (ISO 8601, UTC)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="capture records before this time")] = None,
) -> None:
    """Compare CURRENT with the baseline: exit 0 no drift, 1 drift, 2 bad input."""
    from inferstack.drift.compare import check as compare
    from inferstack.drift.data import iter_batches
    from inferstack.drift.report import headline, render_html

    stats = _capture_stats()
    with _bad_input():
        window = [_time(t, name) for t, name in ((start, "--start"), (end, "--end"))]
        reference = _load_baseline(baseline_dir)
        profile = reference.new_profile()
        for batch in iter_batches(current, stats=stats, start=window[0], end=window[1]):
            # One profile per batch, merged: the sketches' own way to combine chunks.
            profile.merge(reference.profile_tensors(batch.inputs, batch.outputs or None))
        if profile.rows == 0:
            _refuse(f"no rows in {', '.join(map(str, current))}{_skipped_note(stats)}")
        _same_features(reference, profile)
        summary = compare(reference, profile).to_json()
    if stats.lines:
        summary["skipped"] = stats.as_dict()
    if start or end:
        summary["window"] = {"start": start, "end": end}
    if report is not None:
        with _bad_input():
            report.write_text(render_html(summary), encoding="utf-8")
    _say_skipped(stats)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary, headline(summary))
    if report is not None:
        err.print(f"report: {report}")
    if not summary["enough_rows"]:
        raise typer.Exit(BAD_INPUT)
    raise typer.Exit(DRIFT if summary["drift"] else NO_DRIFT)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _bad_input() -> Iterator[None]:
    """What bad input raises becomes a message and exit status 2, never a traceback."""
    try:
        yield
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        _refuse(str(exc) or type(exc).__name__)


def _time(value: str | None, option: str) -> datetime | None:
    from inferstack.drift.capture import parse_time

    try:
        return None if value is None else parse_time(value)
    except ValueError as exc:
        _refuse(f"{option}: {exc} (for example 2026-03-01T10:00:00Z)")


def _load_baseline(directory: Path) -> Baseline:
    from inferstack.drift.baseline import Baseline

    if not directory.is_dir():
        _refuse(f"--baseline {directory}: not a folder")
    try:
        return Baseline.load(directory)
    except (ValueError, OSError) as exc:  # BaselineError is a ValueError
        _refuse(f"--baseline {directory}: not a readable baseline ({exc})")


def _same_features(reference: Baseline, profile: Profile) -> None:
    """CURRENT must describe the baseline's inputs: a different feature set is a mistake
    (the wrong file, or the wrong model), not drift."""
    expected = [f.name for f in reference.features if f.source == "input"]
    got = [n for n, f in profile.features.items() if f.source == "input"]
    if set(expected) != set(got):
        missing = [n for n in expected if n not in got]
        extra = [n for n in got if n not in expected]
        detail = "; ".join(
            part
            for part in (
                f"missing {_names(missing)}" if missing else "",
                f"not in the baseline {_names(extra)}" if extra else "",
            )
            if part
        )
        _refuse(
            f"CURRENT's {len(got)} input features are not the baseline's {len(expected)}: {detail}"
        )


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _print(summary: dict[str, Any], verdict: str) -> None:
    rows = summary["rows"]
    colour = "red" if summary["drift"] else ("yellow" if not summary["enough_rows"] else "green")
    out.print(f"[bold {colour}]{verdict}[/]")
    out.print(
        f"score {summary['score']:.3g} (drift above 1) · {rows['current']:,} rows against "
        f"{rows['reference']:,} in the baseline"
    )
    features = sorted(
        summary["features"],
        key=lambda f: -(f["distance"] / f["threshold"]) if f["threshold"] else 0.0,
    )
    table = Table("feature", "method", "distance", "threshold", "drift")
    for feature in features[:SHOWN]:
        table.add_row(
            feature["name"],
            feature["method"],
            f"{feature['distance']:.4g}",
            f"{feature['threshold']:.4g}",
            "[red]yes[/]" if feature["drift"] else "no",
        )
    out.print(table)
    if len(features) > SHOWN:
        out.print(f"... and {len(features) - SHOWN} more features (see --report or --json)")
    multivariate = summary.get("multivariate")
    if multivariate:
        out.print(
            f"joint distribution: error {multivariate['error']:.4g} against "
            f"{multivariate['threshold']:.4g}: {'drift' if multivariate['drift'] else 'no drift'}"
        )
    violations = summary.get("violations") or []
    if violations:
        out.print(f"[bold]{len(violations)} violations[/] (violations.json's checks):")
        for item in violations[:SHOWN]:
            out.print(
                f"  {item['feature_name']}: {item['constraint_check_type']}: {item['description']}",
                markup=False,
            )


def _capture_stats() -> CaptureStats:
    from inferstack.drift.capture import CaptureStats

    return CaptureStats()


def _skipped_note(stats: CaptureStats) -> str:
    if not stats.skipped:
        return ""
    return f" ({stats.skipped} capture lines skipped: {'; '.join(stats.problems)})"


def _say_skipped(stats: CaptureStats) -> None:
    if stats.skipped:
        err.print(
            f"skipped {stats.bad_lines} bad lines, {stats.undecodable} undecodable bodies and "
            f"{stats.mismatched} records of another shape; first: {'; '.join(stats.problems)}"
        )


def _refuse(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(BAD_INPUT)
