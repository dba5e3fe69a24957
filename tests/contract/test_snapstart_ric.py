"""The inference function under the real Lambda runtime interface client, in a SnapStart init.

`python -m awslambdaric handler.handler` (what the Lambda Python base image runs for the
image's CMD) talks to a Runtime API served here on 127.0.0.1, as Lambda's would be:
init (the model loads), before-snapshot hooks, GET /runtime/restore/next (the snapshot is
taken and restored while it waits), after-restore hooks, then invocations. Endpoints:
https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html and, for restore/next and
restore/error, https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-custom.html.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.functional.conftest import (
    DEMO_MODEL,
    EXAMPLE_REQUEST,
    FUNCTION_DIR,
    HTTP,
    assert_outputs_match,
    example_features,
    http_event,
    ort_reference,
    outputs_from_json,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

PREFIX = "/2018-06-01/runtime"
TIMEOUT_S = 60.0


class FakeRuntimeApi(ThreadingHTTPServer):
    """Lambda's Runtime API for one execution environment: it hands out `events` in turn
    and records every call and every answer."""

    daemon_threads = True

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), RuntimeApiHandler)
        self.events = list(events)
        self.calls: list[str] = []
        self.responses: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        self.done = threading.Event()  # every event answered; the runtime polls for more
        self.closing = threading.Event()
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"


class RuntimeApiHandler(BaseHTTPRequestHandler):
    server: FakeRuntimeApi

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the calls from the server."""

    def do_GET(self) -> None:
        api = self.server
        with api.lock:
            api.calls.append(f"GET {self.path}")
        if self.path == f"{PREFIX}/restore/next":
            self.reply(200, b"")
        elif self.path == f"{PREFIX}/invocation/next":
            with api.lock:
                event = api.events.pop(0) if api.events else None
            if event is None:  # no more work: hold the poll, as Lambda does, until shutdown
                api.done.set()
                api.closing.wait(TIMEOUT_S)
                return
            request_id = f"request-{len(api.responses) + len(api.errors) + 1}"
            deadline = int((time.time() + 30) * 1000)
            self.reply(
                200,
                json.dumps(event).encode(),
                {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                    "Lambda-Runtime-Invoked-Function-Arn": (
                        "arn:aws:lambda:us-east-1:123456789012:function:inference:live"
                    ),
                    "Lambda-Runtime-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793",
                },
            )
        else:
            self.reply(404, b'{"errorType": "NotFound"}')

    def do_POST(self) -> None:
        api = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with api.lock:
            api.calls.append(f"POST {self.path}")
        parts = self.path.removeprefix(PREFIX).strip("/").split("/")
        document = json.loads(body) if body else None
        with api.lock:
            if parts[0] == "invocation" and parts[-1] == "response":
                api.responses[parts[1]] = document
            else:  # invocation/{id}/error, init/error, restore/error
                api.errors["/".join(parts)] = document
        self.reply(202, b'{"status": "OK"}')

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def runtime_api(request: pytest.FixtureRequest) -> Iterator[FakeRuntimeApi]:
    api = FakeRuntimeApi(request.param)
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    yield api
    api.closing.set()
    api.shutdown()
    api.server_close()


def run_function(api: FakeRuntimeApi, tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run the function's image entry under the runtime client until `api` has no event
    left; its stdout and stderr."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "inference",
        "AWS_REGION": "us-east-1",
        "INFERSTACK_MODEL_NAME": "wine",
        "INFERSTACK_MODEL_URI": str(DEMO_MODEL),
        "INFERSTACK_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
        # The test's own import path, if it has one, for the runtime it tests.
        **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
        **env,
    }
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "awslambdaric", "handler.handler"],
            cwd=FUNCTION_DIR,  # LAMBDA_TASK_ROOT: handler.py at its top, as in the image
            env=environ,
            stdout=out,
            stderr=err,
        )
        try:
            finished = api.done.wait(TIMEOUT_S)
            exited = process.poll()
        finally:
            process.kill()
            process.wait()
    text_out, text_err = stdout.read_text(), stderr.read_text()
    assert finished, f"the runtime did not finish (exit {exited}):\n{text_out}\n{text_err}"
    return text_out, text_err


def infer_event() -> dict[str, Any]:
    return http_event(HTTP, "POST", "/v2/models/wine/infer", body=EXAMPLE_REQUEST.read_text())


def emf_requests(stdout: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in stdout.splitlines() if '"_aws"' in line]
    return [d for d in docs if "Requests" in d]


@pytest.mark.parametrize("runtime_api", [[infer_event(), infer_event()]], indirect=True)
def test_snapstart_init_restores_then_serves_with_a_restored_cold_start(
    runtime_api: FakeRuntimeApi, tmp_path: Path
) -> None:
    stdout, stderr = run_function(
        runtime_api,
        tmp_path,
        AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
        INFERSTACK_ENV="contract",
    )
    assert runtime_api.errors == {}, (runtime_api.errors, stderr)
    # The runtime asked for the restore after init and before any invocation.
    calls = runtime_api.calls
    assert calls[0] == f"GET {PREFIX}/restore/next", calls
    assert calls[1:3] == [
        f"GET {PREFIX}/invocation/next",
        f"POST {PREFIX}/invocation/request-1/response",
    ]

    answers = [runtime_api.responses[f"request-{n}"] for n in (1, 2)]
    assert [a["statusCode"] for a in answers] == [200, 200]
    # The model's answer, as ONNX Runtime itself computes it.
    for answer in answers:
        outputs = outputs_from_json(json.loads(answer["body"]))
        assert_outputs_match(outputs, ort_reference(example_features()))

    first, second = emf_requests(stdout)
    assert (first.get("ColdStart"), first.get("RestoredStart")) == ([1.0], [1.0])
    assert "ColdStart" not in second and "RestoredStart" not in second
    assert first["environment"] == "contract"


@pytest.mark.parametrize("runtime_api", [[infer_event()]], indirect=True)
def test_on_demand_init_serves_without_a_restore(
    runtime_api: FakeRuntimeApi, tmp_path: Path
) -> None:
    stdout, stderr = run_function(runtime_api, tmp_path, INFERSTACK_ENV="contract")
    assert runtime_api.errors == {}, (runtime_api.errors, stderr)
    assert f"GET {PREFIX}/restore/next" not in runtime_api.calls
    assert runtime_api.responses["request-1"]["statusCode"] == 200
    (first,) = emf_requests(stdout)
    assert first.get("ColdStart") == [1.0]
    assert "RestoredStart" not in first
