"""GPU serving with TensorRT engines and dynamic batching (issue 9), as the CDK app deploys it:
the queue and precision settings reach the container, a task that builds its engine stays
alive and takes no traffic, start-up limits cover the build, the engine cache is readable and
writable by the serving roles only for their model, ECS scales on GPU utilization, and a new
GPU AMI reaches running instances."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from inferstack import names

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

    from tests.infra.conftest import Synthesized

CONFIG: dict[str, Any] = {
    "name": "test",
    "models": [
        {
            "name": "resnet50",
            "target": "sagemaker",
            "instance_type": "ml.g6.xlarge",
            "engine_build_timeout_s": 1800,
            "startup_health_check_timeout_s": 2400,
            "precision": "fp16",
            "batching": {
                "max_batch_size": 32,
                "max_queue_delay_us": 1000,
                "max_queue_size": 300,
                "queue_timeout_us": 250_000,
            },
        },
        {
            "name": "densenet121",
            "target": "ecs",
            "instance_type": "g6.xlarge",
            "engine_build_timeout_s": 1700,
            "autoscaling": {"min_capacity": 2, "max_capacity": 4, "target_gpu_utilization": 55},
        },
    ],
}


@pytest.fixture(scope="module")
def built() -> tuple[Any, Template]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import feature_flags
    from infra.config import Environment
    from infra.constructs.ecs_model import EcsGpuService, GpuNetwork
    from infra.constructs.model_store import ModelStore
    from infra.constructs.sagemaker_model import SageMakerEndpoint

    config = Environment.model_validate(CONFIG)
    sagemaker_model, ecs_model = config.models
    app = cdk.App(context=feature_flags())
    stack = cdk.Stack(app, "Test", env=cdk.Environment(account="123456789012", region="us-east-1"))
    store = ModelStore(stack, "Store", config=config)
    endpoint = SageMakerEndpoint(stack, "Sm", config=config, model=sagemaker_model, store=store)
    network = GpuNetwork(stack, "Net", config=config)
    service = EcsGpuService(
        stack, "Ecs", config=config, model=ecs_model, store=store, network=network
    )
    return (stack, endpoint, service), Template.from_stack(stack)


@pytest.fixture(scope="module")
def template(built: tuple[Any, Template]) -> Template:
    return built[1]


def _container(template: Template) -> dict[str, Any]:
    (definition,) = template.find_resources("AWS::ECS::TaskDefinition").values()
    (container,) = definition["Properties"]["ContainerDefinitions"]
    return dict(container)


def _ecs_environment(template: Template) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in _container(template)["Environment"]}


def _sagemaker_environment(template: Template) -> dict[str, Any]:
    (model,) = template.find_resources("AWS::SageMaker::Model").values()
    return dict(model["Properties"]["PrimaryContainer"]["Environment"])


# ------------------------------------------------------------------ the container's settings


def test_queue_and_precision_settings_reach_both_containers_as_the_runtime_reads_them(
    template: Template,
) -> None:
    from inferstack.settings import Settings

    sagemaker = _sagemaker_environment(template)
    assert sagemaker[names.ENV_MAX_QUEUE_SIZE] == "300"
    assert sagemaker[names.ENV_QUEUE_TIMEOUT_US] == "250000"
    assert sagemaker[names.ENV_PRECISION] == "fp16"
    ecs = _ecs_environment(template)
    # The defaults of a GPU target: 128 waiting, a second at most, the FP32 original.
    assert ecs[names.ENV_MAX_QUEUE_SIZE] == "128"
    assert ecs[names.ENV_QUEUE_TIMEOUT_US] == "1000000"
    assert ecs[names.ENV_PRECISION] == "fp32"
    plain = {k: v for k, v in sagemaker.items() if isinstance(v, str)}
    settings = Settings.from_env({**plain, names.ENV_MODEL_URI: "s3://b/k"}, server=True)
    assert (settings.max_queue_size, settings.queue_timeout_us, settings.precision) == (
        300,
        250_000,
        "fp16",
    )


def test_every_environment_sends_its_queue_settings_to_its_gpu_containers(
    env: Synthesized,
) -> None:
    from infra.config import GpuModelBase, Target

    gpu = {m.name: m for t in (Target.SAGEMAKER, Target.ECS) for m in env.config.models_on(t)}
    found = []
    for resource in env.template.find_resources("AWS::SageMaker::Model").values():
        found.append(resource["Properties"]["PrimaryContainer"]["Environment"])
    for resource in env.template.find_resources("AWS::ECS::TaskDefinition").values():
        for container in resource["Properties"]["ContainerDefinitions"]:
            found.append({e["Name"]: e["Value"] for e in container["Environment"]})
    assert len(found) == len(gpu)
    for environment in found:
        model = gpu[environment[names.ENV_MODEL_NAME]]
        assert isinstance(model, GpuModelBase)
        assert environment[names.ENV_MAX_QUEUE_SIZE] == str(model.batching.max_queue_size)
        assert environment[names.ENV_QUEUE_TIMEOUT_US] == str(model.batching.queue_timeout_us)
        assert environment[names.ENV_PRECISION] == model.precision


# ------------------------------------------------------------------ start-up and health


def test_a_task_building_its_engine_is_alive_but_takes_no_traffic(template: Template) -> None:
    """The container check asks liveness (200 while building, so a build longer than the
    300 s start period never restarts the container); the load balancer asks /ping (503
    until the model serves), so no request reaches a task still building."""
    command = " ".join(_container(template)["HealthCheck"]["Command"])
    assert "/v2/health/live" in command
    assert names.PING_PATH not in command
    (group,) = template.find_resources("AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert group["Properties"]["HealthCheckPath"] == names.PING_PATH


def test_ecs_gives_a_cold_build_the_configured_time_before_replacing_a_task(
    template: Template,
) -> None:
    (service,) = template.find_resources("AWS::ECS::Service").values()
    assert service["Properties"]["HealthCheckGracePeriodSeconds"] == 1700


def test_sagemaker_start_up_timeout_covers_the_build(template: Template) -> None:
    (config,) = template.find_resources("AWS::SageMaker::EndpointConfig").values()
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 2400


def _gpu_model(**overrides: Any) -> dict[str, Any]:
    model = dict(CONFIG["models"][0])
    model.pop("batching")
    return {**model, **overrides}


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            _gpu_model(engine_build_timeout_s=1800, startup_health_check_timeout_s=1200),
            "startup_health_check_timeout_s (1200) is shorter than engine_build_timeout_s (1800)",
        ),
        (_gpu_model(engine_build_timeout_s=3601), "less than or equal to 3600"),
        (_gpu_model(engine_build_timeout_s=59), "greater than or equal to 60"),
        (_gpu_model(precision="int8"), "'fp32' or 'fp16'"),
        (_gpu_model(batching={"max_queue_size": 0}), "greater than or equal to 1"),
        (_gpu_model(batching={"max_queue_size": 100_001}), "less than or equal to 100000"),
        (_gpu_model(batching={"queue_timeout_us": 60_000_001}), "less than or equal to 60000000"),
        (
            _gpu_model(autoscaling={"target_gpu_utilization": 50}),
            "SageMaker endpoints scale on invocations per instance",
        ),
        (
            {**CONFIG["models"][1], "autoscaling": {"target_invocations_per_minute": 500}},
            "ECS services scale on GPU utilization",
        ),
        (
            {**CONFIG["models"][1], "autoscaling": {"target_gpu_utilization": 0}},
            "greater than or equal to 1",
        ),
    ],
)
def test_gpu_settings_out_of_bounds_are_refused(model: dict[str, Any], words: str) -> None:
    from pydantic import ValidationError

    from infra.config import Environment

    with pytest.raises(ValidationError) as caught:
        Environment.model_validate({"name": "bad", "models": [model]})
    assert words in str(caught.value)


# ------------------------------------------------------------------ the engine cache


def _statements(template: Template, stack: Any, role: Any) -> list[dict[str, Any]]:
    logical = stack.get_logical_id(role.node.default_child)
    found: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": logical} in policy["Properties"]["Roles"]:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def _object_grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """S3 object key pattern (the part after the bucket ARN) -> the actions granted on it."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        actions = statement["Action"]
        actions = actions if isinstance(actions, list) else [actions]
        resources = statement["Resource"]
        for resource in resources if isinstance(resources, list) else [resources]:
            if isinstance(resource, dict) and "Fn::Join" in resource:
                key = resource["Fn::Join"][1][-1]
                grants.setdefault(key, set()).update(a for a in actions if a.startswith("s3:"))
    return grants


