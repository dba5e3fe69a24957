"""Drift check: quality beside per-feature KS at p < 0.05, and scale.

Quality (64 features, reference 20,000 rows with x[0] and x[1] correlated at 0.8; windows
drawn from the same law unless said):
- false alarms: windows of n = 500 .. 100,000 rows with nothing changed (a window alarms
  when any feature, or the multivariate check, does);
- detection: a 0.2 sigma mean shift in x[5] at n = 5,000 (found = x[5] flagged);
- correlation only: x[0]/x[1] correlation 0.8 -> -0.8 at n = 5,000 (marginals unchanged);
- minimum effect: a 0.02 sigma shift at n = 100,000 (should not alarm).
The seeds' method: scipy.stats.ks_2samp per feature on the full samples, alarm when any
p < 0.05; the same with Bonferroni (p < 0.05 / 64) is shown too.
Scale: 1,000,000 x 64 float32 from a .npy, read in 32,768-row chunks into a profile and
checked, in a child process (its wall time and peak RSS); beside it the naive way: load the
whole array and run ks_2samp per feature against the reference sample.
Capture JSONL throughput (benchmarks/drift_capture.py, no target): records per second read
from data-capture files (the reader, and capture -> profile as the scheduled check), and
written by one serving process's Capture (a hot loop).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import drift_capture
from benchmarks.common import REPO, SEED, Config, md_table, work_dir

NAME = "drift"
TARGET = (
    "false alarms <= 1% of no-drift windows; 0.2 sigma shift in 1 of 64 found >= 95% at "
    "n = 5,000; correlation flip found; no alarm on 0.02 sigma at n = 100,000; "
    "1M x 64 checked in <= 5 s and <= 500 MB RSS"
)
FEATURES = 64
REFERENCE_ROWS = 20_000
RHO = 0.8
SHIFTED = 5
SCALE_ROWS = 1_000_000
CHUNK_ROWS = 32_768
LIMIT_S, LIMIT_MB = 5.0, 500.0
WORKERS = 2


def sample(rng: np.random.Generator, rows: int, *, rho: float = RHO, shift: float = 0.0):
    x = rng.standard_normal((rows, FEATURES))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    x[:, SHIFTED] += shift
    return x


def run(config: Config) -> dict[str, Any]:
    from inferstack.drift import build_baseline

    rng = np.random.default_rng(SEED)
    reference = sample(rng, REFERENCE_ROWS)
    baseline = build_baseline({"x": reference})
    sizes = config.pick(
        {500: 200, 2_000: 150, 5_000: 100, 20_000: 40, 100_000: 12},
        {500: 20, 2_000: 15, 5_000: 10, 20_000: 3, 100_000: 2},
    )
    quality: dict[str, Any] = {"false_alarms": {}}
    totals = {"ours": 0, "ks": 0, "ks_bonferroni": 0, "windows": 0}
    for rows, windows in sizes.items():
        counts = _windows(baseline, reference, rng, rows, windows, {})
        quality["false_alarms"][str(rows)] = counts
        for key in ("ours", "ks", "ks_bonferroni", "windows"):
            totals[key] += counts[key]
    quality["false_alarms"]["all"] = totals
    quality["shift_0.2_sigma_n5000"] = _windows(
        baseline, reference, rng, 5_000, config.pick(100, 20), {"shift": 0.2}, SHIFTED
    )
    quality["correlation_flip_n5000"] = _windows(
        baseline, reference, rng, 5_000, config.pick(40, 5), {"rho": -RHO}, None
    )
    quality["shift_0.02_sigma_n100000"] = _windows(
        baseline, reference, rng, 100_000, config.pick(12, 2), {"shift": 0.02}, SHIFTED
    )
    scale = _scale(baseline, reference)
    capture = drift_capture.run(config, work_dir() / "drift" / "capture")

    def rate(entry: dict[str, Any], key: str) -> float:
        return entry[key] / entry["windows"]

    met = (
        rate(totals, "ours") <= 0.01
        and rate(quality["shift_0.2_sigma_n5000"], "ours_found") >= 0.95
        and rate(quality["correlation_flip_n5000"], "ours") >= 0.95
        and quality["shift_0.02_sigma_n100000"]["ours"] == 0
        and scale["ours"]["seconds"] <= LIMIT_S
        and scale["ours"]["peak_rss_mb"] <= LIMIT_MB
    )
    return {
        "name": NAME,
        "target": TARGET,
        "met": met,
        "results": {
            "status": "measured",
            "reference_rows": REFERENCE_ROWS,
            "features": FEATURES,
            "quality": quality,
            "scale": scale,
            "capture": capture,
        },
    }


def _windows(
    baseline: Any,
    reference: np.ndarray,
    rng: np.random.Generator,
    rows: int,
    windows: int,
    change: dict[str, float],
    target: int | None = None,
) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    from inferstack.drift import check

    counts = {"windows": windows, "ours": 0, "ks": 0, "ks_bonferroni": 0}
    counts |= {"ours_found": 0, "ks_found": 0, "ours_flagged": 0, "ks_flagged": 0}
    seconds = {"ours": 0.0, "ks": 0.0}
    for _ in range(windows):
        window = sample(rng, rows, **change)
        began = time.perf_counter()
        result = check(baseline, baseline.profile_tensors({"x": window}))
        seconds["ours"] += time.perf_counter() - began
        flagged = {f.feature.name for f in result.features if f.drift}
        began = time.perf_counter()
        pvalues = ks_2samp(reference, window, axis=0).pvalue
        seconds["ks"] += time.perf_counter() - began
        counts["ours"] += result.drift
        counts["ks"] += bool((pvalues < 0.05).any())
        counts["ks_bonferroni"] += bool((pvalues < 0.05 / FEATURES).any())
        counts["ours_flagged"] += len(flagged)
        counts["ks_flagged"] += int((pvalues < 0.05).sum())
        if target is not None:
            counts["ours_found"] += f"x[{target}]" in flagged
            counts["ks_found"] += bool(pvalues[target] < 0.05)
    counts["seconds_per_window"] = {k: round(v / windows, 4) for k, v in seconds.items()}
    return counts


# --------------------------------------------------------------------------- scale


def _scale(baseline: Any, reference: np.ndarray) -> dict[str, Any]:
    folder = work_dir() / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "window_1m_x64.npy"
    if not data.exists() or np.load(data, mmap_mode="r").shape != (SCALE_ROWS, FEATURES):
        _write_window(data)
    baseline.save(folder / "baseline")
    np.save(folder / "reference.npy", reference.astype(np.float32))
    return {
        "rows": SCALE_ROWS,
        "features": FEATURES,
        "file_mb": round(data.stat().st_size / 2**20, 1),
        "ours": _child("ours", data, folder),
        "naive_full_sample_ks": _child("naive", data, folder),
    }


def _write_window(path: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (SCALE_ROWS, FEATURES))
    for start in range(0, SCALE_ROWS, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, SCALE_ROWS - start)
        out[start : start + rows] = sample(rng, rows)
    out.flush()
    del out


def _child(mode: str, data: Path, folder: Path) -> dict[str, Any]:
    # One BLAS thread per process: OpenBLAS's spinning threads slow a busy 2-core box 20x.
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'layers'}{os.pathsep}{REPO}",
        "OPENBLAS_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.drift", mode, str(data), str(folder)],
        capture_output=True, text=True, check=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def read_npy_chunks(path: Path, rows: int):
    """Yield row chunks of a 2-D .npy with plain reads (no memory map: RSS stays bounded)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
        assert not fortran and len(shape) == 2
        total, width = shape
        for start in range(0, total, rows):
            count = min(rows, total - start)
            yield np.fromfile(handle, dtype=dtype, count=count * width).reshape(count, width)


