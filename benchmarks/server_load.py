"""Server load: `inferstack serve` under 32 concurrent keep-alive clients.

Two comparisons, measured in the same run:

- against a minimal server (benchmarks/minimal_server.py: Starlette, one route, `json`,
  `session.run` inline, one uvicorn process), both serving a 64-float Relu with the same
  JSON request: the server's own cost, which caps the GPU endpoints. Target: inferstack
  at least TARGET_RATIO x the minimal server's requests/s at a p99 no worse;
- against bare ONNX Runtime (the demo model and light_squeezenet): `session.run` in this
  process, the same session options (OnnxModel, so intra-op threads as served), run by
  as many Python threads as the server's inference pool (`model.concurrency()`).

A separate load-generator process (benchmarks/loadgen.py: raw asyncio protocols on
uvloop, closed loop, 32 connections) drives each server for a fixed window after a
warm-up; arms alternate within each round. Reported: throughput and latency, the ratios,
and CPU seconds per request (the load generator shares the 2 cores with the server;
its own CPU use is reported too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import numpy as np

from benchmarks.common import (
    REPO,
    BenchModel,
    Config,
    binary_request_body,
    demo_model,
    json_request_body,
    model_input,
    onnx_light_model,
    relu_model,
    summary,
    work_dir,
)

NAME = "server_load"
TARGET_RATIO = 1.2
TARGET = (
    f"64-float Relu, JSON: inferstack serve req/s >= {TARGET_RATIO}x the minimal Starlette "
    "server's, at a p99 no worse (also reported: server / bare ONNX Runtime)"
)
CONCURRENCY = 32


def run(config: Config) -> dict[str, Any]:
    rounds = config.pick(5, 1)
    window = 3.0  # seconds per window: 15 s per arm in all, 3 s quick
    warmup = config.pick(1.0, 0.5)
    wine, squeezenet, relu = demo_model(), onnx_light_model("light_squeezenet"), relu_model()
    cases = [("wine/json", wine, "json"), ("squeezenet/binary", squeezenet, "binary")]

    log = (work_dir() / "server.log").open("wb")
    server, port = _start_server(_serve_argv(wine, squeezenet, relu), log)
    minimal, minimal_port = _start_server(_minimal_argv(relu), log)
    try:
        _wait_ready(port, server)
        _wait_minimal(minimal_port, minimal, relu)
        specs = {label: _spec(label, m, kind, port, server.pid) for label, m, kind in cases}
        bare = {label: _BareLoop(m) for label, m, _ in cases}
        for label, m, kind in cases:
            _sanity(port, m, kind, bare[label])
        versus = {
            "inferstack": _spec("relu", relu, "json", port, server.pid),
            "minimal": _spec("relu_minimal", relu, "json", minimal_port, minimal.pid),
        }
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            label: {"server": [], "bare": [], "bare_1": []} for label, _, _ in cases
        }
        versus_runs: dict[str, list[dict[str, Any]]] = {"inferstack": [], "minimal": []}
        for index in range(rounds):
            # The headline comparison first in each round, arms alternating in order.
            for arm in versus if index % 2 == 0 else reversed(versus):
                versus_runs[arm].append(_drive(versus[arm], window, warmup))
            for label, _, _ in cases:
                arms = ["server", "bare", "bare_1"]
                for arm in arms if index % 2 == 0 else reversed(arms):
                    if arm == "server":
                        result = _drive(specs[label], window, warmup)
                    else:
                        threads = bare[label].threads if arm == "bare" else 1
                        result = bare[label].run(window, warmup / 2, threads)
                    runs[label][arm].append(result)
        for process in (server, minimal):
            if process.poll() is not None:
                raise RuntimeError("a server exited during the benchmark; see " + log.name)
    finally:
        for process in (server, minimal):
            _stop(process)
        log.close()

    results: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "window_s": window,
        "load_generator": "benchmarks/loadgen.py (asyncio protocols on "
        + runs[cases[0][0]]["server"][0]["loop"]
        + ", separate process)",
        "server_command": "inferstack serve (uvicorn, metrics off, access log off)",
        "minimal_command": "python -m benchmarks.minimal_server (Starlette, json, "
        "session.run inline; uvicorn, access log off)",
        "versus_minimal": _versus_report(relu, versus_runs),
        "cases": {},
    }
    for label, m, kind in cases:
        results["cases"][label] = _report(m, kind, **runs[label])
    versus_report = results["versus_minimal"]
    met = (
        versus_report["throughput_ratio"] >= TARGET_RATIO
        and versus_report["inferstack"]["latency_p99_ms"]
        <= versus_report["minimal"]["latency_p99_ms"]
    )
    return {"name": NAME, "target": TARGET, "met": met, "results": results}


# --------------------------------------------------------------------------- server side


def _serve_argv(*models: BenchModel) -> list[str]:
    argv = [sys.executable, "-m", "inferstack.cli", "serve", "--host", "127.0.0.1"]
    for m in models:
        argv += ["--model", f"{m.name}={m.path}"]
    return argv


def _minimal_argv(model: BenchModel) -> list[str]:
    return [sys.executable, "-m", "benchmarks.minimal_server", str(model.path), model.name]


def _start_server(argv: list[str], log: Any) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on a free port (its last argument for the minimal one)."""
    port = _free_port()
    argv = [*argv, "--port", str(port)] if argv[2] == "inferstack.cli" else [*argv, str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return process, port


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_minimal(
    port: int, server: subprocess.Popen[bytes], model: BenchModel, timeout: float = 60
) -> None:
    """The minimal server has one route: ready when an infer request answers 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model.name}/infer",
        data=json_request_body(model.input_name, model_input(model)),
        headers={"content-type": "application/json"},
        method="POST",
    )
    _wait_for(request, server, "the minimal server", timeout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/health/ready")
    _wait_for(request, server, "inferstack serve", timeout)


def _wait_for(
    request: urllib.request.Request, server: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Poll until `request` answers 200; fail early when the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready within {timeout} s")


def _spec(label: str, model: BenchModel, kind: str, port: int, pid: int) -> dict[str, Any]:
    array = model_input(model)
    headers: dict[str, str]
    if kind == "json":
        body = json_request_body(model.input_name, array)
        headers = {"content-type": "application/json"}
    else:
        body, header_length = binary_request_body(model.input_name, array)
        headers = {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(header_length),
        }
    body_file = work_dir() / f"load_{label.replace('/', '_')}.bin"
    body_file.write_bytes(body)
    return {
        "port": port,
        "path": f"/v2/models/{model.name}/infer",
        "headers": headers,
        "body_file": str(body_file),
        "body_bytes": len(body),
        "concurrency": CONCURRENCY,
        "server_pid": pid,
    }


def _drive(spec: dict[str, Any], window: float, warmup: float) -> dict[str, Any]:
    spec = {**spec, "duration_s": window, "warmup_s": warmup}
    path = work_dir() / "loadgen_spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", str(path)],
        capture_output=True,
        cwd=REPO,
        timeout=window + warmup + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError("load generator failed: " + done.stderr.decode(errors="replace"))
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    if result["ok"] == 0 or result["failures"] or set(result["statuses"]) - {"200"}:
        raise RuntimeError(f"server answered errors under load: {result}")
    return result


def _sanity(port: int, model: BenchModel, kind: str, bare: _BareLoop) -> None:
    """One request through tritonclient.http: the server answers what bare ORT computes."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        array = model_input(model)
        tensor = httpclient.InferInput(model.input_name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=kind == "binary")
        outputs = [
            httpclient.InferRequestedOutput(name, binary_data=kind == "binary")
            for name in bare.names
        ]
        result = client.infer(model.name, [tensor], outputs=outputs)
        expected = bare.session.run(bare.names, bare.feed)
        for name, want in zip(bare.names, expected, strict=True):
            got = result.as_numpy(name)
            if got is None or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"{model.name}: output {name} differs from bare ORT")
    finally:
        client.close()


