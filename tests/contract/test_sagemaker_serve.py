"""SageMaker's container contract on a real `inferstack serve` process.

SageMaker stops a container with SIGTERM and kills it 30 s later; it pings /ping with a
2 s timeout, including while the model serves long requests
(https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html).
The `spin` model (tests/contract/conftest.py) runs as long as its `iterations` input says.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tests.contract.conftest import SPIN_WIDTH, ServerProcess, http_get

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from tests.contract.conftest import ModelFiles

# About a second of ONNX Runtime per million rounds on one core (more on a busy machine).
LONG_ITERATIONS = 2_000_000
# SageMaker's ping timeout; the bound below is loose on purpose (shared CI machines).
PING_TIMEOUT_S = 2.0


def spin_body(iterations: int, seed: int = 3) -> tuple[bytes, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((1, SPIN_WIDTH)).astype(np.float32)
    body = {
        "id": f"spin-{iterations}",
        "inputs": [
            {"name": "iterations", "shape": [], "datatype": "INT64", "data": [iterations]},
            {"name": "x", "shape": [1, SPIN_WIDTH], "datatype": "FP32", "data": x.tolist()},
        ],
    }
    return json.dumps(body).encode(), x


class Call(threading.Thread):
    """One request on its own connection, in the background; `sent` once written."""

    def __init__(self, port: int, method: str, path: str, body: bytes = b"") -> None:
        super().__init__(daemon=True)
        self.port, self.method, self.path, self.body = port, method, path, body
        self.sent = threading.Event()
        self.status: int | None = None
        self.reply: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(
                self.method, self.path, self.body, {"Content-Type": "application/json"}
            )
            self.sent.set()
            response = connection.getresponse()
            self.status, self.reply = response.status, json.loads(response.read())
        except BaseException as exc:
            self.error = exc
        finally:
            self.sent.set()
            connection.close()


def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(
    model_files: ModelFiles,
    tmp_path: Path,
    reference: Callable[..., dict[str, np.ndarray]],
) -> None:
    """SIGTERM while a ~2 s inference runs: the client still gets the whole, right
    answer, and the server then exits with status 0 (well within SageMaker's 30 s)."""
    console_script = str(Path(sys.executable).with_name("inferstack"))
    command = [console_script, "serve", f"--model=spin={model_files.paths['spin']}"]
    server = ServerProcess(command, tmp_path / "serve.log")
    server.start(["spin"])
    assert server.process is not None
    try:
        body, x = spin_body(LONG_ITERATIONS)
        call = Call(server.port, "POST", "/v2/models/spin/infer", body)
        call.start()
        assert call.sent.wait(timeout=30)
        time.sleep(0.3)  # the request is being served now
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        call.join(timeout=60)
        code = server.process.wait(timeout=30)
        stopped_in = time.monotonic() - began
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert call.error is None, call.error
    assert call.status == 200, call.reply
    served = np.asarray(call.reply["outputs"][0]["data"], np.float32).reshape(1, -1)
    expected = reference("spin", iterations=np.array(LONG_ITERATIONS, np.int64), x=x)["y"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert code == 0, server.log()[-3000:]
    assert stopped_in < 30, f"took {stopped_in:.1f} s to stop: SageMaker would SIGKILL"


def test_slow_inferences_do_not_hold_up_ping_or_liveness(
    server_launcher: Callable[..., AbstractContextManager[ServerProcess]],
    model_files: ModelFiles,
    tmp_path: Path,
) -> None:
    """With long inferences in flight, /ping and /v2/health/live still answer well within
    SageMaker's 2 s ping timeout, even after a hundred fast runs of the same model (what
    lets a tiny model run inline on the event loop): a loop count in the input could make
    one such run take seconds, so this model must stay off the loop."""
    args = [f"--model=spin={model_files.paths['spin']}"]
    with server_launcher(args, tmp_path / "serve.log", ["spin"]) as server:
        quick, _ = spin_body(0)
        for _ in range(100):  # many fast runs first: what would qualify a model for inline
            status, _ = _post(server.port, "/v2/models/spin/infer", quick)
            assert status == 200
        body, _ = spin_body(LONG_ITERATIONS)
        calls = [Call(server.port, "POST", "/v2/models/spin/infer", body) for _ in range(3)]
        for call in calls:
            call.start()
        for call in calls:
            assert call.sent.wait(timeout=30)
        time.sleep(0.2)
        slowest, checked = 0.0, 0
        while any(call.is_alive() for call in calls) and checked < 20:
            for path in ("/ping", "/v2/health/live"):
                began = time.monotonic()
                status, _ = _get(server.port, path)
                slowest = max(slowest, time.monotonic() - began)
                assert status == 200
                checked += 1
        for call in calls:
            call.join(timeout=120)
            assert call.status == 200, (call.error, call.reply)
        assert checked >= 4, "the inferences ended before the health checks ran"
        assert slowest < PING_TIMEOUT_S / 2, f"a health check took {slowest:.2f} s"


def test_ping_answers_503_quickly_while_models_cannot_serve(
    server: ServerProcess,
) -> None:
    """The session server has models that fail to load: not healthy for SageMaker, and
    /v2/health/ready agrees (503 {"error"}); liveness is still 200."""
    began = time.monotonic()
    status, body = http_get(f"{server.base}/ping")
    assert time.monotonic() - began < PING_TIMEOUT_S
    assert status == 503 and "not ready" in body["error"]
    assert http_get(f"{server.base}/v2/health/ready")[0] == 503
    assert http_get(f"{server.base}/v2/health/live") == (200, {"live": True})


def _post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PING_TIMEOUT_S * 5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