def _child_ours(data: Path, folder: Path) -> dict[str, Any]:
    """Two worker processes (the machine's two cores) profile alternate chunks; merged."""
    from concurrent.futures import ProcessPoolExecutor

    from inferstack.drift import Baseline, Profile, check

    baseline = Baseline.load(folder / "baseline")
    began = time.perf_counter()
    profile = baseline.new_profile()
    # Spawned workers: a forked one would count the parent's pages in its RSS as well.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        parts = list(pool.map(_profile_part, [(data, folder, w) for w in range(WORKERS)]))
    for part, _ in parts:
        profile.merge(Profile.from_dict(part))
    result = check(baseline, profile)
    seconds = time.perf_counter() - began
    own = peak_rss_mb()
    workers = [peak for _, peak in parts]
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(_cpu_seconds(), 2),
        # The processes' peaks added: an upper bound of what they held at once.
        "peak_rss_mb": round(own + sum(workers), 1),
        "parent_rss_mb": round(own, 1),
        "worker_rss_mb": [round(w, 1) for w in workers],
        "workers": WORKERS,
        "rows": profile.rows,
        "drift": result.drift,
        "score": round(result.score, 3),
    }


def _profile_part(job: tuple[Path, Path, int]) -> tuple[dict[str, Any], float]:
    from inferstack.drift import Baseline

    data, folder, worker = job
    baseline = Baseline.load(folder / "baseline")
    profile = baseline.new_profile()
    for index, chunk in enumerate(read_npy_chunks(data, CHUNK_ROWS)):
        if index % WORKERS == worker:
            window = baseline.new_profile()
            window.update(baseline.columns({"x": chunk})[0])
            profile.merge(window)
    return profile.to_dict(), peak_rss_mb()


