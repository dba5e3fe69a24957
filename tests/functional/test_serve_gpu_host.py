"""Server start-up and shutdown (issue 9). A server stopped while its model still loads
exits at once (an engine build can take many minutes; SageMaker and ECS send SIGKILL 30 s
after SIGTERM); a batching server puts each model behind a batcher from its settings.

The model's S3 endpoint here accepts connections and never answers, so the load hangs in
the server for as long as boto3 keeps waiting (minutes with its retries), as a long
engine build would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inferstack import names
from inferstack.demo import demo_dir, demo_model_path
from inferstack.settings import Settings
from tests.functional.test_cli import CONSOLE_SCRIPT, clean_env, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import FastAPI

# Well inside the 30 s between SIGTERM and SIGKILL.
EXIT_WITHIN_S = 10.0


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_sigterm_while_the_model_loads_exits_promptly_with_0(
    silent_endpoint: str, tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_S3=silent_endpoint,
        INFERSTACK_CACHE_DIR=str(tmp_path / "cache"),
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(CONSOLE_SCRIPT),
                "serve",
                "--model",
                "slow=s3://models/slow/model.onnx",
                "--port",
                str(port),
                "--max-batch-size",
                "4",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and status_of(f"{base}/v2/health/live") != 200:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        # Up and alive, not ready: the model is still loading.
        assert status_of(f"{base}/v2/health/live") == 200, log.read_text()
        assert status_of(f"{base}/v2/health/ready") == 503
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=EXIT_WITHIN_S + 20)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert took < EXIT_WITHIN_S, f"exited {took:.1f} s after SIGTERM\n{log.read_text()}"
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()


# ------------------------------------------------------------------ batchers from settings


def _app_from(env: dict[str, str]) -> FastAPI:
    from inferstack.bootstrap import server_app_from_settings

    model = {names.ENV_MODEL_NAME: "wine", names.ENV_MODEL_URI: str(demo_model_path())}
    return server_app_from_settings(Settings.from_env({**model, **env}, server=True))


def _wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/v2/models/wine/ready").text
        time.sleep(0.05)


def test_a_batching_server_puts_each_model_behind_a_batcher_from_its_settings() -> None:
    """INFERSTACK_MAX_BATCH_SIZE over 1: the queue settings reach the model's batcher, the
    answers are right, and after shutdown the batcher admits nothing more."""
    from inferstack.exceptions import ModelNotReadyError
    from inferstack.models.batching import BatchPolicy

    app = _app_from(
        {
            names.ENV_MAX_BATCH_SIZE: "4",
            names.ENV_MAX_QUEUE_DELAY_US: "500",
            names.ENV_MAX_QUEUE_SIZE: "3",
            names.ENV_QUEUE_TIMEOUT_US: "2000000",
        }
    )
    example = json.loads((demo_dir() / "example_request.json").read_text())
    with TestClient(app) as client:
        _wait_ready(client)
        answer = client.post("/v2/models/wine/infer", json=example)
        assert answer.status_code == 200, answer.text
        model = app.state.dataplane.repository.get("wine")
        assert model.batcher is not None
        assert model.batcher.policy == BatchPolicy(4, 500, 3, 2_000_000)
    rows = np.asarray(example["inputs"][0]["data"], dtype=np.float32)
    with pytest.raises(ModelNotReadyError, match="shutting down"):
        asyncio.run(model.apredict({"features": rows}))


def test_a_batching_server_with_metrics_on_publishes_batch_sizes_and_queue_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The dashboard's BatchSize and QueueTime graphs: the server's batchers publish them
    under the host's metric identity, at the latest when the server stops."""
    app = _app_from(
        {
            names.ENV_MAX_BATCH_SIZE: "4",
            names.ENV_METRICS: "on",
            names.ENV_ENVIRONMENT: "batch-metrics-test",
        }
    )
    example = json.loads((demo_dir() / "example_request.json").read_text())
    with TestClient(app) as client:
        _wait_ready(client)
        for _ in range(3):
            assert client.post("/v2/models/wine/infer", json=example).status_code == 200
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    [batches] = [d for d in documents if "BatchSize" in d]
    assert batches["model"] == "wine" and batches["environment"] == "batch-metrics-test"
    rows = example["inputs"][0]["shape"][0]
    assert batches["BatchSize"] == [float(rows)] * 3  # one run per request, each alone
    assert len(batches["QueueTime"]) == 3


