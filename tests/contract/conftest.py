"""A real `inferstack serve` process for contract tests, and the models it serves.

The session server runs `python -m inferstack.cli serve` on a free loopback port with:

- ``wine``: the bundled demo model (FP32 [-1, 13] -> INT64 label, FP32 probabilities);
- ``squeezenet``: ``light_squeezenet`` from the onnx package's backend test data;
- ``spin``: a tiny model built here whose run time the client sets (a Loop whose trip
  count is an input), used to hold an inference open for the event-loop test;
- ``broken``: a file of random bytes (fails to load: UNAVAILABLE with a reason);
- ``no_weights``: a valid ONNX graph whose external weights file is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferstack.demo import demo_model_path, reference_sample_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
SQUEEZENET_PATH = LIGHT_DIR / "light_squeezenet.onnx"
GOOD_MODELS = ("wine", "squeezenet", "spin")
BROKEN_MODELS = ("broken", "no_weights")
# The session server's body limit: above squeezenet's 600 KB input, low enough to test 413.
SESSION_MAX_REQUEST_BYTES = 2 * 1024 * 1024
SPIN_WIDTH = 64


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET; never raises for an HTTP error status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def http_post(url: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class ServerProcess:
    """One `inferstack serve` subprocess, its port and its log file."""

    command: list[str]
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """host:port, as tritonclient takes it."""
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.url}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, wait_for: Sequence[str], settle: bool = True) -> None:
        """Start on a free port and poll until the `wait_for` models are ready (bounded).

        With `settle`, also wait until every configured model has either loaded or
        failed with a reason, so tests see the final repository state.
        """
        for _attempt in range(3):  # another process may grab the free port first
            self.port = free_port()
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [*self.command, "--host", "127.0.0.1", "--port", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            if self._wait_ready(wait_for, settle):
                return
            if "address already in use" not in self.log().lower():
                break
        self.stop(check=False)
        pytest.fail(f"inferstack serve did not become ready; its log:\n{self.log()[-4000:]}")

    def _wait_ready(self, wait_for: Sequence[str], settle: bool) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(wait_for)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError, ValueError):
                pending = [
                    m for m in pending if http_get(f"{self.base}/v2/models/{m}/ready")[0] != 200
                ]
                if not pending and (not settle or self._settled()):
                    return True
            time.sleep(0.1)
        return False

    def _settled(self) -> bool:
        status, index = http_post(f"{self.base}/v2/repository/index")
        return status == 200 and all(e["state"] == "READY" or e.get("reason") for e in index)

    def stop(self, check: bool = True) -> int | None:
        """SIGTERM, then wait; kill if it hangs. With `check`, fail unless it shut down
        cleanly (uvicorn finishes the shutdown, then re-raises SIGTERM: -15 or 0)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
                if check:
                    pytest.fail(f"inferstack serve ignored SIGTERM for {STOP_TIMEOUT_S} s")
        code = process.returncode
        if check:
            assert code in (0, -signal.SIGTERM), f"exit status {code}; log:\n{self.log()[-4000:]}"
            assert "Application shutdown complete" in self.log(), self.log()[-4000:]
        return code


@contextlib.contextmanager
def running_server(
    args: Sequence[str],
    log_path: Path,
    wait_for: Sequence[str],
    *,
    console_script: bool = False,
) -> Iterator[ServerProcess]:
    """`inferstack serve ARGS` for the duration of the block; always stopped after it."""
    if console_script:
        command = [str(Path(sys.executable).with_name("inferstack")), "serve", *args]
    else:
        command = [sys.executable, "-m", "inferstack.cli", "serve", *args]
    server = ServerProcess(command, log_path)
    try:
        server.start(wait_for)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_launcher() -> Callable[..., contextlib.AbstractContextManager[ServerProcess]]:
    """`running_server` as a fixture, for tests that need a server of their own."""
    return running_server


# --------------------------------------------------------------------------- models


def write_spin_model(path: Path) -> None:
    """y = tanh(...tanh(x @ W)...) with `iterations` (an INT64 scalar input) rounds:
    the client chooses how long one inference runs, and y depends on x and the count."""
    weights = numpy_helper.from_array(
        (np.random.default_rng(7).standard_normal((SPIN_WIDTH, SPIN_WIDTH)) / 8).astype(np.float32),
        "W",
    )
    row = [1, SPIN_WIDTH]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["xw"]),
            helper.make_node("Tanh", ["xw"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, row),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, row),
        ],
        [weights],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["iterations", "", "x"], ["y"], body=body)],
        "spin",
        [
            helper.make_tensor_value_info("iterations", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, row),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, row)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_model_missing_weights(path: Path) -> None:
    """A valid graph whose initializer lives in an external file that is then deleted."""
    weights = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "no_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.stem}.weights",
        size_threshold=0,
    )
    (path.parent / f"{path.stem}.weights").unlink()


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    paths: dict[str, Path]


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    directory = tmp_path_factory.mktemp("contract-models")
    spin = directory / "spin.onnx"
    write_spin_model(spin)
    broken = directory / "broken.onnx"
    broken.write_bytes(np.random.default_rng(1).bytes(4096))
    no_weights = directory / "no_weights.onnx"
    write_model_missing_weights(no_weights)
    return ModelFiles(
        directory,
        {
            "wine": demo_model_path(),
            "squeezenet": SQUEEZENET_PATH,
            "spin": spin,
            "broken": broken,
            "no_weights": no_weights,
        },
    )


@pytest.fixture(scope="session")
def server(
    model_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The session's `inferstack serve` with good and broken models (see module doc)."""
    args = [f"--model={name}={path}" for name, path in model_files.paths.items()]
    args.append(f"--max-request-bytes={SESSION_MAX_REQUEST_BYTES}")
    log_path = tmp_path_factory.mktemp("contract-server") / "server.log"
    with running_server(args, log_path, GOOD_MODELS) as process:
        yield process


@pytest.fixture(scope="session")
def reference(model_files: ModelFiles) -> Callable[..., dict[str, np.ndarray]]:
    """Direct ONNX Runtime outputs: reference(model, **inputs) -> {output: array}."""
    sessions: dict[str, ort.InferenceSession] = {}

    def run(model: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        if model not in sessions:
            sessions[model] = ort.InferenceSession(
                str(model_files.paths[model]), providers=["CPUExecutionProvider"]
            )
        session = sessions[model]
        names = [arg.name for arg in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


@pytest.fixture(scope="session")
def wine_sample() -> np.ndarray:
    """Realistic wine rows (FP32 [n, 13]); their labels cover all three classes."""
    rows = np.load(reference_sample_path()).astype(np.float32)
    assert rows.ndim == 2 and rows.shape[1] == 13 and len(rows) >= 32
    return rows
