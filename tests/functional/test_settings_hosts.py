"""The Lambda host built from a settings mapping: what an operator's variables change."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.settings import ConfigurationError

from .conftest import EXAMPLE_REQUEST, HTTP, assert_error_reply, demo_env, http_event, invoke
from .test_lambda_handler import REPEATED_DIMENSION, emf_documents

if TYPE_CHECKING:
    from pathlib import Path

INFER = "/v2/models/wine/infer"


def lambda_entry(**env: str) -> Any:
    from inferstack.bootstrap import lambda_entry_from_env

    return lambda_entry_from_env(demo_env(**env))


@pytest.fixture
def emf_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("off", ["off", "OFF", " Off ", "no", "0", "false"])
def test_metrics_off_in_any_spelling_emits_no_metrics(
    emf_enabled: None, capsys: pytest.CaptureFixture[str], off: str
) -> None:
    handler = lambda_entry(INFERSTACK_METRICS=off)
    capsys.readouterr()
    assert (
        invoke(handler, http_event(HTTP, "POST", INFER, body=EXAMPLE_REQUEST.read_text())).status
        == 200
    )
    assert emf_documents(capsys.readouterr().out) == []


def test_a_misspelt_boolean_stops_the_function_at_init_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as caught:
        lambda_entry(INFERSTACK_TRACING="enabled")
    assert "INFERSTACK_TRACING" in caught.value.message
    assert "on/off, true/false, yes/no or 1/0" in caught.value.message


@REPEATED_DIMENSION
def test_the_mapping_passed_in_wins_over_the_process_environment(
    emf_enabled: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """lambda_entry_from_env(environ) reads `environ` only: a test (or a second host in one
    process) gets exactly the function its mapping describes."""
    monkeypatch.setenv("INFERSTACK_ENV", "from-os-environ")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FromOsEnviron")
    handler = lambda_entry(
        INFERSTACK_ENV="from-mapping", POWERTOOLS_METRICS_NAMESPACE="FromMapping"
    )
    capsys.readouterr()
    assert (
        invoke(handler, http_event(HTTP, "POST", INFER, body=EXAMPLE_REQUEST.read_text())).status
        == 200
    )
    (doc,) = [d for d in emf_documents(capsys.readouterr().out) if "Requests" in d]
    assert doc["environment"] == "from-mapping"
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FromMapping"
    assert doc["service"] == "inferstack"


@pytest.mark.parametrize("name", ["a/b", "x y", "wine?"])
def test_a_model_name_no_url_can_reach_stops_the_function_at_init(name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        lambda_entry(INFERSTACK_MODEL_NAME=name)
    assert "INFERSTACK_MODEL_NAME" in caught.value.message
    assert repr(name) in caught.value.message


def test_a_missing_model_file_is_named_in_the_log_never_to_the_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "releases" / "wine-2024" / "model.onnx"
    caplog.set_level(logging.ERROR)
    handler = lambda_entry(INFERSTACK_MODEL_URI=str(missing), INFERSTACK_METRICS="off")

    logged = [r.getMessage() for r in caplog.records]
    assert any(str(missing) in line and "not found" in line for line in logged), logged
    for path in ("/v2/models/wine/ready", INFER):
        method = "POST" if path == INFER else "GET"
        body = EXAMPLE_REQUEST.read_text() if method == "POST" else None
        reply = invoke(handler, http_event(HTTP, method, path, body=body))
        message = assert_error_reply(reply, 503, "not ready", local_paths=(tmp_path,))
        assert "model file not found" in message
        assert "wine-2024" not in reply.text


@pytest.mark.parametrize(
    ("variables", "region"),
    [
        ({"AWS_REGION": "eu-west-1"}, "eu-west-1"),  # ECS-on-EC2 containers: CDK sets only this
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-central-1"}, "eu-central-1"),
    ],
)
def test_the_model_download_goes_to_the_region_the_platform_names(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], region: str
) -> None:
    """boto3 alone ignores AWS_REGION and calls us-east-1's endpoint, which an S3 gateway
    endpoint in another region's private subnet does not serve."""
    from inferstack.sources import _default_s3_client  # what every s3:// download uses

    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert _default_s3_client().meta.endpoint_url == f"https://s3.{region}.amazonaws.com"