def test_a_server_that_does_not_batch_still_bounds_each_models_requests() -> None:
    from inferstack.models.batching import BatchPolicy

    app = _app_from({names.ENV_MAX_QUEUE_SIZE: "3"})
    example = json.loads((demo_dir() / "example_request.json").read_text())
    with TestClient(app) as client:
        _wait_ready(client)
        assert client.post("/v2/models/wine/infer", json=example).status_code == 200
        batcher = app.state.dataplane.repository.get("wine").batcher
        assert batcher is not None and not batcher.batching
        assert batcher.policy == BatchPolicy(max_batch_size=1, max_queue_size=3)
        assert batcher.stats.batches == 0  # the model's own path, not the batch worker


# ------------------------------------------------------------------ GPU metrics


class _OneBusyGpu:
    """NVML as nvidia-ml-py exposes it, for a GPU 40 % busy with a quarter of its memory
    used (this machine has no GPU; the GPU tests run the real binding)."""

    class _Rates:
        gpu = 40

    class _Memory:
        used, total = 4 << 30, 16 << 30

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Rates:
        return self._Rates()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return self._Memory()


def test_the_server_publishes_gpu_utilization_while_it_runs() -> None:
    """The sampler starts with the server and publishes what it sampled when it stops."""
    from inferstack.bootstrap import server_app
    from inferstack.server.gpu_metrics import GpuSampler
    from inferstack.settings import ModelConfig

    lines: list[str] = []
    sampler = GpuSampler(
        lambda: ["wine"],
        ("InferStack", "inferstack", "test"),
        nvml=_OneBusyGpu(),
        sample_seconds=0.01,
        publish_seconds=3600,
        write=lines.append,
    )
    models = [ModelConfig("wine", str(demo_model_path()), "1")]
    with TestClient(server_app(models, max_request_bytes=1 << 20, gpu_sampler=sampler)):
        time.sleep(0.2)
    assert lines, "no GPU metrics published"
    document = json.loads(lines[-1])
    assert document["model"] == "wine" and document["environment"] == "test"
    assert set(document["GPUUtilization"]) == {40.0}
    assert set(document["GPUMemoryUtilization"]) == {25.0}


def test_without_a_gpu_the_server_says_gpu_metrics_are_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="inferstack.server.gpu_metrics")
    app = _app_from({names.ENV_METRICS: "on"})
    with TestClient(app) as client:
        _wait_ready(client)
    assert "GPU metrics off: no NVIDIA GPU" in caplog.text
    caplog.clear()
    with TestClient(_app_from({names.ENV_METRICS: "off"})) as client:
        _wait_ready(client)
    assert "GPU metrics" not in caplog.text


# ------------------------------------------------------------------ backend from settings


def test_a_forced_backend_that_cannot_run_here_is_an_unavailable_model_with_the_reason() -> None:
    """INFERSTACK_BACKEND=tensorrt on a host without TensorRT: the server stays up and the
    model says why it cannot serve; onnxruntime serves the same model."""
    with TestClient(_app_from({names.ENV_BACKEND: "tensorrt"})) as client:
        deadline = time.monotonic() + 30
        while True:
            (entry,) = client.post("/v2/repository/index", json={}).json()
            if entry["state"] != "LOADING" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert entry["state"] == "UNAVAILABLE", entry
        assert "INFERSTACK_BACKEND=tensorrt, but" in entry["reason"]
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/wine/ready").status_code != 200
        backends = client.get("/v2").json()["inferstack"]["backends"]
        assert "INFERSTACK_BACKEND=tensorrt, but" in backends["wine"]["reason"]
    with TestClient(_app_from({names.ENV_BACKEND: "onnxruntime"})) as client:
        _wait_ready(client)
        assert client.get("/v2").json()["inferstack"]["backends"]["wine"] == {
            "platform": "onnxruntime_onnx",
            "device": "cpu",
            "reason": "INFERSTACK_BACKEND=onnxruntime",
        }