def _child_naive(data: Path, folder: Path) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    began = time.perf_counter()
    window = np.load(data).astype(np.float64)
    reference = np.load(folder / "reference.npy").astype(np.float64)
    pvalues = ks_2samp(reference, window, axis=0).pvalue
    seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(_cpu_seconds(), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "drift": bool((pvalues < 0.05).any()),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: getrusage's ru_maxrss survives exec, so a child
    started from a big benchmark process would report the benchmark's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """User + system time of this process and its finished workers (wall time depends on
    what else the machine runs; this does not)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# --------------------------------------------------------------------------- report


def markdown(result: dict[str, Any]) -> list[str]:
    res = result["results"]
    quality, scale = res["quality"], res["scale"]

    def pct(entry: dict[str, Any], key: str) -> str:
        return f"{100 * entry[key] / entry['windows']:.1f}%"

    rows = []
    for size, entry in quality["false_alarms"].items():
        label = "all sizes" if size == "all" else f"n = {int(size):,}"
        rows.append([f"false alarms, {label}", entry["windows"], pct(entry, "ours"),
                     pct(entry, "ks"), pct(entry, "ks_bonferroni")])  # fmt: skip
    shift = quality["shift_0.2_sigma_n5000"]
    rows.append(["0.2 sigma shift in 1 of 64 found, n = 5,000", shift["windows"],
                 pct(shift, "ours_found"), pct(shift, "ks_found"), "-"])  # fmt: skip
    flip = quality["correlation_flip_n5000"]
    rows.append(["correlation flip (marginals unchanged) alarms, n = 5,000", flip["windows"],
                 pct(flip, "ours"), pct(flip, "ks"), pct(flip, "ks_bonferroni")])  # fmt: skip
    tiny = quality["shift_0.02_sigma_n100000"]
    rows.append(["0.02 sigma shift alarms, n = 100,000", tiny["windows"], pct(tiny, "ours"),
                 pct(tiny, "ks"), pct(tiny, "ks_bonferroni")])  # fmt: skip
    ours, naive = scale["ours"], scale["naive_full_sample_ks"]
    capture = ["", *drift_capture.markdown(res["capture"])] if "capture" in res else []
    return [
        f"{res['features']} features, reference {res['reference_rows']:,} rows. A window "
        "alarms when any check does. The KS columns alarm on the flip only through their "
        "false alarms (no per-feature test sees a correlation).",
        "",
        md_table(
            ["measure", "windows", "inferstack", "KS p < 0.05 per feature", "KS Bonferroni"],
            rows,
        ),
        "",
        f"Scale: {scale['rows']:,} x {scale['features']} float32 ({scale['file_mb']} MB .npy).",
        "",
        md_table(
            ["method", "seconds", "CPU seconds", "peak RSS MB", "drift"],
            [
                [
                    f"inferstack ({ours['workers']} processes, 32,768-row chunks, merged)",
                    ours["seconds"],
                    ours["cpu_seconds"],
                    ours["peak_rss_mb"],
                    ours["drift"],
                ],
                [
                    "naive: whole array + ks_2samp per feature",
                    naive["seconds"],
                    naive["cpu_seconds"],
                    naive["peak_rss_mb"],
                    naive["drift"],
                ],
            ],
        ),
        *capture,
    ]


if __name__ == "__main__":
    # Child processes of the scale benchmark: python -m benchmarks.drift ours|naive DATA DIR
    handler = {"ours": _child_ours, "naive": _child_naive}[sys.argv[1]]
    print(json.dumps(handler(Path(sys.argv[2]), Path(sys.argv[3]))))
