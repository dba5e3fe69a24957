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
    md_table,
    model_input,
    onnx_light_model,
    summary,
    work_dir,
)

NAME = "cold_start"
TARGET = "median(candidate) / median(floor) <= 1.3 for each model"
LIMIT = 1.3
CHILD = str(BENCH_DIR / "cold_child.py")
PREIMPORT = "candidate_numpy_first"


def run(config: Config) -> dict[str, Any]:
    reps = config.pick(15, 5)
    models = [demo_model(), onnx_light_model("light_resnet50")]
    commands = {m.name: _commands(m) for m in models}

    # One untimed pass of each: the page cache holds the interpreter, the wheels
    # and the model files for every timed run alike.
    for m in models:
        for kind in ("candidate", "floor"):
            _spawn(*commands[m.name][kind])

    # Diagnostic arm (demo model only; imports do not depend on the model): the same
    # candidate with numpy and onnxruntime imported before the handler module.
    arms = {m.name: ["candidate", "floor"] for m in models}
    arms[models[0].name].append(PREIMPORT)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        m.name: {kind: [] for kind in arms[m.name]} for m in models
    }
    for rep in range(reps):
        for m in models:
            order = arms[m.name] if rep % 2 == 0 else arms[m.name][::-1]
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
            "ratio_of_minimums": round(float(min(total_c) / min(total_f)), 3),
            "paired_ratio": summary(paired, 1.0, 3),
            "overhead_ms_median": round((np.median(total_c) - np.median(total_f)) * 1e3, 1),
            "met": ratio <= LIMIT,
            # Where the time goes, from the children's own clock readings.
            "candidate_phases_ms": _phases(cand, "handler import (init)", "first request"),
            "floor_phases_ms": _phases(floor, "imports + session", "first run"),
        }
        if PREIMPORT in samples[m.name]:
            total_p = [s["total"] for s in samples[m.name][PREIMPORT]]
            results["models"][m.name]["diagnostic_numpy_onnxruntime_first"] = {
                "what": "candidate with `import numpy, onnxruntime` before the handler import",
                "ms": summary(total_p, 1e3, 1),
                "ratio_of_medians_vs_floor": round(
                    float(np.median(total_p) / np.median(total_f)), 3
                ),
                "delta_vs_candidate_ms": round((np.median(total_p) - np.median(total_c)) * 1e3, 1),
            }
    # Diagnostics (untimed by the target): where the candidate's time goes.
    for m in models:
        argv, env = commands[m.name]["profile"]
        steps = [_spawn(argv, env)["profile"] for _ in range(config.pick(5, 2))]
        results["models"][m.name]["candidate_steps_ms"] = {
            key: round(float(np.median([s[key] for s in steps])), 1) for key in steps[0]
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
    profile = [sys.executable, CHILD, "profile", str(event_path), str(body_path)]
    return {
        "candidate": (candidate, env),
        "floor": (floor, env),
        "profile": (profile, env),
        PREIMPORT: ([*candidate, "numpy,onnxruntime"], env),
    }


def _spawn(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=BENCH_DIR.parent
    )
    assert child.stdout is not None
    seen: list[bytes] = []
    steps: dict[str, float] = {}
    for line in child.stdout:
        if line.startswith(b"BENCH-PROFILE "):
            steps = json.loads(line.split(b" ", 1)[1])
        if line.startswith(b"BENCH-OK "):
            end = time.perf_counter()
            child.communicate()
            t_start, t_ready, t_done = (float(x) for x in line.split()[1:4])
            return {
                "total": end - start,
                "startup": t_start - start,
                "ready": t_ready - t_start,
                "request": t_done - t_ready,
                "profile": steps,
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
    by_self = sorted(rows, key=lambda r: -r[1])[:top]
    per_package: dict[str, int] = {}
    for _, self_us, _, module in rows:
        root = module.split(".", 1)[0]
        per_package[root] = per_package.get(root, 0) + self_us
    packages = sorted(per_package.items(), key=lambda kv: -kv[1])[:top]
    cumulative = {}
    for wanted in ("handler", "numpy", "onnxruntime", "aws_lambda_powertools", "orjson"):
        hit = next((r for r in rows if r[3] == wanted), None)
        if hit is not None:
            cumulative[wanted] = round(hit[2] / 1e3, 1)
    return {
        "model": "wine (the imports do not depend on the model)",
        "total_import_ms": round(sum(r[1] for r in rows) / 1e3, 1),
        "by_package_self_ms": [{"package": k, "ms": round(v / 1e3, 1)} for k, v in packages],
        "top_modules_self_ms": [{"module": r[3], "ms": round(r[1] / 1e3, 1)} for r in by_self],
        "cumulative_ms": cumulative,
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


def markdown(result: dict[str, Any]) -> list[str]:
    res = result["results"]
    rows = []
    for name, m in res["models"].items():
        c, f, p = m["candidate_ms"], m["floor_ms"], m["paired_ratio"]
        rows.append(
            [
                f"{name} ({m['model_file']})",
                c["median"],
                c["p90"],
                f["median"],
                f["p90"],
                m["overhead_ms_median"],
                m["ratio_of_medians"],
                f"{p['p10']}..{p['p90']}",
                m["ratio_of_minimums"],
                m["met"],
            ]
        )
    out = [
        f"{res['repetitions']} spawns per arm, interleaved; times in ms from spawn to the "
        "success line.",
        "",
        md_table(
            [
                "model",
                "candidate median",
                "candidate p90",
                "floor median",
                "floor p90",
                "overhead (median)",
                "ratio of medians",
                "paired ratio p10..p90",
                "ratio of minimums",
                "met (<= 1.3)",
            ],
            rows,
        ),
        "",
        "Where the time goes (medians, ms; from the children's own clock; "
        "`candidate steps` is a diagnostic replica of `lambda_entry_from_env`, step by step):",
        "",
    ]
    phase_rows = []
    for name, m in res["models"].items():
        for label, key in (("candidate", "candidate_phases_ms"), ("floor", "floor_phases_ms")):
            phase_rows.append([name, label, ", ".join(f"{k} {v}" for k, v in m[key].items())])
        if "candidate_steps_ms" in m:
            phase_rows.append(
                [
                    name,
                    "candidate steps",
                    ", ".join(f"{k} {v}" for k, v in m["candidate_steps_ms"].items()),
                ]
            )
    out += [md_table(["model", "process", "phases (ms)"], phase_rows), ""]
    for name, m in res["models"].items():
        diag = m.get("diagnostic_numpy_onnxruntime_first")
        if diag:
            out += [
                f"Diagnostic arm, {name}: {diag['what']} (interleaved with the others): "
                f"median {diag['ms']['median']} ms, {diag['delta_vs_candidate_ms']:+} ms vs "
                f"the candidate, ratio vs floor {diag['ratio_of_medians_vs_floor']}.",
                "",
            ]
    imports = res.get("candidate_imports")
    if imports:
        out += [
            f"`python -X importtime` on the candidate ({imports['model']}): "
            f"{imports['total_import_ms']} ms of imports (self times summed; importtime "
            "inflates them).",
            "",
            "Cumulative: "
            + ", ".join(f"`{k}` {v} ms" for k, v in imports["cumulative_ms"].items()),
            "",
            md_table(
                ["package (self time summed)", "ms", "module (self time)", "ms"],
                [
                    [f"`{a['package']}`", a["ms"], f"`{b['module']}`", b["ms"]]
                    for a, b in zip(
                        imports["by_package_self_ms"], imports["top_modules_self_ms"], strict=False
                    )
                ],
            ),
        ]
    return out
