"""The batching queue and GPU settings (issue 9): read from the environment, overridden by
`inferstack serve` flags, refused by name when malformed, shown in the start-up line."""

from __future__ import annotations

import pytest

from inferstack import names
from inferstack.cli.serve import parser, settings_from_args
from inferstack.settings import ConfigurationError, Settings

MODEL = {names.ENV_MODEL_NAME: "wine", names.ENV_MODEL_URI: "/models/wine.onnx"}


def test_defaults_bound_the_queue_and_pick_the_backend_automatically() -> None:
    settings = Settings.from_env(MODEL)
    assert (settings.max_queue_size, settings.queue_timeout_us) == (128, 0)
    assert (settings.backend, settings.precision) == ("auto", "fp32")


def test_the_start_up_line_shows_the_queue_backend_and_precision() -> None:
    settings = Settings.from_env(
        {
            **MODEL,
            names.ENV_MAX_BATCH_SIZE: "32",
            names.ENV_MAX_QUEUE_DELAY_US: "1000",
            names.ENV_MAX_QUEUE_SIZE: "256",
            names.ENV_QUEUE_TIMEOUT_US: "1000000",
            names.ENV_BACKEND: "onnxruntime",
            names.ENV_PRECISION: "fp16",
        }
    )
    assert (
        "max_batch_size=32 max_queue_delay_us=1000 max_queue_size=256 "
        "queue_timeout_us=1000000 backend=onnxruntime precision=fp16"
    ) in settings.summary()


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        (names.ENV_MAX_QUEUE_SIZE, "0", "at least 1"),
        (names.ENV_MAX_QUEUE_SIZE, "-3", "at least 1"),
        (names.ENV_MAX_QUEUE_SIZE, "1e3", "at least 1"),
        (names.ENV_QUEUE_TIMEOUT_US, "-1", "at least 0"),
        (names.ENV_QUEUE_TIMEOUT_US, "1.5", "at least 0"),
        (names.ENV_BACKEND, "cuda", "one of auto, tensorrt, onnxruntime, not 'cuda'"),
        (names.ENV_BACKEND, "trt", "one of auto, tensorrt, onnxruntime"),
        (names.ENV_PRECISION, "int8", "one of fp32, fp16, not 'int8'"),
        (names.ENV_PRECISION, "half", "one of fp32, fp16"),
    ],
)
def test_a_malformed_variable_is_refused_by_name(key: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({**MODEL, key: raw})
    assert key in caught.value.message
    assert expected in caught.value.message


def test_choices_ignore_case_and_spaces_and_empty_means_the_default() -> None:
    env = {**MODEL, names.ENV_BACKEND: " TensorRT ", names.ENV_PRECISION: "FP16"}
    settings = Settings.from_env(env)
    assert (settings.backend, settings.precision) == ("tensorrt", "fp16")
    blank = Settings.from_env({**MODEL, names.ENV_BACKEND: " ", names.ENV_QUEUE_TIMEOUT_US: ""})
    assert (blank.backend, blank.queue_timeout_us) == ("auto", 0)


def _from_flags(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *flags: str) -> Settings:
    for key in (
        names.ENV_MAX_QUEUE_SIZE,
        names.ENV_QUEUE_TIMEOUT_US,
        names.ENV_BACKEND,
        names.ENV_PRECISION,
        names.ENV_MODEL_NAME,
        names.ENV_MODEL_URI,
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_from_args(parser().parse_args(list(flags)))


def test_flags_override_the_environment_which_overrides_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        names.ENV_MAX_QUEUE_SIZE: "64",
        names.ENV_QUEUE_TIMEOUT_US: "2000",
        names.ENV_BACKEND: "tensorrt",
        names.ENV_PRECISION: "fp16",
    }
    from_env = _from_flags(monkeypatch, env)
    assert (from_env.max_queue_size, from_env.queue_timeout_us) == (64, 2000)
    assert (from_env.backend, from_env.precision) == ("tensorrt", "fp16")
    flagged = _from_flags(
        monkeypatch,
        env,
        *("--max-queue-size", "8", "--queue-timeout-us", "0"),
        *("--backend", "onnxruntime", "--precision", "fp32"),
    )
    assert (flagged.max_queue_size, flagged.queue_timeout_us) == (8, 0)
    assert (flagged.backend, flagged.precision) == ("onnxruntime", "fp32")
    # No flag, no variable: the defaults.
    plain = _from_flags(monkeypatch, {})
    assert (plain.max_queue_size, plain.queue_timeout_us, plain.backend) == (128, 0, "auto")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-queue-size", "0"], ("--max-queue-size", "at least 1")),
        (["--queue-timeout-us", "-1"], ("--queue-timeout-us", "at least 0")),
    ],
)
def test_a_flag_out_of_range_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _from_flags(monkeypatch, {}, *flags)
    for word in words:
        assert word in caught.value.message


@pytest.mark.parametrize("flags", [["--backend", "cuda"], ["--precision", "int8"]])
def test_an_unknown_choice_is_a_usage_error(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(flags)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flags[0] in err and repr(flags[1]) in err
