"""`inferstack serve` and the container's entry point as processes: what they refuse at
start, and that the container serves from the environment exactly as the Lambda does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from inferstack.demo import demo_model_path

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("inferstack")
ENTRYPOINT = REPO_ROOT / "gpu_endpoints" / "entrypoint.py"
DEMO = str(demo_model_path())
START_TIMEOUT_S = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting a host reads, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INFERSTACK_", "SAGEMAKER_", "AWS_", "POWERTOOLS_"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`inferstack serve ARGS` expected to refuse: a server that starts instead would run
    until the timeout, which fails the test."""
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(**env),
    )


def assert_refused(completed: subprocess.CompletedProcess[str], *words: str) -> None:
    assert completed.returncode == 2, completed
    for word in words:
        assert word in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "Uvicorn running" not in completed.stderr


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1"])
def test_a_port_outside_1_to_65535_is_refused_at_start(port: str) -> None:
    assert_refused(
        serve("--port", port), f"--port must be a whole number from 1 to 65535, not {port}"
    )


@pytest.mark.parametrize("variable", ["INFERSTACK_PORT", "SAGEMAKER_BIND_TO_PORT"])
def test_a_port_variable_outside_the_range_is_refused_by_name(variable: str) -> None:
    assert_refused(serve(**{variable: "99999"}), variable, "from 1 to 65535, not 99999")


@pytest.mark.parametrize("name", ["a/b", "x y", "wine?", "-wine", "wine#1"])
def test_a_model_name_no_url_can_reach_is_refused_at_start(name: str) -> None:
    assert_refused(
        serve(f"--model={name}={DEMO}"),
        f"model name {name!r} is not valid",
        "letters, digits, '_', '-' and '.'",
    )


def test_the_environment_model_name_follows_the_same_rule() -> None:
    completed = serve(INFERSTACK_MODEL_NAME="a/b", INFERSTACK_MODEL_URI=DEMO)
    assert_refused(completed, "INFERSTACK_MODEL_NAME", "'a/b' is not valid")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"INFERSTACK_METRICS": "maybe"}, ("INFERSTACK_METRICS", "on/off, true/false")),
        ({"INFERSTACK_ACCESS_LOG": "loud"}, ("INFERSTACK_ACCESS_LOG", "'loud'")),
        ({"INFERSTACK_MAX_BATCH_SIZE": "0"}, ("INFERSTACK_MAX_BATCH_SIZE", "at least 1")),
        ({"INFERSTACK_MAX_QUEUE_DELAY_US": "-5"}, ("INFERSTACK_MAX_QUEUE_DELAY_US", "at least 0")),
    ],
)
def test_a_malformed_variable_is_refused_by_name(
    env: dict[str, str], words: tuple[str, ...]
) -> None:
    assert_refused(serve(**env), *words)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-batch-size", "0"], ("--max-batch-size", "at least 1")),
        (["--max-queue-delay-us", "-1"], ("--max-queue-delay-us", "at least 0")),
        (["--threads", "0"], ("--threads", "at least 1")),
        (["--max-request-bytes", "0"], ("--max-request-bytes", "at least 1")),
    ],
)
def test_a_flag_out_of_range_is_refused(args: list[str], words: tuple[str, ...]) -> None:
    assert_refused(serve(*args), *words)


# ------------------------------------------------------------------ the container's entry


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_the_container_serves_from_its_environment_with_the_s3_version(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """`docker run <image> serve` as SageMaker starts it: no flags, the environment the CDK
    app sets (model from S3, batching) and SageMaker's port. The model reports the S3
    object version, as the Lambda function does, and the batching settings are read."""
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="models")
    s3.put_bucket_versioning(Bucket="models", VersioningConfiguration={"Status": "Enabled"})
    version = s3.put_object(Bucket="models", Key="wine/model.onnx", Body=Path(DEMO).read_bytes())[
        "VersionId"
    ]
    port = free_port()
    env = clean_env(
        **credentials,
        AWS_ENDPOINT_URL_S3=s3_endpoint,
        INFERSTACK_MODEL_NAME="wine",
        INFERSTACK_MODEL_URI=f"s3://models/wine/model.onnx?versionId={version}",
        INFERSTACK_ENV="prod",
        INFERSTACK_MAX_BATCH_SIZE="8",
        INFERSTACK_MAX_QUEUE_DELAY_US="500",
        INFERSTACK_CACHE_DIR=str(tmp_path / "cache"),
        # The image sets 0.0.0.0 (gpu_endpoints/Dockerfile); a test listens on loopback.
        INFERSTACK_HOST="127.0.0.1",
        SAGEMAKER_BIND_TO_PORT=str(port),
    )
    log = tmp_path / "container.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        status = 0
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, _ = get_json(f"{base}/v2/models/wine/ready")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, log.read_text()
        assert get_json(f"{base}/v2/models/wine")[1]["versions"] == [version]
        assert get_json(f"{base}/v2/models/wine/versions/{version}/ready")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    text = log.read_text()
    assert f"serving wine at http://127.0.0.1:{port}" in text
    assert "max_batch_size=8 max_queue_delay_us=500" in text
    assert "environment=prod" in text
