"""SnapStart: the work a snapshot takes off the request path, and what a restore leaves on it.

What can be measured without Lambda (a restore itself is Firecracker's, not ours):

1. Moved out of the request path: a fresh interpreter runs the Lambda init as deployed (the
   model's live release fetched from S3: moto's server on 127.0.0.1), each part timed:
   interpreter start, imports, model fetch, ONNX Runtime session, warm-up, snapshot hooks.
   Without SnapStart a new execution environment pays all of it before its first answer;
   with SnapStart it runs once, when the version is published.
2. Left on the request path after a restore: in one process, the handler as deployed, its
   after-restore hooks run by the Lambda runtime client's own runner (awslambdaric) as a
   restore runs them; then requests. Measured: the hooks (once per restored environment,
   inside Lambda's billed restore duration), the first request after a restore against the
   first request of an initialized environment (both carry the cold-start metrics), and the
   requests after it against warm requests (the same code path: a restore adds nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    FUNCTION_DIR,
    REPO,
    Config,
    LambdaContext,
    demo_model,
    http_api_event,
    json_request_body,
    md_table,
    model_input,
    onnx_light_model,
    scoped_environ,
    work_dir,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchmarks.common import BenchModel

NAME = "snapstart"
TARGET = (
    "requests after a simulated restore cost what warm requests cost (p50 ratio <= 1.1); "
    "the init a snapshot takes off the request path is reported by part"
)
LIMIT = 1.1
BUCKET = "inferstack-bench-models"


def run(config: Config) -> dict[str, Any]:
    models = [demo_model(), onnx_light_model("light_resnet50")]
    results: dict[str, Any] = {"init": {}, "restore": {}}
    with _released(models) as env:
        for model in models:
            results["init"][model.name] = _init_by_part(model, env, config.pick(7, 2))
    results["restore"] = _restore_side(config)
    met = bool(results["restore"]["after_restore_vs_warm_p50"] <= LIMIT)
    return {"name": NAME, "target": TARGET, "met": met, "results": results}


# -- 1. the init, by part --------------------------------------------------------------


@contextlib.contextmanager
def _released(models: list[BenchModel]) -> Iterator[dict[str, str]]:
    """moto's S3 server on loopback with each model released and live, as the promoter
    leaves it; yields the environment a child needs to reach it."""
    import boto3

    from inferstack.release.store import ReleaseStore
    from tests.functional.deployed import versioned_bucket
    from tests.lifecycle_world import CREDENTIALS, moto_server

    with scoped_environ(CREDENTIALS):  # for the boto3 client below
        for endpoint in moto_server():
            s3 = boto3.client("s3", endpoint_url=endpoint)
            versioned_bucket(s3, BUCKET)
            store = ReleaseStore(s3, BUCKET)
            for model in models:
                digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
                artifact = store.put_artifact(model.name, digest, "model.onnx", model.path)
                release = store.create_release(model.name, {"artifact": artifact.to_json()})
                store.set_live(
                    model.name,
                    release.release,
                    by="benchmark",
                    action="promote",
                    reason=None,
                    expected=None,
                )
            yield {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint}


def _init_by_part(model: BenchModel, env: dict[str, str], reps: int) -> dict[str, Any]:
    from benchmarks.cold_start import _commands, _spawn
    from inferstack.names import live_pointer_key

    argv, child_env = _commands(model)["profile"]
    cache = work_dir() / f"snapstart_cache_{model.name}"
    child_env = {
        **child_env,
        **env,
        "INFERSTACK_MODEL_URI": f"s3://{BUCKET}/{live_pointer_key(model.name)}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
    }
    samples = []
    for _ in range(reps + 1):  # the first warms the page cache; not counted
        for path in cache.glob("**/*") if cache.exists() else ():
            if path.is_file():
                path.unlink()  # every init downloads, as a new environment does
        samples.append(_spawn(argv, {**child_env, "INFERSTACK_CACHE_DIR": str(cache)}))
    samples = samples[1:]
    parts = {
        key: round(statistics.median(s["profile"][key] for s in samples), 1)
        for key in samples[0]["profile"]
        if key != "first request"
    }
    start = round(statistics.median(s["startup"] for s in samples) * 1e3, 1)
    ready = round(statistics.median(s["startup"] + s["ready"] for s in samples) * 1e3, 1)
    first = round(statistics.median(s["profile"]["first request"] for s in samples), 1)
    return {
        "runs": reps,
        "interpreter_start_ms": start,
        "parts_ms": parts,
        "ready_ms": ready,  # spawn -> handler ready: what SnapStart moves to publish time
        "first_request_ms": first,
    }


# -- 2. what a restore leaves per request -----------------------------------------------

BLOCK = 20  # requests per block; warm and restored blocks alternate


def _restore_side(config: Config) -> dict[str, Any]:
    """In a fresh interpreter: the handler as deployed (demo model, 2,048 MB: one ONNX
    Runtime thread, metrics and the default capture rate on), initialized for a snapshot."""
    import subprocess

    blocks = config.pick(60, 10)
    env = {
        **os.environ,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "INFERSTACK_MODEL_NAME": demo_model().name,
        "INFERSTACK_MODEL_URI": str(demo_model().path),
        "INFERSTACK_METRICS": "true",
    }
    code = f"from benchmarks.snapstart import _restore_child; _restore_child({blocks})"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, cwd=REPO, check=False
    )
    for line in out.stdout.splitlines():
        if line.startswith(b"BENCH-RESTORE "):
            return dict(json.loads(line.split(b" ", 1)[1]))
    raise RuntimeError(f"restore child failed ({out.returncode}): {out.stderr.decode()[-2000:]}")


def _restore_child(blocks: int) -> None:
    """Blocks of BLOCK requests, alternating: warm (no restore before them) and restored
    (the after-restore hooks run by awslambdaric's runner first, as a restore runs them)."""
    from awslambdaric.lambda_runtime_hooks_runner import run_after_restore, run_before_snapshot

    model = demo_model()
    event = http_api_event(model.name, json_request_body(model.input_name, model_input(model)))
    results = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the EMF lines: written, not kept)
    sys.path.insert(0, str(FUNCTION_DIR))
    from handler import handler  # type: ignore[import-not-found]  # the init, as deployed

    context = LambdaContext()
    clock = time.perf_counter_ns

    def request() -> float:
        began = clock()
        answer = handler(event, context)
        took = (clock() - began) / 1e3
        assert answer["statusCode"] == 200, answer
        return took

    for _ in range(200):
        request()  # warm: ONNX Runtime's first runs, the EMF templates
    run_before_snapshot()
    warm: list[float] = []
    hooks: list[float] = []
    first: list[float] = []
    after: list[float] = []
    for block in range(blocks):
        if block % 2:
            began = clock()
            run_after_restore()
            hooks.append((clock() - began) / 1e3)
            first.append(request())
            after.extend(request() for _ in range(BLOCK - 1))
        else:
            warm.extend(request() for _ in range(BLOCK))
    p50 = {name: statistics.median(v) for name, v in (("warm", warm), ("after", after))}
    summary = {
        "blocks": blocks,
        "after_restore_hooks_p50_us": round(statistics.median(hooks), 1),
        "first_request_after_restore_p50_us": round(statistics.median(first), 1),
        "later_requests_after_restore_p50_us": round(p50["after"], 1),
        "warm_requests_p50_us": round(p50["warm"], 1),
        "after_restore_vs_warm_p50": round(p50["after"] / p50["warm"], 3),
    }
    results.write("BENCH-RESTORE " + json.dumps(summary) + "\n")
    results.flush()


