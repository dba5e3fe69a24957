"""Every variable the CDK app sets on a serving function or container is one the runtime
reads, and every value it sets is one the runtime accepts (the synthesized templates of
every environment, against inferstack.settings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inferstack import names
from inferstack.settings import RUNTIME_ENVIRONMENT_VARIABLES, Settings

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_DOCKERFILE = REPO_ROOT / "gpu_endpoints" / "Dockerfile"
# Python's own variables, which the image sets for the interpreter.
PYTHON_VARIABLES = {"PYTHONPATH", "PYTHONUNBUFFERED"}
# Read by the NVIDIA container runtime, not by us: which driver libraries it mounts.
CONTAINER_RUNTIME_VARIABLES = {"NVIDIA_DRIVER_CAPABILITIES"}
# What a deploy-time token (an S3 URI built with Fn::Join, say) stands for here.
TOKEN_VALUES = {names.ENV_MODEL_URI: "s3://bucket/models/m/model.onnx"}


def plain(environment: dict[str, Any]) -> dict[str, str]:
    """Variable -> value, with CloudFormation intrinsics replaced by a plausible value."""
    return {
        key: value if isinstance(value, str) else TOKEN_VALUES.get(key, "token")
        for key, value in environment.items()
    }


def serving_functions(env: Synthesized) -> dict[str, dict[str, str]]:
    """Model name -> environment of each Lambda inference function."""
    from infra.config import Target

    lambda_models = {m.name for m in env.config.models_on(Target.LAMBDA)}
    found = {}
    for resource in env.template.find_resources("AWS::Lambda::Function").values():
        variables = plain(resource["Properties"].get("Environment", {}).get("Variables", {}))
        if variables.get(names.ENV_MODEL_NAME) in lambda_models:
            found[variables[names.ENV_MODEL_NAME]] = variables
    assert set(found) == lambda_models, "an inference function without its model name"
    return found


def sagemaker_containers(env: Synthesized) -> list[dict[str, str]]:
    containers = []
    for resource in env.template.find_resources("AWS::SageMaker::Model").values():
        properties = resource["Properties"]
        for container in [properties.get("PrimaryContainer"), *properties.get("Containers", [])]:
            if container:
                containers.append(plain(container.get("Environment", {})))
    return containers


def ecs_containers(env: Synthesized) -> list[dict[str, str]]:
    containers = []
    for resource in env.template.find_resources("AWS::ECS::TaskDefinition").values():
        for container in resource["Properties"]["ContainerDefinitions"]:
            pairs = container.get("Environment", [])
            containers.append(plain({pair["Name"]: pair["Value"] for pair in pairs}))
    return containers


def image_environment() -> dict[str, str]:
    """The ENV the GPU serving image sets (gpu_endpoints/Dockerfile)."""
    text = GPU_DOCKERFILE.read_text().replace("\\\n", " ")
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


def unread(environment: dict[str, str]) -> set[str]:
    return set(environment) - RUNTIME_ENVIRONMENT_VARIABLES


def test_every_variable_set_on_an_inference_function_is_read(env: Synthesized) -> None:
    for model, environment in serving_functions(env).items():
        assert not unread(environment), f"{model}: set but read by nothing: {unread(environment)}"
        settings = Settings.from_env(environment)  # accepted as the function's init would
        assert settings.model.name == model
        assert settings.environment == env.config.name


def test_every_variable_set_on_a_gpu_container_is_read(env: Synthesized) -> None:
    from infra.config import GpuModelBase, Target

    containers = sagemaker_containers(env) + ecs_containers(env)
    gpu_models = {
        m.name: m for target in (Target.SAGEMAKER, Target.ECS) for m in env.config.models_on(target)
    }
    assert len(containers) == len(gpu_models)
    image = image_environment()
    for environment in containers:
        assert not unread(environment), f"set but read by nothing: {unread(environment)}"
        # What the container's `inferstack serve` makes of the image's and the app's ENV.
        settings = Settings.from_env({**image, **environment}, server=True)
        model = gpu_models[settings.model.name]
        assert isinstance(model, GpuModelBase)
        assert settings.host == "0.0.0.0"
        assert settings.port == 8080
        assert settings.metrics is True
        assert settings.environment == env.config.name
        assert (settings.max_batch_size, settings.max_queue_delay_us) == (
            model.batching.max_batch_size,
            model.batching.max_queue_delay_us,
        )


def test_every_variable_the_serving_image_sets_is_read() -> None:
    unread_by_us = unread(image_environment()) - PYTHON_VARIABLES - CONTAINER_RUNTIME_VARIABLES
    assert not unread_by_us, f"gpu_endpoints/Dockerfile sets {unread_by_us}, read by nothing"


@pytest.mark.parametrize("variable", sorted(RUNTIME_ENVIRONMENT_VARIABLES))
def test_the_runtime_set_is_built_from_the_shared_names(variable: str) -> None:
    shared = {v for k, v in vars(names).items() if k.startswith("ENV_") and isinstance(v, str)}
    assert variable in shared