# --------------------------------------------------------------------------- bare side


class _BareLoop:
    """`session.run` in as many threads as the server's inference pool, same options."""

    def __init__(self, model: BenchModel) -> None:
        from inferstack.models import OnnxModel

        served = OnnxModel(model.name, model.path)
        served.load()
        self.threads = served.concurrency()
        self.session = served._session
        self.names = [spec.name for spec in served.outputs]
        self.feed = {model.input_name: model_input(model)}

    def run(self, window: float, warmup: float, threads: int) -> dict[str, Any]:
        start = time.perf_counter() + warmup
        end = start + window
        latencies: list[list[float]] = [[] for _ in range(threads)]
        cpu: list[float] = []
        barrier = threading.Barrier(threads + 1)

        def worker(bucket: list[float]) -> None:
            session, names, feed = self.session, self.names, self.feed
            barrier.wait()
            while True:
                t0 = time.perf_counter()
                session.run(names, feed)
                t1 = time.perf_counter()
                if start <= t1 <= end:
                    bucket.append(t1 - t0)
                if t1 >= end:
                    return

        workers = [threading.Thread(target=worker, args=(b,)) for b in latencies]
        for w in workers:
            w.start()
        barrier.wait()
        time.sleep(max(0.0, start - time.perf_counter()))
        cpu.append(time.process_time())
        time.sleep(max(0.0, end - time.perf_counter()))
        cpu.append(time.process_time())
        for w in workers:
            w.join()
        flat = np.asarray([x for bucket in latencies for x in bucket]) * 1e3
        return {
            "completed": int(flat.size),
            "throughput_rps": flat.size / window,
            "latency_ms": {
                "p50": float(np.percentile(flat, 50)),
                "p90": float(np.percentile(flat, 90)),
                "p99": float(np.percentile(flat, 99)),
                "mean": float(flat.mean()),
            },
            "cpu_s": cpu[1] - cpu[0],
            "threads": threads,
        }


