"""Shared helpers: paths, machine info, statistics, request and event builders."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / ".work"  # git-ignored scratch: request bodies, server logs
FUNCTION_DIR = REPO / "functions" / "inference"
SEED = 20240601

EVENT_CANDIDATES = (REPO / "tests" / "events" / "apiGatewayProxyV2Event.json",)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Config:
    """What every benchmark gets from run.py."""

    quick: bool

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set; afterwards exactly as before (keys set inside too), so a
    benchmark's fake credentials and endpoints never leak into the next one."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def work_dir() -> Path:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    return WORK_DIR


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class BenchModel:
    name: str  # the name it is served under
    path: Path
    input_name: str
    input_shape: tuple[int, ...]


def demo_model() -> BenchModel:
    from inferstack.demo import demo_model_path

    return BenchModel("wine", demo_model_path(), "features", (2, 13))


def onnx_light_model(stem: str) -> BenchModel:
    """light_resnet50 / light_squeezenet: the real architectures the onnx package ships."""
    import onnx

    path = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light" / f"{stem}.onnx"
    inputs = {"light_resnet50": "gpu_0/data_0", "light_squeezenet": "data_0"}
    return BenchModel(stem.removeprefix("light_"), path, inputs[stem], (1, 3, 224, 224))


def relu_model() -> BenchModel:
    """A 64-float Relu (FP32 [-1, 64]): so little model that the server is all the cost."""
    from tests.batch_models import relu

    path = work_dir() / "relu64.onnx"
    if not path.is_file():
        relu(path, width=64)
    return BenchModel("relu", path, "x", (1, 64))


def model_input(model: BenchModel) -> np.ndarray:
    """The request tensor: the demo's example rows, or seeded image-like noise."""
    if model.input_name == "features":
        doc = json.loads((demo_request_path()).read_text())
        return np.asarray(doc["inputs"][0]["data"], dtype=np.float32)
    rng = np.random.default_rng(SEED)
    return rng.standard_normal(model.input_shape, dtype=np.float32)


def demo_request_path() -> Path:
    from inferstack.demo import demo_dir

    return demo_dir() / "example_request.json"


# --------------------------------------------------------------------------- requests


def json_request_body(name: str, array: np.ndarray) -> bytes:
    """A KServe v2 JSON infer request, flat data as tritonclient sends it."""
    doc = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "FP32",
                "data": array.reshape(-1).tolist(),
            }
        ]
    }
    return json.dumps(doc).encode()


def binary_request_body(
    name: str, array: np.ndarray, *, binary_output: bool = True
) -> tuple[bytes, int]:
    """A binary-tensor request (Triton extension): (body, Inference-Header-Content-Length)."""
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    header = json.dumps(doc).encode()
    return header + raw, len(header)


def base_event() -> tuple[dict[str, Any], str]:
    """The HTTP API (payload 2.0) sample event and where it came from."""
    for path in EVENT_CANDIDATES:
        if path.is_file():
            return json.loads(path.read_text()), str(path)
    raise FileNotFoundError(
        "no apiGatewayProxyV2Event.json in " + ", ".join(str(p) for p in EVENT_CANDIDATES)
    )


def http_api_event(model: str, body: bytes, *, header_length: int | None = None) -> dict[str, Any]:
    """POST /v2/models/<model>/infer as API Gateway HTTP API hands it to Lambda."""
    event, _ = base_event()
    event = copy.deepcopy(event)
    path = f"/v2/models/{model}/infer"
    event["rawPath"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event.pop("pathParameters", None)
    event["routeKey"] = "$default"
    context = event.setdefault("requestContext", {})
    context["routeKey"] = "$default"
    context["stage"] = "$default"
    context.setdefault("http", {}).update({"method": "POST", "path": path})
    headers = dict(event.get("headers") or {})
    headers["content-length"] = str(len(body))
    if header_length is None:
        headers["content-type"] = "application/json"
        event["body"] = body.decode()
        event["isBase64Encoded"] = False
    else:
        headers["content-type"] = "application/octet-stream"
        headers["inference-header-content-length"] = str(header_length)
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    event["headers"] = headers
    return event


class LambdaContext:
    """The attributes of the Lambda context object the handler may read."""

    function_name = "inferstack-bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:inferstack-bench"
    memory_limit_in_mb = 3008
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/inferstack-bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


# --------------------------------------------------------------------------- statistics


def percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summary(values: Any, scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """n, median, p10/p90 (spread), p99, min, max, mean, scaled (e.g. s -> ms)."""
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "median": round(float(np.median(a)), digits),
        "p10": round(float(np.percentile(a, 10)), digits),
        "p90": round(float(np.percentile(a, 90)), digits),
        "p99": round(float(np.percentile(a, 99)), digits),
        "min": round(float(a.min()), digits),
        "max": round(float(a.max()), digits),
        "mean": round(float(a.mean()), digits),
    }


# --------------------------------------------------------------------------- machine


def machine_info(quick: bool) -> dict[str, Any]:
    import onnxruntime
    import orjson

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from inferstack import __version__ as inferstack_version
    except ImportError:  # pragma: no cover - the project is installed in the venv
        inferstack_version = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "orjson": orjson.__version__,
        "inferstack": inferstack_version,
        "git_commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "seed": SEED,
    }


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def python() -> str:
    return sys.executable


# --------------------------------------------------------------------------- markdown


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "no target (reported)"}[met]


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("loadavg_1m")
    parts = [
        f"{machine.get('cpu')}",
        f"{machine.get('usable_cores')} cores",
        f"{machine.get('memory_gib')} GiB",
        f"Python {machine.get('python')}",
        f"onnxruntime {machine.get('onnxruntime')}",
        f"numpy {machine.get('numpy')}",
        f"orjson {machine.get('orjson')}",
        f"commit {machine.get('git_commit')}",
        f"{machine.get('date')}",
        "quick run" if machine.get("quick") else "full run",
    ]
    if load:
        parts.append(f"load avg (1 min) {load[0]} -> {load[1]}")
    return "Machine: " + " · ".join(str(p) for p in parts)
