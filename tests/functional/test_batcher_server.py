"""The batcher behind a live HTTP server on 127.0.0.1: answers, and clients that go away."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import uvicorn

from inferstack.dataplane import DataPlane
from inferstack.models.batching import BatchPolicy, DynamicBatcher
from inferstack.models.onnx import OnnxModel
from inferstack.models.repository import ModelRepository
from inferstack.server.app import create_app
from tests import batch_models

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)

SLOW_TRIPS = 300_000  # a few hundred milliseconds of Loop on this machine


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[OnnxModel, int]]:
    model = OnnxModel("slow", batch_models.slow(tmp_path / "slow.onnx"), threads=1)
    assert model.load_safely(), model.error
    model.batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=8))
    app = create_app(DataPlane(ModelRepository([model])))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield model, listener.getsockname()[1]
    server.should_exit = True
    thread.join(10)
    listener.close()


def _body(trips: int, rows: int = 1) -> bytes:
    tensors = [
        {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": list(range(rows * 4))},
        {"name": "spin", "shape": [rows, 1], "datatype": "FP32", "data": [trips] * rows},
    ]
    return json.dumps({"inputs": tensors}).encode()


def _post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def _in_thread(port: int, path: str, body: bytes) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(_post(port, path, body)))
    thread.start()
    return thread, answers


def test_a_request_queued_by_a_client_that_went_away_is_not_run(
    served: tuple[OnnxModel, int],
) -> None:
    model, port = served
    batcher = model.batcher
    assert batcher is not None
    slow, slow_answer = _in_thread(port, "/v2/models/slow/infer", _body(SLOW_TRIPS))
    time.sleep(0.1)  # the slow request is running
    body = _body(1, rows=5)
    with socket.create_connection(("127.0.0.1", port)) as client:
        head = (
            f"POST /v2/models/slow/infer HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        client.sendall(head.encode() + body)
        time.sleep(0.1)  # queued behind the slow batch; then the client hangs up
    slow.join(30)
    assert slow_answer[0][0] == 200
    deadline = time.monotonic() + 5
    while batcher.stats.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert batcher.stats.cancelled == 1
    time.sleep(0.1)
    assert (batcher.stats.batches, batcher.stats.rows) == (1, 1)  # its 5 rows never ran


@pytest.mark.parametrize("path", ["/v2/models/slow/infer", "/invocations"])
def test_requests_that_stay_are_answered_with_their_rows(
    served: tuple[OnnxModel, int], path: str
) -> None:
    model, port = served
    calls = [_in_thread(port, path, _body(1000, rows=1 + i % 3)) for i in range(6)]
    for thread, _ in calls:
        thread.join(30)
    for i, (_, answers) in enumerate(calls):
        ((status, doc),) = answers
        rows = 1 + i % 3
        assert status == 200
        (output,) = doc["outputs"]
        assert output["shape"] == [rows, 4]
        np.testing.assert_allclose(output["data"], np.arange(rows * 4, dtype=np.float32))
    assert model.batcher is not None and model.batcher.stats.cancelled == 0
