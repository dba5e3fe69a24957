"""The one settings object every host builds from its environment (inferstack.settings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from inferstack import names
from inferstack.settings import (
    RUNTIME_ENVIRONMENT_VARIABLES,
    SETTINGS_VARIABLES,
    ConfigurationError,
    Settings,
    parse_bool,
)

if TYPE_CHECKING:
    from collections.abc import Callable

MODEL = {names.ENV_MODEL_NAME: "wine", names.ENV_MODEL_URI: "/models/wine.onnx"}
BOOLEAN_VARIABLES = (names.ENV_METRICS, names.ENV_TRACING, names.ENV_ACCESS_LOG)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *((word, True) for word in ("on", "ON", "On", " true ", "True", "YES", "yes", "1")),
        *((word, False) for word in ("off", "OFF", "Off", "false", "FALSE", " no", "No", "0")),
    ],
)
def test_every_spelling_of_a_boolean_is_understood(raw: str, expected: bool) -> None:
    # The default is the opposite of `expected`, so only reading `raw` can pass.
    assert Settings.from_env({names.ENV_METRICS: raw}, server=expected).metrics is expected
    assert parse_bool(raw, "--flag") is expected


def test_metrics_off_turns_metrics_off_on_lambda() -> None:
    """The reported bug: `INFERSTACK_METRICS=off` left metrics on."""
    assert Settings.from_env({**MODEL, names.ENV_METRICS: "off"}).metrics is False
    assert Settings.from_env(MODEL).metrics is True  # Lambda's default


@pytest.mark.parametrize("key", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("raw", ["maybe", "enabled", "2", "t", "o n"])
def test_a_boolean_setting_with_another_value_is_refused_by_name(key: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**MODEL, key: raw})
    message = caught.value.message
    assert key in message
    assert repr(raw) in message
    assert "on/off, true/false, yes/no or 1/0" in message


def test_an_empty_boolean_variable_means_its_default() -> None:
    assert Settings.from_env({**MODEL, names.ENV_METRICS: "  "}).metrics is True
    with pytest.raises(ConfigurationError):
        parse_bool("", "--flag")


# Every variable Settings reads, a value for it, where it lands and what it becomes.
READS: list[tuple[str, str, Callable[[Settings], object], object]] = [
    (names.ENV_MODEL_NAME, "light_resnet50", lambda s: s.model.name, "light_resnet50"),
    (
        names.ENV_MODEL_URI,
        "s3://b/k.onnx?versionId=v7",
        lambda s: (s.model.uri, s.model.version),
        ("s3://b/k.onnx?versionId=v7", "v7"),
    ),
    (names.ENV_MODEL_VERSION, "2024-06-01", lambda s: s.model.version, "2024-06-01"),
    (names.ENV_ENVIRONMENT, "staging", lambda s: s.environment, "staging"),
    (names.ENV_MAX_REQUEST_BYTES, "1024", lambda s: s.max_request_bytes, 1024),
    (names.ENV_BASE_PATH, "/inference/", lambda s: s.base_path, "/inference"),
    (names.ENV_INTRA_OP_THREADS, "3", lambda s: s.threads, 3),
    (names.ENV_CACHE_DIR, "/var/cache/models", lambda s: s.cache_dir, "/var/cache/models"),
    (names.ENV_METRICS, "no", lambda s: s.metrics, False),
    (names.ENV_TRACING, "yes", lambda s: s.tracing, True),
    (names.ENV_HOST, "::1", lambda s: s.host, "::1"),
    (names.ENV_PORT, "9000", lambda s: s.port, 9000),
    (names.ENV_ACCESS_LOG, "on", lambda s: s.access_log, True),
    (names.ENV_MAX_BATCH_SIZE, "16", lambda s: s.max_batch_size, 16),
    (names.ENV_MAX_QUEUE_DELAY_US, "250", lambda s: s.max_queue_delay_us, 250),
    (names.ENV_MAX_QUEUE_SIZE, "64", lambda s: s.max_queue_size, 64),
    (names.ENV_QUEUE_TIMEOUT_US, "5000", lambda s: s.queue_timeout_us, 5000),
    (names.ENV_BACKEND, "tensorrt", lambda s: s.backend, "tensorrt"),
    (names.ENV_PRECISION, "fp16", lambda s: s.precision, "fp16"),
    (names.ENV_CAPTURE_RATE, "0.25", lambda s: s.capture_rate, 0.25),
    (names.ENV_POWERTOOLS_SERVICE, "svc", lambda s: s.service, "svc"),
    (names.ENV_METRICS_NAMESPACE, "Acme", lambda s: s.metrics_namespace, "Acme"),
    (names.ENV_SAGEMAKER_PORT, "9090", lambda s: s.port, 9090),
]


@pytest.mark.parametrize(("key", "value", "read", "expected"), READS, ids=[r[0] for r in READS])
def test_each_variable_reaches_its_setting(
    key: str, value: str, read: Callable[[Settings], object], expected: object
) -> None:
    assert read(Settings.from_env({**MODEL, key: value})) == expected
    assert read(Settings.from_env(MODEL)) != expected  # not the default by chance


def test_the_table_covers_every_variable_settings_claims_to_read() -> None:
    assert {key for key, *_ in READS} == SETTINGS_VARIABLES | {names.ENV_SAGEMAKER_PORT}
    assert SETTINGS_VARIABLES <= RUNTIME_ENVIRONMENT_VARIABLES
    assert names.ENV_POWERTOOLS_LOG_LEVEL in RUNTIME_ENVIRONMENT_VARIABLES


@pytest.mark.parametrize("raw", ["0", "65536", "99999", "-1", "80a", "8 080"])
def test_ports_outside_1_to_65535_are_refused(raw: str) -> None:
    for key in (names.ENV_PORT, names.ENV_SAGEMAKER_PORT):
        with pytest.raises(ConfigurationError) as caught:
            Settings.from_env({key: raw})
        assert key in caught.value.message
        assert "from 1 to 65535" in caught.value.message


def test_the_port_sagemaker_assigns_wins_over_ours() -> None:
    both = {names.ENV_PORT: "9000", names.ENV_SAGEMAKER_PORT: "9090"}
    assert Settings.from_env(both).port == 9090
    assert Settings.from_env({}).port == 8080


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        (names.ENV_MAX_BATCH_SIZE, "0", "at least 1"),
        (names.ENV_MAX_BATCH_SIZE, "-4", "at least 1"),
        (names.ENV_MAX_BATCH_SIZE, "8.5", "at least 1"),
        (names.ENV_MAX_QUEUE_DELAY_US, "-1", "at least 0"),
        (names.ENV_MAX_QUEUE_DELAY_US, "1e3", "at least 0"),
        (names.ENV_MAX_REQUEST_BYTES, "0", "at least 1"),
        (names.ENV_INTRA_OP_THREADS, "0", "at least 1"),
    ],
)
def test_numbers_out_of_range_are_refused_by_name(key: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**MODEL, key: raw})
    assert key in caught.value.message
    assert expected in caught.value.message


def test_batching_defaults_to_none_and_a_zero_delay_is_allowed() -> None:
    settings = Settings.from_env({**MODEL, names.ENV_MAX_QUEUE_DELAY_US: "0"})
    assert (settings.max_batch_size, settings.max_queue_delay_us) == (1, 0)
    assert "max_batch_size=1 max_queue_delay_us=0" in settings.summary()


@pytest.mark.parametrize("name", ["a/b", "x y", "-lead", "trail.", "é", "a" * 49, "a?b", "a%2Fb"])
def test_model_names_no_url_can_reach_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**MODEL, names.ENV_MODEL_NAME: name})
    assert names.ENV_MODEL_NAME in caught.value.message
    assert names.MODEL_NAME_RULE in caught.value.message


@pytest.mark.parametrize("name", ["wine", "light_resnet50", "resnet-50.v2", "A1", "x"])
def test_url_safe_model_names_are_accepted(name: str) -> None:
    assert Settings.from_env({**MODEL, names.ENV_MODEL_NAME: name}).model.name == name


@pytest.mark.parametrize("present", [names.ENV_MODEL_NAME, names.ENV_MODEL_URI])
def test_half_a_model_is_refused_naming_the_missing_variable(present: str) -> None:
    missing = ({names.ENV_MODEL_NAME, names.ENV_MODEL_URI} - {present}).pop()
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({present: MODEL[present]})
    assert caught.value.message.startswith(f"{missing} is not set")


def test_a_lambda_function_needs_a_model() -> None:
    with pytest.raises(ConfigurationError, match=names.ENV_MODEL_URI):
        _ = Settings.from_env({}).model


def test_server_and_lambda_defaults_differ_only_where_the_platform_does() -> None:
    lam, server = Settings.from_env({}), Settings.from_env({}, server=True)
    assert lam.max_request_bytes == 6 * 1024 * 1024  # Lambda's invoke payload limit
    assert server.max_request_bytes == 64 * 1024 * 1024
    assert (lam.metrics, server.metrics) == (True, False)
    assert lam._replace(max_request_bytes=0, metrics=False) == server._replace(
        max_request_bytes=0, metrics=False
    )


def test_reading_settings_imports_nothing_heavy() -> None:
    """Settings sit on the Lambda cold-start path: no pydantic, FastAPI or boto3."""
    import subprocess
    import sys

    code = (
        "import sys; from inferstack.settings import Settings; "
        "Settings.from_env({'INFERSTACK_MODEL_NAME': 'm', "
        "'INFERSTACK_MODEL_URI': 's3://b/k?versionId=1'}); "
        "print(sorted(m for m in ('pydantic', 'fastapi', 'boto3', 'botocore', 'numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
