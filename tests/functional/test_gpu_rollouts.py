"""SageMaker and ECS rollouts against moto's control planes, with real boto3 clients.

The seams, named (shared/AWS-TESTING.md):
- SageMaker UpdateEndpoint raises NotImplementedError in moto. `OneCall` answers exactly that
  operation on the moto-backed client (a before-call handler, as botocore's Stubber works),
  after botocore has validated the request against the service model, and records it;
  every other call (CreateModel, CreateEndpointConfig, Describe*, ListTags, Delete*) is moto.
- moto's endpoint is InService from birth and never changes status, so the DescribeEndpoint
  answers `check` reads are built the same way: moto's own record of the endpoint with the
  status / config / FailureReason a real update goes through (API_DescribeEndpoint.html).
- moto's ECS keeps the old task definition in deployments[0] after update_service and drops
  deploymentConfiguration. The tests assert what moto does keep (the registered revision,
  the service's taskDefinition and desiredCount) and drive `check` with DescribeServices
  answers built from moto's service record and the Deployment fields of the API reference
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html).
- The state-change events are AWS's documented samples (tests/events/SOURCES-gpu-rollouts.md).
Every answer is validated against botocore's output shape, so none is a shape AWS cannot send.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from inferstack.release.rollout import ecs_target, sagemaker_target
from inferstack.release.rollout.base import Progress, ReleaseRef
from inferstack.release.rollout.ecs_target import EcsRollout
from inferstack.release.rollout.sagemaker_target import SageMakerRollout, next_name
from inferstack.release.rollout.targets import rollout_for

from .aws_doubles import OneCall
from .conftest import EVENTS_DIR

if TYPE_CHECKING:
    from collections.abc import Iterator

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/inferstack-dev-resnet-sagemaker"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/inferstack-gpu:abc123"
LIVE_URI = "s3://acme-models/releases/resnet/live.json"
RELEASE = ReleaseRef("resnet", "7", "s3://acme-models/releases/resnet/7/manifest.json")
ENDPOINT = "inferstack-dev-resnet"
LIVE_MODEL, LIVE_CONFIG = "Model-a1b2c3d4e5f6", "EndpointConfig-0a1b2c3d4e5f"
ENVIRONMENT = {
    "INFERSTACK_MODEL_NAME": "resnet",
    "INFERSTACK_MODEL_URI": LIVE_URI,
    "INFERSTACK_ENV": "dev",
    "INFERSTACK_MAX_BATCH_SIZE": "8",
}
VARIANT = {
    "VariantName": "live",
    "ModelName": LIVE_MODEL,
    "InstanceType": "ml.g4dn.xlarge",  # moto knows no g5,
    "InitialInstanceCount": 2,
    "InitialVariantWeight": 1.0,
    "InferenceAmiVersion": "al2-ami-sagemaker-inference-gpu-2",
    "ModelDataDownloadTimeoutInSeconds": 1200,
    "ContainerStartupHealthCheckTimeoutInSeconds": 900,
}
CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 5,
    "DestinationS3Uri": "s3://acme-models/capture/resnet/",
    "KmsKeyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
}
TAGS = [{"Key": "aws:cloudformation:stack-name", "Value": "inferstack-dev"}]
TAGS += [{"Key": "team", "Value": "ml"}]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


# --------------------------------------------------------------------------- SageMaker


@pytest.fixture
def sagemaker(aws: None) -> Any:
    """The endpoint as the stack deploys it (sagemaker_model.py): CloudFormation-named model
    and config, one variant "live", data capture, CloudFormation's own tags and a user tag."""
    client = boto3.client("sagemaker")
    client.create_model(
        ModelName=LIVE_MODEL,
        PrimaryContainer={"Image": IMAGE, "Environment": ENVIRONMENT},
        ExecutionRoleArn=ROLE,
        VpcConfig={"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0a1b2c3d"]},
        Tags=TAGS,
    )
    client.create_endpoint_config(
        EndpointConfigName=LIVE_CONFIG,
        ProductionVariants=[VARIANT],
        DataCaptureConfig=CAPTURE,
        Tags=TAGS,
    )
    client.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=LIVE_CONFIG)
    return client