# --------------------------------------------------------------------------- report


def _report(
    model: BenchModel,
    kind: str,
    server: list[dict[str, Any]],
    bare: list[dict[str, Any]],
    bare_1: list[dict[str, Any]],
) -> dict[str, Any]:
    s_rps = [r["throughput_rps"] for r in server]
    b_rps = [r["throughput_rps"] for r in bare]
    window = server[0]["window_s"]
    s_cpu = [r["server_cpu_s"] / r["ok"] * 1e3 for r in server if r["server_cpu_s"] is not None]
    b_cpu = [r["cpu_s"] / r["completed"] * 1e3 for r in bare]
    ratio = float(np.median(s_rps) / np.median(b_rps))
    return {
        "model": model.path.name,
        "request": f"{kind} body, {list(model.input_shape)} FP32"
        + (", binary output" if kind == "binary" else ""),
        "server": {
            "throughput_rps": summary(s_rps, 1.0, 1),
            "latency_p50_ms": round(float(np.median([r["latency_ms"]["p50"] for r in server])), 2),
            "latency_p99_ms": round(float(np.median([r["latency_ms"]["p99"] for r in server])), 2),
            "requests": int(sum(r["ok"] for r in server)),
            "cpu_ms_per_request": round(float(np.median(s_cpu)), 3) if s_cpu else None,
            "server_cores_busy": round(
                float(np.median([r["server_cpu_s"] / window for r in server])), 2
            )
            if s_cpu
            else None,
            "loadgen_cores_busy": round(
                float(np.median([r["loadgen_cpu_s"] / window for r in server])), 2
            ),
        },
        "bare": _bare_report(bare),
        "bare_1_thread": _bare_report(bare_1),
        "throughput_ratio_server_over_bare": round(ratio, 3),
        "throughput_ratio_by_round": summary(
            [s / b for s, b in zip(s_rps, b_rps, strict=True)], 1.0, 3
        ),
        "throughput_ratio_server_over_bare_1_thread": round(
            float(np.median(s_rps) / np.median([r["throughput_rps"] for r in bare_1])), 3
        ),
        "cpu_per_request_ratio_server_over_bare": round(
            float(np.median(s_cpu) / np.median(b_cpu)), 2
        )
        if s_cpu
        else None,
    }


