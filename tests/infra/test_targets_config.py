"""Configuration rules for the deploy targets: model names and the Lambda timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    API_INTEGRATION_TIMEOUT_S,
    ConfigError,
    Environment,
    LambdaModel,
    load_environment,
    sagemaker_endpoint_name,
)


def lambda_model(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "target": "lambda", **extra}


def sagemaker_model(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "target": "sagemaker",
        "instance_type": "ml.g6.xlarge",
    }


@pytest.mark.parametrize(
    "name", ["light_resnet50", "resnet50.v2", "BERT-base", "a", "x" * 48, "yolo_v8-int8.q"]
)
def test_names_users_already_use_are_accepted(name: str) -> None:
    config = Environment.model_validate({"name": "dev", "models": [lambda_model(name)]})
    assert config.models[0].name == name


@pytest.mark.parametrize(
    "name", ["a/b", "x y", "_a", "a_", "-a", "a.", "é", "x" * 49, "a%20b", "", "a?b"]
)
def test_names_no_url_can_reach_are_refused_with_the_rule(tmp_path: Path, name: str) -> None:
    (tmp_path / "bad.toml").write_text(f'[[models]]\nname = "{name}"\ntarget = "lambda"\n')
    with pytest.raises(ConfigError) as caught:
        load_environment("bad", tmp_path)
    assert "bad.toml: models.0.name: model names are 1 to 48 characters" in str(caught.value)


def test_names_that_map_to_the_same_aws_name_are_a_config_error(tmp_path: Path) -> None:
    text = "".join(f'[[models]]\nname = "{n}"\ntarget = "lambda"\n' for n in ("res_net", "res-net"))
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ConfigError, match="models 'res_net' and 'res-net' both become 'res-net'"):
        load_environment("bad", tmp_path)


def test_sagemaker_endpoint_names_map_underscores_dots_and_case() -> None:
    assert sagemaker_endpoint_name("prod", "light_resnet50") == "inferstack-prod-light-resnet50"
    assert sagemaker_endpoint_name("prod", "Dense_Net.v2") == "inferstack-prod-dense-net-v2"


def test_an_endpoint_name_sagemaker_would_refuse_fails_when_the_file_loads(
    tmp_path: Path,
) -> None:
    """63 characters at most: said when the configuration loads, not as a synth traceback."""
    env = "e" * 32
    name = "m" * 30
    (tmp_path / f"{env}.toml").write_text(
        f'[[models]]\nname = "{name}"\ntarget = "sagemaker"\ninstance_type = "ml.g6.xlarge"\n'
    )
    with pytest.raises(ConfigError, match=f"model '{name}': its SageMaker endpoint name"):
        load_environment(env, tmp_path)
    # The same name fits on Lambda, which derives no AWS name from it.
    Environment.model_validate({"name": env, "models": [lambda_model(name)]})


def test_the_default_lambda_timeout_leaves_the_api_time_to_answer() -> None:
    model = LambdaModel.model_validate(lambda_model("wine"))
    assert model.timeout_s < API_INTEGRATION_TIMEOUT_S
    assert model.timeout_s == 25


@pytest.mark.parametrize("timeout", [27, 29, 60])
def test_a_lambda_timeout_the_api_cannot_wait_for_is_refused(tmp_path: Path, timeout: int) -> None:
    (tmp_path / "bad.toml").write_text(
        f'[[models]]\nname = "wine"\ntarget = "lambda"\ntimeout_s = {timeout}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_environment("bad", tmp_path)
    message = str(caught.value)
    assert "bad.toml: models.0.timeout_s: at most 26 s" in message
    assert "API Gateway stops waiting after 29 s and answers 504" in message
    assert f"(got {timeout})" in message