def endpoint_answer(client: Any, **changes: Any) -> dict[str, Any]:
    """moto's DescribeEndpoint record with what a real update changes. moto echoes the
    create-time DataCaptureConfig; DescribeEndpoint answers a DataCaptureConfigSummary."""
    record = client.describe_endpoint(EndpointName=ENDPOINT)
    record.pop("ResponseMetadata")
    record["DataCaptureConfig"] = {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": CAPTURE["InitialSamplingPercentage"],
        "DestinationS3Uri": CAPTURE["DestinationS3Uri"],
        "KmsKeyId": CAPTURE["KmsKeyId"],
    }
    return {**record, **changes}


def started(client: Any) -> tuple[Progress, OneCall]:
    update = OneCall(client, "UpdateEndpoint", {"EndpointArn": f"arn:endpoint/{ENDPOINT}"})
    progress = SageMakerRollout(client, endpoint=ENDPOINT, role=ROLE).start(RELEASE)
    assert progress.phase == "in_progress", progress.reason
    return progress, update


def names(client: Any) -> tuple[set[str], set[str]]:
    models = {m["ModelName"] for m in client.list_models()["Models"]}
    configs = {c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]}
    return models, configs


def test_sagemaker_start_copies_the_live_model_and_config_pinning_the_release(
    sagemaker: Any,
) -> None:
    progress, update = started(sagemaker)
    state = progress.state or {}
    new = state["config"]
    assert state == {
        "endpoint": ENDPOINT,
        "config": new,
        "model": new,
        "previous_config": LIVE_CONFIG,
    }
    assert new.startswith(f"{ENDPOINT}-r7-") and len(new) <= 63

    live, model = (sagemaker.describe_model(ModelName=n) for n in (LIVE_MODEL, new))
    assert model["PrimaryContainer"]["Environment"] == {
        **ENVIRONMENT,
        "INFERSTACK_MODEL_URI": RELEASE.uri,
    }
    assert model["PrimaryContainer"]["Image"] == IMAGE
    for field in ("ExecutionRoleArn", "VpcConfig"):
        assert model[field] == live[field]

    config = sagemaker.describe_endpoint_config(EndpointConfigName=new)
    assert config["ProductionVariants"] == [{**VARIANT, "ModelName": new}]
    assert (
        config["DataCaptureConfig"]
        == sagemaker.describe_endpoint_config(EndpointConfigName=LIVE_CONFIG)["DataCaptureConfig"]
    )
    for arn in (model["ModelArn"], config["EndpointConfigArn"]):
        assert sagemaker.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]

    # Blue/green with the stack's canary + alarms, and the autoscaled instance count kept.
    assert update.calls == [
        {
            "EndpointName": ENDPOINT,
            "EndpointConfigName": new,
            "RetainAllVariantProperties": True,
            "RetainDeploymentConfig": True,
        }
    ]
    json.dumps(state)  # the orchestration stores it


@pytest.mark.parametrize("status", ["Updating", "SystemUpdating", "RollingBack"])
def test_sagemaker_check_waits_while_the_endpoint_updates(sagemaker: Any, status: str) -> None:
    progress, _ = started(sagemaker)
    OneCall(sagemaker, "DescribeEndpoint", endpoint_answer(sagemaker, EndpointStatus=status))
    checked = SageMakerRollout(sagemaker, endpoint=ENDPOINT).check(progress)
    assert checked.phase == "in_progress"
    assert checked.state == progress.state


def test_sagemaker_release_is_live_when_the_endpoint_runs_the_new_config(sagemaker: Any) -> None:
    progress, _ = started(sagemaker)
    new = (progress.state or {})["config"]
    OneCall(
        sagemaker,
        "DescribeEndpoint",
        endpoint_answer(sagemaker, EndpointStatus="Updating"),
        endpoint_answer(sagemaker, EndpointStatus="InService", EndpointConfigName=new),
    )
    rollout = SageMakerRollout(sagemaker, endpoint=ENDPOINT)
    assert rollout.check(progress).phase == "in_progress"
    assert rollout.check(progress) == Progress("succeeded", None, progress.state)
    assert new in names(sagemaker)[0] and new in names(sagemaker)[1]  # it serves: kept