def _versus_report(model: BenchModel, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def arm(results: list[dict[str, Any]]) -> dict[str, Any]:
        window = results[0]["window_s"]
        cpu = [r["server_cpu_s"] / r["ok"] * 1e3 for r in results if r["server_cpu_s"]]
        return {
            "throughput_rps": summary([r["throughput_rps"] for r in results], 1.0, 1),
            "latency_p50_ms": round(float(np.median([r["latency_ms"]["p50"] for r in results])), 2),
            "latency_p99_ms": round(float(np.median([r["latency_ms"]["p99"] for r in results])), 2),
            "requests": int(sum(r["ok"] for r in results)),
            "cpu_ms_per_request": round(float(np.median(cpu)), 3) if cpu else None,
            "loadgen_cores_busy": round(
                float(np.median([r["loadgen_cpu_s"] / window for r in results])), 2
            ),
        }

    ours, theirs = runs["inferstack"], runs["minimal"]
    ratios = [a["throughput_rps"] / b["throughput_rps"] for a, b in zip(ours, theirs, strict=True)]
    return {
        "model": f"{model.path.name} (Relu, FP32 {list(model.input_shape)})",
        "request": "json body, as tritonclient sends it (flat data)",
        "inferstack": arm(ours),
        "minimal": arm(theirs),
        "throughput_ratio": round(
            float(
                np.median([r["throughput_rps"] for r in ours])
                / np.median([r["throughput_rps"] for r in theirs])
            ),
            3,
        ),
        "throughput_ratio_by_round": summary(ratios, 1.0, 3),
    }


def _bare_report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "threads": runs[0]["threads"],
        "throughput_rps": summary([r["throughput_rps"] for r in runs], 1.0, 1),
        "latency_p50_ms": round(float(np.median([r["latency_ms"]["p50"] for r in runs])), 3),
        "latency_p99_ms": round(float(np.median([r["latency_ms"]["p99"] for r in runs])), 3),
        "cpu_ms_per_inference": round(
            float(np.median([r["cpu_s"] / r["completed"] * 1e3 for r in runs])), 3
        ),
    }


def markdown(result: dict[str, Any]) -> list[str]:
    from benchmarks.common import md_table

    res = result["results"]
    rows = []
    for label, c in res["cases"].items():
        s, b, b1 = c["server"], c["bare"], c["bare_1_thread"]
        rows.append(
            [
                label,
                s["throughput_rps"]["median"],
                s["latency_p50_ms"],
                s["latency_p99_ms"],
                b["throughput_rps"]["median"],
                b1["throughput_rps"]["median"],
                c["throughput_ratio_server_over_bare"],
                f"{c['throughput_ratio_by_round']['min']}..{c['throughput_ratio_by_round']['max']}",
                c["throughput_ratio_server_over_bare_1_thread"],
                s["cpu_ms_per_request"],
                b["cpu_ms_per_inference"],
                s["server_cores_busy"],
                s["loadgen_cores_busy"],
            ]
        )
    versus = res.get("versus_minimal")
    lines: list[str] = []
    if versus:
        ours, theirs = versus["inferstack"], versus["minimal"]
        lines += [
            f"Against the minimal server ({res['minimal_command']}), {versus['model']}, "
            f"{versus['request']}; arms alternate within each round:",
            "",
            md_table(
                ["server", "req/s (median)", "req/s min..max", "p50 ms", "p99 ms", "CPU ms/req"],
                [
                    [
                        name,
                        arm["throughput_rps"]["median"],
                        f"{arm['throughput_rps']['min']}..{arm['throughput_rps']['max']}",
                        arm["latency_p50_ms"],
                        arm["latency_p99_ms"],
                        arm["cpu_ms_per_request"],
                    ]
                    for name, arm in (("inferstack serve", ours), ("minimal Starlette", theirs))
                ],
            ),
            "",
            f"Ratio inferstack / minimal (req/s, medians): **{versus['throughput_ratio']}** "
            f"(by round {versus['throughput_ratio_by_round']['min']}.."
            f"{versus['throughput_ratio_by_round']['max']}).",
            "",
        ]
    return [
        *lines,
        f"{res['concurrency']} concurrent keep-alive clients, {res['rounds']} round(s) of "
        f"{res['window_s']} s per arm; load generator: {res['load_generator']}; "
        f"server: {res['server_command']}. Bare = `session.run` in as many threads as the "
        "server's inference pool (same session options); bare 1 thread for reference.",
        "",
        md_table(
            [
                "case",
                "server req/s",
                "server p50 ms",
                "server p99 ms",
                "bare req/s",
                "bare 1-thread req/s",
                "ratio server/bare",
                "ratio range by round",
                "ratio server/bare 1-thread",
                "server CPU ms/req",
                "bare CPU ms/inference",
                "server cores busy",
                "load-gen cores busy",
            ],
            rows,
        ),
    ]