def markdown(result: dict[str, Any]) -> list[str]:
    res = result["results"]
    lines = [
        "Init a snapshot takes off the request path (fresh interpreter, the live release "
        "fetched from S3 on 127.0.0.1; medians, ms):",
        "",
    ]
    names = list(res["init"])
    keys = list(res["init"][names[0]]["parts_ms"])
    rows = [["interpreter start", *(res["init"][n]["interpreter_start_ms"] for n in names)]]
    rows += [[k, *(res["init"][n]["parts_ms"].get(k, "") for n in names)] for k in keys]
    rows.append(["**spawn -> ready**", *(f"**{res['init'][n]['ready_ms']}**" for n in names)])
    rows.append(["first request", *(res["init"][n]["first_request_ms"] for n in names)])
    lines += md_table(["part", *names], rows).splitlines()
    restore = res["restore"]
    lines += [
        "",
        "Left on the request path after a restore (demo model, the handler as deployed, "
        f"{restore['blocks']} blocks of {BLOCK} requests, warm and restored alternating; "
        "a restored block starts with the after-restore hooks, run by awslambdaric's runner). "
        "This process served requests before its snapshot, which Lambda's never does: the "
        "first request of a really restored environment also pays the first-use work that "
        "the init table's `first request` shows for an initialized one.",
        "",
    ]
    lines += md_table(
        ["measure", "value"],
        [
            [
                "after-restore hooks, once per restored environment (p50, us)",
                restore["after_restore_hooks_p50_us"],
            ],
            [
                "first request after a restore (p50, us; ColdStart + RestoredStart metrics)",
                restore["first_request_after_restore_p50_us"],
            ],
            [
                "later requests after a restore (p50, us)",
                restore["later_requests_after_restore_p50_us"],
            ],
            ["warm requests (p50, us)", restore["warm_requests_p50_us"]],
            [f"later / warm (<= {LIMIT})", restore["after_restore_vs_warm_p50"]],
        ],
    ).splitlines()
    return lines