def test_sagemaker_alarm_rollback_fails_the_release_and_removes_what_it_created(
    sagemaker: Any,
) -> None:
    progress, _ = started(sagemaker)
    why = "Alarm inferstack-dev-resnet-ErrorRate in ALARM; rolled back to the previous fleet"
    OneCall(
        sagemaker,
        "DescribeEndpoint",
        endpoint_answer(
            sagemaker, EndpointStatus="InService", EndpointConfigName=LIVE_CONFIG, FailureReason=why
        ),
    )
    checked = SageMakerRollout(sagemaker, endpoint=ENDPOINT).check(progress)
    assert checked.phase == "failed"
    assert checked.reason == f"SageMaker rolled back to {LIVE_CONFIG}: {why}"
    assert names(sagemaker) == ({LIVE_MODEL}, {LIVE_CONFIG})  # the live ones untouched


@pytest.mark.parametrize("status", ["Failed", "UpdateRollbackFailed"])
def test_sagemaker_failed_endpoint_fails_the_release_and_keeps_what_it_still_uses(
    sagemaker: Any, status: str
) -> None:
    progress, _ = started(sagemaker)
    new = (progress.state or {})["config"]
    why = "The primary container for production variant live did not pass the ping health check."
    OneCall(
        sagemaker,
        "DescribeEndpoint",
        endpoint_answer(
            sagemaker, EndpointStatus=status, EndpointConfigName=new, FailureReason=why
        ),
    )
    checked = SageMakerRollout(sagemaker, endpoint=ENDPOINT).check(progress)
    assert checked.phase == "failed"
    assert checked.reason == f"endpoint {ENDPOINT} is {status}: {why}"
    assert names(sagemaker) == ({LIVE_MODEL, new}, {LIVE_CONFIG, new})


def test_sagemaker_refused_update_leaves_nothing_behind(sagemaker: Any) -> None:
    refused = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "Cannot update in-progress endpoint"}},
        "UpdateEndpoint",
    )
    OneCall(sagemaker, "UpdateEndpoint", refused)
    progress = SageMakerRollout(sagemaker, endpoint=ENDPOINT).start(RELEASE)
    assert progress.phase == "failed"
    assert progress.reason == (
        f"could not update endpoint {ENDPOINT}: "
        "ValidationException: Cannot update in-progress endpoint"
    )
    assert names(sagemaker) == ({LIVE_MODEL}, {LIVE_CONFIG})


def test_sagemaker_busy_endpoint_is_not_touched(sagemaker: Any) -> None:
    OneCall(sagemaker, "DescribeEndpoint", endpoint_answer(sagemaker, EndpointStatus="Updating"))
    progress = SageMakerRollout(sagemaker, endpoint=ENDPOINT).start(RELEASE)
    assert progress.phase == "failed"
    assert "is Updating, not InService" in str(progress.reason)
    assert names(sagemaker) == ({LIVE_MODEL}, {LIVE_CONFIG})


def test_sagemaker_names_fit_and_keep_the_prefix_iam_matches() -> None:
    endpoint = "inferstack-production-" + "m" * 41  # 63 characters, SageMaker's most
    name = next_name(endpoint, "12345")
    assert len(name) <= 63
    assert name.startswith("inferstack-production-m") and "-r12345-" in name
    assert next_name(ENDPOINT, "1") != next_name(ENDPOINT, "1")  # a retry never collides


# --------------------------------------------------------------------------- ECS

CLUSTER, SERVICE, FAMILY = "inferstack-dev", "inferstack-dev-resnet", "inferstackdevresnet"
CONTAINER = {
    "name": "inference",
    "image": IMAGE,
    "cpu": 4096,
    "memory": 15000,
    "essential": True,
    "resourceRequirements": [{"value": "1", "type": "GPU"}],
    "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}],
    "environment": [{"name": k, "value": v} for k, v in ENVIRONMENT.items()],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "inferstack-dev-resnet", "awslogs-stream-prefix": "resnet"},
    },
    "healthCheck": {
        "command": ["CMD", "python", "-c", "import urllib.request"],
        "interval": 30,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 300,
    },
    "stopTimeout": 30,
}


