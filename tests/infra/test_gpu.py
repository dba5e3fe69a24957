"""GPU serving: the SageMaker endpoint and the ECS GPU service, alone and in each environment.

One small stack (model store + SageMaker endpoint + GPU network + ECS service) is built once
for the module; the environment-level tests use the session's synthesized stacks.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

    from tests.infra.conftest import Synthesized

ROOT = Path(__file__).resolve().parents[2]
AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"

CONFIG: dict[str, Any] = {
    "name": "test",
    "models": [
        {
            "name": "resnet50",
            "target": "sagemaker",
            "instance_type": "ml.g6.xlarge",
            "inference_ami_version": "al2023-ami-sagemaker-inference-gpu-4-1",
            "startup_health_check_timeout_s": 900,
            "engine_build_timeout_s": 900,
            "autoscaling": {
                "min_capacity": 2,
                "max_capacity": 5,
                "target_invocations_per_minute": 4000,
            },
            "capture_rate": 0.2,
            "alarms": {"error_rate_percent": 2, "p99_latency_ms": 250, "evaluation_periods": 2},
        },
        {
            "name": "densenet121",
            "target": "ecs",
            "instance_type": "g6.xlarge",
            "gpu_count": 1,
            "engine_build_timeout_s": 1500,
            "autoscaling": {"min_capacity": 1, "max_capacity": 3},
        },
    ],
}


@pytest.fixture(scope="module")
def built() -> tuple[Any, Template]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.app import feature_flags
    from infra.config import Environment
    from infra.constructs.ecs_model import EcsGpuService, GpuNetwork
    from infra.constructs.model_store import ModelStore
    from infra.constructs.sagemaker_model import SageMakerEndpoint

    config = Environment.model_validate(CONFIG)
    sagemaker_model, ecs_model = config.models
    app = cdk.App(context=feature_flags())  # cdk.json's flags, as the CLI applies them
    stack = cdk.Stack(app, "Test", env=cdk.Environment(account="123456789012", region="us-east-1"))
    store = ModelStore(stack, "Store", config=config)
    endpoint = SageMakerEndpoint(stack, "Sm", config=config, model=sagemaker_model, store=store)
    network = GpuNetwork(stack, "Net", config=config)
    service = EcsGpuService(
        stack, "Ecs", config=config, model=ecs_model, store=store, network=network
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks())
    template = Template.from_stack(stack)
    return (stack, endpoint, service), template


@pytest.fixture(scope="module")
def template(built: tuple[Any, Template]) -> Template:
    return built[1]


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return template.find_resources(kind)


def only(template: Template, kind: str) -> dict[str, Any]:
    found = resources(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.values()))["Properties"]


def ref_id(value: dict[str, Any]) -> str:
    return value["Ref"]


# ------------------------------------------------------------------ SageMaker


def test_endpoint_deploys_blue_green_canary_and_rolls_back_on_its_alarms(
    template: Template,
) -> None:
    from aws_cdk.assertions import Capture, Match

    errors, latency = Capture(), Capture()
    template.has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "EndpointName": "inferstack-test-resnet50",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                        "WaitIntervalInSeconds": 300,
                    },
                    "TerminationWaitInSeconds": 600,
                    "MaximumExecutionTimeoutInSeconds": 3600,
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [{"AlarmName": errors}, {"AlarmName": latency}]
                },
            },
            "EndpointConfigName": Match.any_value(),
        },
    )
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    error_alarm = alarms[ref_id(errors.as_object())]["Properties"]
    metrics = {
        m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]["Dimensions"]
        for m in error_alarm["Metrics"]
        if "MetricStat" in m
    }
    assert set(metrics) == {"Invocation5XXErrors", "Invocations"}
    assert {"Name": "VariantName", "Value": "live"} in metrics["Invocation5XXErrors"]
    assert error_alarm["Threshold"] == 2
    assert error_alarm["EvaluationPeriods"] == 2

    latency_alarm = alarms[ref_id(latency.as_object())]["Properties"]
    assert latency_alarm["MetricName"] == "ModelLatency"
    assert latency_alarm["Namespace"] == "AWS/SageMaker"
    assert latency_alarm["ExtendedStatistic"] == "p99"
    assert latency_alarm["Threshold"] == 250_000  # ModelLatency is in microseconds
    assert {"Name": "EndpointName", "Value": "inferstack-test-resnet50"} in latency_alarm[
        "Dimensions"
    ]


def test_endpoint_config_pins_the_driver_and_captures_traffic_for_drift(
    template: Template,
) -> None:
    from aws_cdk.assertions import Match

    template.has_resource_properties(
        "AWS::SageMaker::EndpointConfig",
        {
            "ProductionVariants": [
                Match.object_like(
                    {
                        "VariantName": "live",
                        "InstanceType": "ml.g6.xlarge",
                        "InitialInstanceCount": 2,
                        "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1",
                        "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                        "ModelDataDownloadTimeoutInSeconds": Match.any_value(),
                    }
                )
            ],
            "DataCaptureConfig": Match.object_like(
                {
                    "EnableCapture": True,
                    "InitialSamplingPercentage": 20,
                    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                    "KmsKeyId": Match.any_value(),
                }
            ),
            # ml.g6 has NVMe instance storage: CreateEndpointConfig rejects a KmsKeyId.
            "KmsKeyId": Match.absent(),
        },
    )
    config = only(template, "AWS::SageMaker::EndpointConfig")
    destination = json.dumps(config["DataCaptureConfig"]["DestinationS3Uri"])
    assert "/capture/resnet50/" in destination


@pytest.mark.parametrize(
    ("instance_type", "local_storage"),
    [
        ("ml.g4dn.xlarge", True),
        ("ml.g5.2xlarge", True),
        ("ml.g6.xlarge", True),
        ("ml.g6e.xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.m5d.large", True),
        ("ml.c5.xlarge", False),
        ("ml.m5.large", False),
        ("ml.inf2.xlarge", False),
    ],
)
def test_volume_kms_key_only_where_the_instance_has_no_local_storage(
    instance_type: str, local_storage: bool
) -> None:
    from infra.constructs.sagemaker_model import has_instance_storage

    assert has_instance_storage(instance_type) is local_storage


def test_endpoint_container_gets_the_model_and_batching_settings(template: Template) -> None:
    container = only(template, "AWS::SageMaker::Model")["PrimaryContainer"]
    env = container["Environment"]
    assert env["INFERSTACK_MODEL_NAME"] == "resnet50"
    assert env["INFERSTACK_ENV"] == "test"
    assert env["INFERSTACK_MAX_BATCH_SIZE"] == "8"
    assert "/releases/resnet50/live.json" in json.dumps(env["INFERSTACK_MODEL_URI"])
    assert "container-assets" in json.dumps(container["Image"])


def _role_statements(template: Template, role_logical_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        if {"Ref": role_logical_id} in props["Roles"]:
            statements += props["PolicyDocument"]["Statement"]
    return statements


def _object_resources(statements: list[dict[str, Any]]) -> list[str]:
    """Every S3 object ARN in the statements, rendered as text (the bucket is a token)."""
    found = []
    for statement in statements:
        if not any(str(a).startswith("s3:") for a in _as_list(statement["Action"])):
            continue
        for resource in _as_list(statement["Resource"]):
            text = json.dumps(resource)
            if "Bucket" in text:
                found.append(text)
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_execution_role_reads_only_its_own_model(built: tuple[Any, Template]) -> None:
    (stack, endpoint, _), template = built
    role_id = stack.get_logical_id(endpoint.role.node.default_child)
    statements = _role_statements(template, role_id)
    # Listing the bucket (a missing live pointer reads as 404, not 403) names no object.
    listing = [s for s in statements if _as_list(s["Action"]) == ["s3:ListBucket"]]
    assert [json.dumps(s["Resource"]) for s in listing] == [
        json.dumps(stack.resolve(stack.node.find_child("Store").bucket.bucket_arn))
    ]
    objects = _object_resources([s for s in statements if s not in listing])
    assert objects, "the role should read its model and write its capture prefix"
    for text in objects:
        prefixes = ("models", "releases", "capture", "engines")
        assert any(f"/{p}/resnet50/" in text for p in prefixes), text
        assert "densenet121" not in text
    # DescribeAlarms (auto-rollback) only on the endpoint's own rollback alarms.
    describe = [s for s in statements if s["Action"] == "cloudwatch:DescribeAlarms"]
    assert len(describe) == 1
    alarm_arns = [stack.resolve(a.alarm_arn) for a in endpoint.rollback_alarms]
    assert _as_list(describe[0]["Resource"]) == alarm_arns


def test_endpoint_scales_on_invocations_per_instance(template: Template) -> None:
    from aws_cdk.assertions import Capture

    target = Capture()
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": "endpoint/inferstack-test-resnet50/variant/live",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "MinCapacity": 2,
            "MaxCapacity": 5,
        },
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": target,
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "TargetValue": 4000,
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )


def test_endpoint_name_too_long_for_sagemaker_is_a_config_error() -> None:
    from pydantic import ValidationError

    from infra.config import Environment

    long = "m" * 32
    with pytest.raises(ValidationError, match=f"model '{long}': its SageMaker endpoint name"):
        Environment.model_validate(
            {
                "name": "e" * 32,
                "models": [
                    {
                        "name": long,
                        "target": "sagemaker",
                        "instance_type": "ml.g6.xlarge",
                    }
                ],
            }
        )


# ------------------------------------------------------------------ ECS


def test_gpu_instances_use_the_al2023_gpu_ami_resolved_at_deploy_time(
    template: Template,
) -> None:
    from aws_cdk.assertions import Capture, Match

    image = Capture()
    template.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "ImageId": image,
                    "InstanceType": "g6.xlarge",
                    "MetadataOptions": Match.object_like({"HttpTokens": "required"}),
                    "BlockDeviceMappings": [
                        Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})
                    ],
                }
            )
        },
    )
    parameter = template.to_json()["Parameters"][ref_id(image.as_object())]
    assert parameter == {
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": AMI_PARAMETER,
    }


def test_instances_join_the_cluster_through_a_managed_capacity_provider(
    template: Template,
) -> None:
    from aws_cdk.assertions import Capture, Match

    provider = Capture()
    template.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": Match.object_like(
                {
                    "ManagedScaling": Match.object_like({"Status": "ENABLED"}),
                    # Draining, not termination protection: protected instances would
                    # block the group's deletion (test_targets_updates.py).
                    "ManagedTerminationProtection": "DISABLED",
                    "ManagedDraining": "ENABLED",
                }
            )
        },
    )
    template.has_resource_properties(
        "AWS::ECS::Service",
        {"CapacityProviderStrategy": [Match.object_like({"CapacityProvider": provider})]},
    )
    assert ref_id(provider.as_object()) in resources(template, "AWS::ECS::CapacityProvider")
    template.has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {"MinSize": "1", "NewInstancesProtectedFromScaleIn": Match.absent()},
    )


def test_task_reserves_gpus_and_checks_liveness(template: Template) -> None:
    from aws_cdk.assertions import Match

    from infra.constructs.ecs_model import CONTAINER_HEALTH_PATH

    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["EC2"],
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "ResourceRequirements": [{"Type": "GPU", "Value": "1"}],
                        "PortMappings": [Match.object_like({"ContainerPort": 8080})],
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                        "HealthCheck": Match.object_like(
                            {
                                "Command": Match.array_with(
                                    [Match.string_like_regexp(f".*{CONTAINER_HEALTH_PATH}.*")]
                                )
                            }
                        ),
                        "Environment": Match.array_with(
                            [{"Name": "INFERSTACK_MODEL_NAME", "Value": "densenet121"}]
                        ),
                    }
                )
            ],
        },
    )


def test_service_rolls_back_deploys_whose_tasks_do_not_come_up(template: Template) -> None:
    from aws_cdk.assertions import Match

    template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": {
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
            },
            "HealthCheckGracePeriodSeconds": 1500,  # the model's engine_build_timeout_s
            "DesiredCount": Match.absent(),
            "LoadBalancers": [Match.object_like({"ContainerPort": 8080})],
        },
    )


def test_service_is_reached_only_through_an_internal_nlb(template: Template) -> None:
    from aws_cdk.assertions import Match

    from infra.constructs.ecs_model import HEALTH_PATH

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {"Type": "network", "Scheme": "internal"},
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Port": 80, "Protocol": "TCP"}
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 8080,
            "TargetType": "ip",
            "HealthCheckProtocol": "HTTP",
            "HealthCheckPath": HEALTH_PATH,
        },
    )
    # Nothing is open to the internet; tasks accept 8080 from the NLB's group only.
    for group in resources(template, "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0", rule
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"FromPort": 8080, "ToPort": 8080, "SourceSecurityGroupId": Match.any_value()},
    )


def test_service_scales_between_configured_bounds(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"ServiceNamespace": "ecs", "MinCapacity": 1, "MaxCapacity": 3},
    )


def test_network_has_flow_logs_private_endpoints_and_container_insights(
    template: Template,
) -> None:
    from aws_cdk.assertions import Match

    template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL"}
    )
    endpoints = [
        json.dumps(r["Properties"]["ServiceName"])
        for r in resources(template, "AWS::EC2::VPCEndpoint").values()
    ]
    for service in ("ecr.api", "ecr.dkr", "logs", "s3"):
        assert any(service in name for name in endpoints), (service, endpoints)
    template.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": Match.array_with([{"Name": "containerInsights", "Value": "enabled"}])},
    )
    # Non-production: one shared NAT gateway.
    assert len(resources(template, "AWS::EC2::NatGateway")) == 1


def test_one_image_asset_serves_both_targets(template: Template) -> None:
    sagemaker_image = json.dumps(only(template, "AWS::SageMaker::Model")["PrimaryContainer"])
    ecs_image = json.dumps(only(template, "AWS::ECS::TaskDefinition")["ContainerDefinitions"])
    digest = sagemaker_image.split("container-assets-123456789012-us-east-1:")[1][:64]
    assert digest in ecs_image


def test_gpu_constructs_have_no_unsuppressed_nag_findings(built: tuple[Any, Template]) -> None:
    from aws_cdk.assertions import Annotations, Match

    (stack, _, _), _ = built
    annotations = Annotations.from_stack(stack)
    pattern = Match.string_like_regexp("AwsSolutions-.*")
    # The VPC's restrict-default-SG provider is a stack-level singleton the VPC brings.
    mine = ("/Test/Sm", "/Test/Ecs", "/Test/Net", "/Test/GpuImage", "/Test/Custom::Vpc")
    findings = [
        f"{a.id}: {a.entry.data}"
        for a in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))
        if a.id.startswith(mine)
    ]
    assert not findings, "\n".join(findings)


# ------------------------------------------------------------------ image entry point


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gpu_entrypoint", ROOT / "gpu_endpoints" / "entrypoint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_declares_the_sagemaker_contract() -> None:
    dockerfile = (ROOT / "gpu_endpoints" / "Dockerfile").read_text()
    assert "LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in dockerfile
    assert 'ENTRYPOINT ["python", "/opt/inferstack/entrypoint.py"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile


# ------------------------------------------------------------------ environments


def test_each_environment_gets_exactly_its_gpu_targets(env: Synthesized) -> None:
    from inferstack.names import aws_name
    from infra.config import Target

    endpoints = env.template.find_resources("AWS::SageMaker::Endpoint").values()
    names = sorted(r["Properties"]["EndpointName"] for r in endpoints)
    sagemaker_models = env.config.models_on(Target.SAGEMAKER)
    assert names == sorted(
        f"inferstack-{env.config.name}-{aws_name(m.name)}" for m in sagemaker_models
    )
    services = env.template.find_resources("AWS::ECS::Service")
    assert len(services) == len(env.config.models_on(Target.ECS))


def test_prod_serves_resnet50_on_sagemaker_and_densenet121_on_ecs(
    synthesized: dict[str, Synthesized],
) -> None:
    from aws_cdk.assertions import Match

    prod = synthesized["prod"].template
    prod.has_resource_properties(
        "AWS::SageMaker::Endpoint", {"EndpointName": "inferstack-prod-resnet50"}
    )
    prod.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Environment": Match.array_with(
                            [{"Name": "INFERSTACK_MODEL_NAME", "Value": "densenet121"}]
                        )
                    }
                )
            ]
        },
    )
    # Production: one NAT gateway per AZ.
    assert len(prod.find_resources("AWS::EC2::NatGateway")) == 2


def test_dev_has_no_gpu_infrastructure(synthesized: dict[str, Synthesized]) -> None:
    dev = synthesized["dev"].template
    for kind in ("AWS::SageMaker::Endpoint", "AWS::ECS::Service", "AWS::EC2::VPC"):
        assert not dev.find_resources(kind), kind