@pytest.mark.parametrize("which", ["sagemaker", "ecs"])
def test_serving_roles_read_and_write_their_own_engine_cache(
    built: tuple[Any, Template], which: str
) -> None:
    (stack, endpoint, service), template = built
    role = endpoint.role if which == "sagemaker" else service.service.task_definition.task_role
    model = "resnet50" if which == "sagemaker" else "densenet121"
    other = "densenet121" if which == "sagemaker" else "resnet50"
    grants = _object_grants(_statements(template, stack, role))
    cache = f"/{names.ENGINES_PREFIX}{model}/*"
    assert {"s3:GetObject", "s3:PutObject"} <= grants.get(cache, set()), grants
    assert not any(other in key for key in grants), grants


# ------------------------------------------------------------------ ECS scaling and AMIs


def test_ecs_scales_on_the_gpu_utilization_the_container_publishes(template: Template) -> None:
    from infra.constructs.monitoring import METRIC_DIMENSIONS

    targets = template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget")
    (ecs_target,) = [k for k, t in targets.items() if t["Properties"]["ServiceNamespace"] == "ecs"]
    policies = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
        if p["Properties"]["ScalingTargetId"] == {"Ref": ecs_target}
    ]
    (tracking,) = policies  # GPU utilization only: no CPU policy any more
    assert tracking["TargetValue"] == 55
    metric = tracking["CustomizedMetricSpecification"]
    assert metric["Namespace"] == names.METRICS_NAMESPACE
    assert metric["MetricName"] == names.METRIC_GPU_UTILIZATION
    assert metric["Statistic"] == "Average"
    dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
    # Exactly the published set: a metric with one dimension more or less is another metric.
    assert (frozenset(dimensions),) == METRIC_DIMENSIONS[names.METRIC_GPU_UTILIZATION]
    assert dimensions == {
        names.DIM_SERVICE: names.SERVICE_NAME,
        names.DIM_ENVIRONMENT: "test",
        names.DIM_MODEL: "densenet121",
    }


def test_a_new_gpu_ami_replaces_running_instances_keeping_min_capacity(
    template: Template,
) -> None:
    (group,) = template.find_resources("AWS::AutoScaling::AutoScalingGroup").values()
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MaxBatchSize"] == 1
    assert rolling["MinInstancesInService"] == 2
    # The AMI comes from the launch template, whose new version the group follows.
    assert "LatestVersionNumber" in json.dumps(group["Properties"]["LaunchTemplate"])


# ------------------------------------------------------------------ the promoter


def test_the_promoter_learns_each_gpu_targets_precision(
    synthesized: dict[str, Synthesized],
) -> None:
    from infra.config import Target
    from infra.constructs.promoter import ModelPromoter

    prod = synthesized["prod"]
    (promoter,) = [c for c in prod.stack.node.find_all() if isinstance(c, ModelPromoter)]
    for model in prod.config.models:
        target = promoter.targets[model.name]
        if model.target is Target.LAMBDA:
            assert "precision" not in target
        else:
            assert target["precision"] == model.precision