@pytest.fixture
def ecs(aws: None) -> Any:
    """The service as ecs_model.py deploys it (awsvpc, EC2 GPU), scaled out to 3 tasks."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/20")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="tasks", Description="tasks", VpcId=vpc)
    client = boto3.client("ecs")
    client.create_cluster(clusterName=CLUSTER)
    client.register_task_definition(
        family=FAMILY,
        taskRoleArn=f"arn:aws:iam::{ACCOUNT}:role/task",
        executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/execution",
        networkMode="awsvpc",
        requiresCompatibilities=["EC2"],
        containerDefinitions=[CONTAINER],
        tags=[{"key": "team", "value": "ml"}],
    )
    client.create_service(
        cluster=CLUSTER,
        serviceName=SERVICE,
        taskDefinition=FAMILY,
        desiredCount=1,
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group["GroupId"]]}
        },
    )
    client.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=3)  # autoscaling
    return client


def ecs_started(client: Any) -> Progress:
    progress = EcsRollout(client, cluster=CLUSTER, service=SERVICE).start(RELEASE)
    assert progress.phase == "in_progress", progress.reason
    return progress


def test_ecs_start_registers_a_copy_pinning_the_release_and_points_the_service_at_it(
    ecs: Any,
) -> None:
    progress = ecs_started(ecs)
    state = progress.state or {}
    live_arn, new_arn = state["previous"], state["task_definition"]
    assert (live_arn.endswith(f"{FAMILY}:1"), new_arn.endswith(f"{FAMILY}:2")) == (True, True)
    live = ecs.describe_task_definition(taskDefinition=live_arn, include=["TAGS"])
    new = ecs.describe_task_definition(taskDefinition=new_arn, include=["TAGS"])
    env = {
        e["name"]: e["value"]
        for e in new["taskDefinition"]["containerDefinitions"][0]["environment"]
    }
    assert env == {**ENVIRONMENT, "INFERSTACK_MODEL_URI": RELEASE.uri}
    # Everything else is the live revision's, field for field.
    different = {"taskDefinitionArn", "revision", "registeredAt", "containerDefinitions"}
    for key in set(live["taskDefinition"]) | set(new["taskDefinition"]):
        if key not in different:
            assert new["taskDefinition"].get(key) == live["taskDefinition"].get(key), key
    unpinned = dict(new["taskDefinition"]["containerDefinitions"][0], environment=None)
    assert unpinned == dict(live["taskDefinition"]["containerDefinitions"][0], environment=None)
    assert new["tags"] == [{"key": "team", "value": "ml"}]

    # What moto keeps of UpdateService: the service's task definition and its desired count
    # (autoscaling's 3, untouched). Its deployments[0] keeps the old revision (moto quirk).
    service = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    assert (service["taskDefinition"], service["desiredCount"]) == (new_arn, 3)
    assert state == {
        "cluster": CLUSTER,
        "service": SERVICE,
        "service_arn": service["serviceArn"],
        "task_definition": new_arn,
        "previous": live_arn,
    }


def deployment(task_definition: str, status: str, rollout: str, **more: Any) -> dict[str, Any]:
    """One Deployment as DescribeServices reports it (API_Deployment.html fields)."""
    return {
        "id": f"ecs-svc/{task_definition.rpartition(':')[2]}{len(status)}",
        "status": status,
        "taskDefinition": task_definition,
        "desiredCount": 3,
        "pendingCount": 0,
        "runningCount": 3 if rollout == "COMPLETED" else 1,
        "failedTasks": 0,
        "launchType": "EC2",
        "rolloutState": rollout,
        "rolloutStateReason": f"ECS deployment {rollout.lower().replace('_', ' ')}.",
        **more,
    }


def services_answer(client: Any, deployments: list[dict[str, Any]]) -> dict[str, Any]:
    answer = client.describe_services(cluster=CLUSTER, services=[SERVICE])
    answer.pop("ResponseMetadata")
    answer["services"][0]["deployments"] = deployments
    return dict(answer)


def ecs_check(client: Any, deployments: list[dict[str, Any]]) -> Progress:
    progress = ecs_started(client)
    OneCall(client, "DescribeServices", services_answer(client, deployments))
    return EcsRollout(client, cluster=CLUSTER, service=SERVICE).check(progress)


def arns(client: Any) -> tuple[str, str]:
    found = client.list_task_definitions(familyPrefix=FAMILY)["taskDefinitionArns"]
    return found[0], f"{found[0].rpartition(':')[0]}:2"


def test_ecs_in_progress_while_the_new_deployment_rolls(ecs: Any) -> None:
    old, new = arns(ecs)
    checked = ecs_check(
        ecs, [deployment(new, "PRIMARY", "IN_PROGRESS"), deployment(old, "ACTIVE", "COMPLETED")]
    )
    assert checked.phase == "in_progress"
    assert checked.reason == f"1 of 3 tasks of {new} running"


def test_ecs_release_is_live_when_its_deployment_completes(ecs: Any) -> None:
    _, new = arns(ecs)
    checked = ecs_check(ecs, [deployment(new, "PRIMARY", "COMPLETED")])
    assert (checked.phase, checked.reason) == ("succeeded", None)


def test_ecs_circuit_breaker_rollback_fails_the_release_with_its_reason(ecs: Any) -> None:
    old, new = arns(ecs)
    why = "ECS deployment circuit breaker: tasks failed to start."
    checked = ecs_check(
        ecs,
        [
            deployment(old, "PRIMARY", "IN_PROGRESS"),
            deployment(new, "ACTIVE", "FAILED", rolloutStateReason=why),
        ],
    )
    assert checked.phase == "failed"
    assert checked.reason == f"the deployment of {new} failed: {why}"


def test_ecs_primary_back_on_the_previous_revision_fails_the_release(ecs: Any) -> None:
    old, new = arns(ecs)
    checked = ecs_check(ecs, [deployment(old, "PRIMARY", "COMPLETED")])
    assert checked.phase == "failed"
    assert checked.reason == f"service {SERVICE} went back to {old}, not {new}"


def test_ecs_task_definition_without_the_model_uri_is_refused(ecs: Any) -> None:
    bare = dict(CONTAINER, environment=[{"name": "INFERSTACK_MODEL_NAME", "value": "resnet"}])
    ecs.register_task_definition(family=FAMILY, containerDefinitions=[bare])
    ecs.update_service(cluster=CLUSTER, service=SERVICE, taskDefinition=f"{FAMILY}:2")
    progress = EcsRollout(ecs, cluster=CLUSTER, service=SERVICE).start(RELEASE)
    assert progress.phase == "failed"
    assert "sets INFERSTACK_MODEL_URI: nothing to pin" in str(progress.reason)
    assert len(ecs.list_task_definitions(familyPrefix=FAMILY)["taskDefinitionArns"]) == 2


# --------------------------------------------------------------------------- events + wiring


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return loaded


def test_sagemaker_endpoint_state_change_event() -> None:
    sample = event("sagemakerEndpointStateChange_awsdocs.json")
    assert sagemaker_target.progress_from_event(sample) == ("sagemaker", "MyEndpoint", "IN_SERVICE")
    assert ecs_target.progress_from_event(sample) is None


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("ecsDeploymentInProgress_awsdocs.json", "SERVICE_DEPLOYMENT_IN_PROGRESS"),
        ("ecsDeploymentRollbackInProgress_awsdocs.json", "SERVICE_DEPLOYMENT_IN_PROGRESS"),
        ("ecsDeploymentCompleted_awsdocs.json", "SERVICE_DEPLOYMENT_COMPLETED"),
        ("ecsDeploymentFailed_awsdocs.json", "SERVICE_DEPLOYMENT_FAILED"),
    ],
)
def test_ecs_deployment_state_change_events(name: str, status: str) -> None:
    service = "arn:aws:ecs:us-west-2:111122223333:service/default/servicetest"
    assert ecs_target.progress_from_event(event(name)) == ("ecs", service, status)
    assert sagemaker_target.progress_from_event(event(name)) is None


def test_other_events_are_not_rollout_progress() -> None:
    upload = event("s3EventBridgeObjectCreated_awsdocs-ev-events.json")
    assert sagemaker_target.progress_from_event(upload) is None
    assert ecs_target.progress_from_event(upload) is None


def test_target_records_build_their_rollouts(aws: None) -> None:
    """The records allow_sagemaker_rollout / allow_ecs_rollout put in INFERSTACK_TARGETS."""
    sm = rollout_for("resnet", {"target": "sagemaker", "endpoint": ENDPOINT, "role": ROLE}, "")
    assert isinstance(sm, SageMakerRollout)
    assert (sm.target, sm.endpoint, sm.role) == ("sagemaker", ENDPOINT, ROLE)
    record = {"target": "ecs", "cluster": CLUSTER, "service": SERVICE, "family": FAMILY}
    ecs_rollout = rollout_for("resnet", record, "")
    assert isinstance(ecs_rollout, EcsRollout)
    assert (ecs_rollout.target, ecs_rollout.cluster, ecs_rollout.service) == (
        "ecs",
        CLUSTER,
        SERVICE,
    )
