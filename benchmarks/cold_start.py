"""Cold start: process spawn -> first successful response through the Lambda handler.

Candidate: a fresh interpreter imports functions/inference/handler.py (settings,
telemetry, model load and warm-up at module scope) and serves one HTTP API v2 event
(POST /v2/models/<m>/infer, JSON body). Floor: a fresh interpreter that imports numpy
and onnxruntime, creates the InferenceSession and runs once on the same tensor.
Both are timed by the parent from just before spawn to the child's success line;
candidate and floor alternate (ABBA order), so drift hits both alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import (
    BENCH_DIR,
    FUNCTION_DIR,
    BenchModel,
    Config,
    demo_model,
    http_api_event,
    json_request_body,
    model_input,
    onnx_light_model,
    summary,
    work_dir,
)

NAME = "cold_start"
TARGET = "median(candidate) / median(floor) <= 1.3 for each model"
LIMIT = 1.3
CHILD = str(BENCH_DIR / "cold_child.py")


def run(config: Config) -> dict[str, Any]:
    reps = config.pick(15, 5)
    models = [demo_model(), onnx_light_model("light_resnet50")]
    commands = {m.name: _commands(m) for m in models}

    # One untimed pass of each: the page cache holds the interpreter, the wheels
    # and the model files for every timed run alike.
    for m in models:
        for kind in ("candidate", "floor"):
            _spawn(*commands[m.name][kind])

    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        m.name: {"candidate": [], "floor": []} for m in models
    }
    for rep in range(reps):
        for m in models:
            order = ("candidate", "floor") if rep % 2 == 0 else ("floor", "candidate")
            for kind in order:
                samples[m.name][kind].append(_spawn(*commands[m.name][kind]))

    results: dict[str, Any] = {"repetitions": reps, "models": {}}
    met = True
    for m in models:
        cand, floor = samples[m.name]["candidate"], samples[m.name]["floor"]
        total_c = [s["total"] for s in cand]
        total_f = [s["total"] for s in floor]
        ratio = float(np.median(total_c) / np.median(total_f))
        paired = [c / f for c, f in zip(total_c, total_f, strict=True)]
        met = met and ratio <= LIMIT
        results["models"][m.name] = {
            "model_file": m.path.name,
            "request": f"JSON body, {list(m.input_shape)} FP32",
            "candidate_ms": summary(total_c, 1e3, 1),
            "floor_ms": summary(total_f, 1e3, 1),
            "ratio_of_medians": round(ratio, 3),
            "paired_ratio": summary(paired, 1.0, 3),
            "overhead_ms_median": round((np.median(total_c) - np.median(total_f)) * 1e3, 1),
            "met": ratio <= LIMIT,
            # Where the time goes, from the children's own clock readings.
            "candidate_phases_ms": _phases(cand, "handler import (init)", "first request"),
            "floor_phases_ms": _phases(floor, "imports + session", "first run"),
        }
    results["candidate_imports"] = import_profile(*commands[models[0].name]["candidate"])
    return {"name": NAME, "target": TARGET, "met": met, "results": results}


def _commands(model: BenchModel) -> dict[str, tuple[list[str], dict[str, str]]]:
    work = work_dir()
    array = model_input(model)
    body = json_request_body(model.input_name, array)
    event = http_api_event(model.name, body)
    event.pop("body")
    event_path = work / f"cold_event_{model.name}.json"
    body_path = work / f"cold_body_{model.name}.json"
    npy_path = work / f"cold_input_{model.name}.npy"
    event_path.write_text(json.dumps(event))
    body_path.write_bytes(body)
    np.save(npy_path, array)
    env = dict(os.environ)
    env.update(
        {
            "INFERSTACK_MODEL_NAME": model.name,
            "INFERSTACK_MODEL_URI": str(model.path),
            "INFERSTACK_METRICS": "true",  # on, as deployed
        }
    )
    for key in ("PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"):
        env.pop(key, None)
    candidate = [sys.executable, CHILD, "candidate", str(event_path), str(body_path)]
    candidate.append(str(FUNCTION_DIR))
    floor = [sys.executable, CHILD, "floor", str(model.path), model.input_name, str(npy_path)]
    return {"candidate": (candidate, env), "floor": (floor, env)}


def _spawn(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=BENCH_DIR.parent
    )
    assert child.stdout is not None
    seen: list[bytes] = []
    for line in child.stdout:
        if line.startswith(b"BENCH-OK "):
            end = time.perf_counter()
            child.communicate()
            t_start, t_ready, t_done = (float(x) for x in line.split()[1:4])
            return {
                "total": end - start,
                "startup": t_start - start,
                "ready": t_ready - t_start,
                "request": t_done - t_ready,
            }
        seen.append(line)
    _, err = child.communicate()
    raise RuntimeError(
        f"cold-start child failed (exit {child.returncode}): {argv[2]}\n"
        + b"".join(seen[-5:]).decode(errors="replace")
        + err.decode(errors="replace")[-2000:]
    )


def _phases(samples: list[dict[str, float]], ready: str, request: str) -> dict[str, float]:
    return {
        "interpreter start": round(float(np.median([s["startup"] for s in samples])) * 1e3, 1),
        ready: round(float(np.median([s["ready"] for s in samples])) * 1e3, 1),
        request: round(float(np.median([s["request"] for s in samples])) * 1e3, 1),
    }


def import_profile(argv: list[str], env: dict[str, str], top: int = 12) -> dict[str, Any]:
    """`python -X importtime` on the candidate child (untimed): the costliest imports."""
    run = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        capture_output=True,
        env=env,
        cwd=BENCH_DIR.parent,
        check=True,
    )
    rows = _parse_importtime(run.stderr.decode(errors="replace"))
    top_level = sorted((r for r in rows if r[0] == 0), key=lambda r: -r[2])[:top]
    by_self = sorted(rows, key=lambda r: -r[1])[:top]
    packages = {}
    for wanted in ("numpy", "onnxruntime", "aws_lambda_powertools", "orjson", "inferstack"):
        hit = next((r for r in rows if r[3] == wanted), None)
        if hit is not None:
            packages[wanted] = round(hit[2] / 1e3, 1)
    return {
        "model": "demo (imports do not depend on the model)",
        "total_import_ms": round(sum(r[2] for r in rows if r[0] == 0) / 1e3, 1),
        "top_level_cumulative_ms": [
            {"module": r[3], "ms": round(r[2] / 1e3, 1)} for r in top_level
        ],
        "top_self_ms": [{"module": r[3], "ms": round(r[1] / 1e3, 1)} for r in by_self],
        "package_cumulative_ms": packages,
    }


def _level(name: str) -> int:
    return (len(name) - len(name.lstrip(" ")) - 1) // 2


def _parse_importtime(text: str) -> list[tuple[int, int, int, str]]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        body = line[len("import time:") :]
        self_us, cumulative_us, name = body.split("|", 2)
        rows.append((_level(name), int(self_us), int(cumulative_us), name.strip()))
    return rows
