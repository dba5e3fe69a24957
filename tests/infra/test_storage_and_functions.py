"""The model bucket, the Lambda inference functions, the promoter and the drift check.

Isolated tests build one small stack from these constructs alone (with cdk-nag applied);
environment tests read the full stacks synthesized by conftest.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Capture, Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.config import Environment, Target
from infra.constructs.drift import DriftCheck, window_minutes
from infra.constructs.images import inference_image
from infra.constructs.lambda_model import LambdaInference
from infra.constructs.model_store import ModelStore
from infra.constructs.promoter import ModelPromoter

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "tests" / "events"

CONFIG = Environment.model_validate(
    {
        "name": "test",
        "log_retention_days": 14,
        "removal_policy": "destroy",
        "noncurrent_version_days": 11,
        "models": [
            {
                "name": "wine",
                "target": "lambda",
                "memory_mb": 2048,
                "timeout_s": 20,
                "architecture": "x86_64",
                "reserved_concurrency": 10,
                "provisioned_concurrency": 2,
                "ephemeral_storage_mb": 2048,
                "drift": {"schedule": "rate(6 hours)", "threshold": 0.3},
            },
            {
                "name": "iris",
                "target": "lambda",
                "memory_mb": 1024,
            },
            {
                "name": "resnet",
                "target": "sagemaker",
                "instance_type": "ml.g6.xlarge",
            },
            {
                "name": "dense",
                "target": "ecs",
                "instance_type": "g6.xlarge",
            },
        ],
    }
)
WINE, IRIS, RESNET, DENSE = CONFIG.models
ENDPOINT_NAME = "inferstack-test-resnet"


@dataclass
class Built:
    stack: cdk.Stack
    template: Template
    assembly_dir: Path
    store: ModelStore
    functions: dict[str, LambdaInference]
    promoter: ModelPromoter
    sagemaker_role: iam.Role
    service: ecs.FargateService


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk-storage")))
    stack = cdk.Stack(app, "Test", env=cdk.Environment(account="123456789012", region="us-east-1"))
    store = ModelStore(stack, "Store", config=CONFIG)
    promoter = ModelPromoter(stack, "Promoter", config=CONFIG, store=store)
    # An encrypted topic, as the monitoring stack's.
    topic = sns.Topic(stack, "Alarms", master_key=kms.Key(stack, "AlarmKey"))
    drift = DriftCheck(stack, "Drift", config=CONFIG, store=store, alarm_topic=topic)
    functions = {}
    for model in (WINE, IRIS):
        functions[model.name] = LambdaInference(
            stack,
            f"Lambda-{model.name}",
            config=CONFIG,
            model=model,
            store=store,
            image=inference_image(model.architecture),
        )
        promoter.allow_lambda_rollout(
            model, functions[model.name].function, functions[model.name].alias
        )

    # Stand-ins for the GPU constructs: only what the rollout methods take.
    sagemaker_role = iam.Role(
        stack, "SageMakerRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com")
    )
    promoter.allow_sagemaker_rollout(RESNET, ENDPOINT_NAME, sagemaker_role)
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=1,
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)
        ],
    )
    task = ecs.FargateTaskDefinition(stack, "Task")
    task.add_container(
        "app",
        image=ecs.ContainerImage.from_registry("public.ecr.aws/x/y:1"),
        logging=ecs.LogDrivers.aws_logs(stream_prefix="app"),  # creates an execution role
    )
    service = ecs.FargateService(
        stack,
        "Service",
        cluster=ecs.Cluster(stack, "Cluster", vpc=vpc),
        task_definition=task,
        assign_public_ip=True,
    )
    promoter.allow_ecs_rollout(DENSE, service)
    for model in CONFIG.models:
        drift.add_model(model)

    cdk.Aspects.of(app).add(AwsSolutionsChecks())
    assembly = app.synth()
    template = Template.from_stack(stack)
    return Built(
        stack,
        template,
        Path(assembly.directory),
        store,
        functions,
        promoter,
        sagemaker_role,
        service,
    )


def ref(built: Built, construct: Any) -> dict[str, str]:
    return {"Ref": built.stack.get_logical_id(construct.node.default_child)}


def arn_of(built: Built, construct: Any) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [built.stack.get_logical_id(construct.node.default_child), "Arn"]}


def policy_statements(built: Built, role: iam.IRole) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to `role`."""
    role_ref = ref(built, role)
    statements: list[dict[str, Any]] = []
    for policy in built.template.find_resources("AWS::IAM::Policy").values():
        if role_ref in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_with(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in as_list(s["Action"])]


def object_keys(built: Built, statements: list[dict[str, Any]]) -> set[str]:
    """The object-key patterns of the model bucket that the statements name."""
    bucket_arn = arn_of(built, built.store.bucket)
    keys = set()
    for statement in statements:
        for resource in as_list(statement["Resource"]):
            parts = resource.get("Fn::Join", ["", []])[1] if isinstance(resource, dict) else []
            if len(parts) == 2 and parts[0] == bucket_arn:
                keys.add(parts[1].removeprefix("/"))
    return keys


# ----------------------------------------------------------------- the bucket


def test_bucket_is_versioned_kms_encrypted_private_and_logged(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": arn_of(built, built.store.key),
                        },
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {"DestinationBucketName": ref(built, built.store.log_bucket)},
        },
    )
    # Uploads reach the promoter through EventBridge (set by CDK's notifications resource).
    built.template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": ref(built, built.store.bucket),
            "NotificationConfiguration": {"EventBridgeConfiguration": {}},
        },
    )
    built.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_noncurrent_versions_expire_per_config_and_uploads_are_cleaned_up(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Status": "Enabled",
                                "NoncurrentVersionExpiration": {
                                    "NoncurrentDays": CONFIG.noncurrent_version_days
                                },
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_both_buckets_deny_plain_http(built: Built) -> None:
    for bucket in (built.store.bucket, built.store.log_bucket):
        built.template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": ref(built, bucket),
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )


def test_access_log_bucket_is_sse_s3_private_and_expires_logs(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": Match.object_like({"BlockPublicAcls": True}),
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"ExpirationInDays": CONFIG.log_retention_days})]
                )
            },
        },
    )


def test_targets_load_the_live_pointer_of_their_model(built: Built) -> None:
    uri = built.stack.resolve(built.store.live_pointer_uri(WINE))
    assert uri == {
        "Fn::Join": ["", ["s3://", ref(built, built.store.bucket), "/releases/wine/live.json"]]
    }


# ----------------------------------------------------------- inference functions


def test_lambda_function_settings_follow_the_model_config(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "MemorySize": WINE.memory_mb,
            "Timeout": WINE.timeout_s,
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": WINE.ephemeral_storage_mb},
            "ReservedConcurrentExecutions": WINE.reserved_concurrency,
            "TracingConfig": {"Mode": "Active"},
            "Environment": {
                "Variables": {
                    "INFERSTACK_MODEL_NAME": "wine",
                    "INFERSTACK_MODEL_URI": built.stack.resolve(built.store.live_pointer_uri(WINE)),
                    "INFERSTACK_ENV": "test",
                    "POWERTOOLS_SERVICE_NAME": "inferstack",
                    "POWERTOOLS_METRICS_NAMESPACE": "InferStack",
                }
            },
        },
    )
    # Defaults where the config says nothing: arm64, no reserved concurrency.
    iris = built.template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {"INFERSTACK_MODEL_NAME": "iris"}}}},
    )
    (iris_props,) = (r["Properties"] for r in iris.values())
    assert iris_props["Architectures"] == ["arm64"]
    assert "ReservedConcurrentExecutions" not in iris_props


def test_function_logs_go_to_a_log_group_with_the_configured_retention(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "MemorySize": WINE.memory_mb,
            "LoggingConfig": {"LogGroup": Match.any_value()},
        },
    )
    built.template.has_resource_properties(
        "AWS::Logs::LogGroup", {"RetentionInDays": CONFIG.log_retention_days}
    )


def test_traffic_alias_live_has_provisioned_concurrency_when_configured(built: Built) -> None:
    wine = built.functions["wine"]
    built.template.has_resource_properties(
        "AWS::Lambda::Alias",
        {
            "Name": "live",
            "FunctionName": ref(built, wine.function),
            "ProvisionedConcurrencyConfig": {
                "ProvisionedConcurrentExecutions": WINE.provisioned_concurrency
            },
        },
    )
    iris_alias = built.template.find_resources(
        "AWS::Lambda::Alias",
        {"Properties": {"FunctionName": ref(built, built.functions["iris"].function)}},
    )
    (props,) = (r["Properties"] for r in iris_alias.values())
    assert props["Name"] == "live"
    assert "ProvisionedConcurrencyConfig" not in props


def test_function_reads_only_its_own_model(built: Built) -> None:
    for name in ("wine", "iris"):
        statements = policy_statements(built, built.functions[name].function.role)
        assert object_keys(built, statements) == {f"releases/{name}/*", f"models/{name}/*"}
        readers = statements_with(statements, "s3:GetObject")
        assert readers and all(
            sorted(as_list(s["Action"])) == ["s3:GetObject", "s3:GetObjectVersion"] for s in readers
        )
        assert not statements_with(statements, "s3:PutObject")
        # Listing (a missing live pointer reads as 404, not 403) covers no object.
        (listing,) = statements_with(statements, "s3:ListBucket")
        assert as_list(listing["Action"]) == ["s3:ListBucket"]
        assert listing["Resource"] == arn_of(built, built.store.bucket)
        (decrypt,) = statements_with(statements, "kms:Decrypt")
        assert decrypt["Resource"] == arn_of(built, built.store.key)


def staged_contexts(built: Built, function: str) -> list[Path]:
    """The asset.* folders of the assembly that stage `functions/<function>`'s image."""
    return [
        d
        for d in built.assembly_dir.glob("asset.*")
        if (d / "functions" / function / "handler.py").is_file()
    ]


def test_inference_image_is_staged_with_only_what_the_image_needs(built: Built) -> None:
    """The Dockerfile's allow-list applies to the CDK's staged build context too."""
    staged = staged_contexts(built, "inference")
    assert staged, "no staged asset holds functions/inference/handler.py"
    for context in staged:
        names = {p.relative_to(context).as_posix() for p in context.rglob("*")}
        assert {
            "functions/inference/Dockerfile",
            "functions/inference/requirements.txt",
            "layers/inferstack/__init__.py",
            "layers/inferstack/demo/wine.onnx",
        } <= names
        assert {n.split("/", 1)[0] for n in names} == {"functions", "layers"}
        unwanted = re.compile(r"(^|/)(__pycache__|\.venv|tests|benchmarks|cdk\.out)(/|$)|\.pyc$")
        assert not [n for n in names if unwanted.search(n)]


@pytest.mark.parametrize("function", ["model_promoter", "drift_check"])
def test_other_function_images_stage_only_their_own_files(built: Built, function: str) -> None:
    (context,) = staged_contexts(built, function)
    names = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    own = {n for n in names if n.startswith("functions/")}
    assert own == {
        f"functions/{function}/{f}"
        for f in ("Dockerfile", "Dockerfile.dockerignore", "handler.py", "requirements.txt")
    }
    assert names - own == {n for n in names if n.startswith("layers/inferstack/")}


def test_function_images_are_built_for_the_function_architecture(built: Built) -> None:
    manifest = json.loads(next(built.assembly_dir.glob("*.assets.json")).read_text())
    sources = [image["source"] for image in manifest["dockerImages"].values()]
    platforms = {(s["dockerFile"], s.get("platform")) for s in sources}
    assert ("functions/inference/Dockerfile", "linux/amd64") in platforms
    assert ("functions/inference/Dockerfile", "linux/arm64") in platforms
    assert ("functions/model_promoter/Dockerfile", "linux/arm64") in platforms
    assert ("functions/drift_check/Dockerfile", "linux/arm64") in platforms


# ------------------------------------------------------------------ promoter


def test_promoter_rule_matches_uploads_of_this_bucket_only(built: Built) -> None:
    target = Capture()
    built.template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": [ref(built, built.store.bucket)]},
                    "object": {"key": [{"prefix": "uploads/"}]},
                },
            },
            "Targets": [target],
        },
    )
    # The rollout state machine, which runs the promoter's steps (a standard workflow's ARN
    # is its Ref).
    assert target.as_object()["Arn"] == ref(built, built.promoter.state_machine)
    assert target.as_object()["DeadLetterConfig"] == {
        "Arn": arn_of(built, built.promoter.dead_letter_queue)
    }
    assert target.as_object()["RetryPolicy"]["MaximumRetryAttempts"] > 0


def test_promoter_dead_letter_queue_is_encrypted_and_tls_only(built: Built) -> None:
    built.template.has_resource_properties(
        "AWS::SQS::Queue",
        {"SqsManagedSseEnabled": True, "MessageRetentionPeriod": 14 * 24 * 3600},
    )
    built.template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "Queues": [ref(built, built.promoter.dead_letter_queue)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ),
                        Match.object_like(
                            {
                                "Action": "sqs:SendMessage",
                                "Principal": {"Service": "events.amazonaws.com"},
                            }
                        ),
                    ]
                )
            },
        },
    )


def test_promoter_bucket_access_is_per_prefix(built: Built) -> None:
    statements = policy_statements(built, built.promoter.function.role)
    readers = statements_with(statements, "s3:GetObject")
    writers = statements_with(statements, "s3:PutObject")
    assert object_keys(built, readers) == {"uploads/*", "releases/*"}
    assert object_keys(built, writers) == {"models/*", "releases/*", "baselines/*"}
    (metrics,) = statements_with(statements, "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "InferStack"}}


def test_lambda_rollout_is_scoped_to_the_function_and_its_alias(built: Built) -> None:
    statements = policy_statements(built, built.promoter.function.role)
    for name, served in built.functions.items():
        function_arn = arn_of(built, served.function)
        alias_ref = ref(built, served.alias)
        scoped = [
            s
            for s in statements_with(statements, "lambda:UpdateAlias")
            if function_arn in as_list(s["Resource"])
        ]
        assert len(scoped) == 1, name
        assert sorted(as_list(scoped[0]["Resource"]), key=str) == sorted(
            [function_arn, alias_ref], key=str
        )
        assert {"lambda:UpdateFunctionConfiguration", "lambda:PublishVersion"} <= set(
            scoped[0]["Action"]
        )
    for statement in statements:
        if any(str(a).startswith("lambda:") for a in as_list(statement["Action"])):
            assert "*" not in as_list(statement["Resource"])


def test_sagemaker_and_ecs_rollouts_are_scoped(built: Built) -> None:
    statements = policy_statements(built, built.promoter.function.role)
    rendered = json.dumps(statements)
    assert f"endpoint/{ENDPOINT_NAME}" in rendered
    assert "model/inferstack-test-*" in rendered
    assert "endpoint-config/inferstack-test-*" in rendered
    for statement in statements_with(statements, "sagemaker:CreateModel"):
        assert "*" not in as_list(statement["Resource"])
    passes = statements_with(statements, "iam:PassRole")
    passed = {
        (s["Condition"]["StringEquals"]["iam:PassedToService"], json.dumps(r))
        for s in passes
        for r in as_list(s["Resource"])
    }
    task = built.service.task_definition
    assert passed == {
        ("sagemaker.amazonaws.com", json.dumps(arn_of(built, built.sagemaker_role))),
        ("ecs-tasks.amazonaws.com", json.dumps(arn_of(built, task.task_role))),
        ("ecs-tasks.amazonaws.com", json.dumps(arn_of(built, task.execution_role))),
    }
    (update,) = statements_with(statements, "ecs:UpdateService")
    assert update["Resource"] == ref(built, built.service)


def test_promoter_targets_name_every_model(built: Built) -> None:
    functions = built.template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {"MODEL_BUCKET": Match.any_value()}}}},
    )
    promoter = next(
        f
        for f in functions.values()
        if "INFERSTACK_TARGETS" in f["Properties"]["Environment"]["Variables"]
    )
    targets = promoter["Properties"]["Environment"]["Variables"]["INFERSTACK_TARGETS"]
    rendered = json.dumps(targets)
    for model in CONFIG.models:
        assert f'\\"{model.name}\\":{{\\"target\\":\\"{model.target.value}\\"' in rendered
    assert built.promoter.estimated_environment_bytes() < 4096
    assert set(built.promoter.targets) == {m.name for m in CONFIG.models}
    assert built.promoter.targets["resnet"]["endpoint"] == ENDPOINT_NAME


def test_promoter_validation_names_models_without_a_rollout_target(built: Built) -> None:
    assert built.promoter.node.validate() == []
    stack = cdk.Stack(cdk.App(), "Unwired")
    promoter = ModelPromoter(
        stack, "Promoter", config=CONFIG, store=ModelStore(stack, "Store", config=CONFIG)
    )
    errors = promoter.node.validate()
    assert len(errors) == len(CONFIG.models)
    assert all("no rollout target" in e for e in errors)


# ------------------------------------------------------------------- drift


def test_drift_schedule_per_model_invokes_the_function_with_its_window(built: Built) -> None:
    for model in CONFIG.models:
        role = Capture()
        built.template.has_resource_properties(
            "AWS::Scheduler::Schedule",
            {
                "ScheduleExpression": model.drift.schedule,
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "Target": Match.object_like(
                    {
                        "Input": json.dumps(
                            {
                                "model": model.name,
                                "threshold": model.drift.threshold,
                                "window_minutes": window_minutes(model.drift.schedule),
                            }
                        ),
                        "RoleArn": role,
                        "RetryPolicy": Match.object_like(
                            {"MaximumRetryAttempts": Match.any_value()}
                        ),
                        "DeadLetterConfig": Match.any_value(),
                    }
                ),
            },
        )
    scheduler_role_id = role.as_object()["Fn::GetAtt"][0]
    (policy,) = (
        p
        for p in built.template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": scheduler_role_id} in p["Properties"]["Roles"]
    )
    (invoke,) = statements_with(
        policy["Properties"]["PolicyDocument"]["Statement"], "lambda:InvokeFunction"
    )
    drift_function_arn = built.template.find_resources("AWS::Scheduler::Schedule").popitem()[1][
        "Properties"
    ]["Target"]["Arn"]
    assert invoke["Resource"] == drift_function_arn
    built.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like({"Principal": {"Service": "scheduler.amazonaws.com"}})
                ]
            }
        },
    )


def test_drift_reads_capture_releases_and_baselines_writes_reports_and_tells_the_topic(
    built: Built,
) -> None:
    drift = built.stack.node.find_child("Drift")
    statements = policy_statements(built, drift.function.role)  # type: ignore[attr-defined]
    assert object_keys(built, statements_with(statements, "s3:GetObject")) == {
        "capture/*",
        "baselines/*",
        "releases/*",
    }
    assert object_keys(built, statements_with(statements, "s3:PutObject")) == {"drift-reports/*"}
    (listing,) = statements_with(statements, "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["capture/*", "baselines/*"]}}
    (metrics,) = statements_with(statements, "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "InferStack"}}
    topic = built.stack.node.find_child("Alarms")
    (publish,) = statements_with(statements, "sns:Publish")
    assert publish["Resource"] == {"Ref": built.stack.get_logical_id(topic.node.default_child)}  # type: ignore[arg-type]
    # The bucket's key for the reports, the topic's key for the message.
    keys = {
        json.dumps(s["Resource"])
        for action in ("kms:GenerateDataKey", "kms:GenerateDataKey*")
        for s in statements_with(statements, action)
    }
    assert keys == {
        json.dumps(arn_of(built, built.store.key)),
        json.dumps(arn_of(built, built.stack.node.find_child("AlarmKey"))),
    }
    variables = built.template.find_resources("AWS::Lambda::Function")
    (env,) = [
        f["Properties"]["Environment"]["Variables"]
        for f in variables.values()
        if "INFERSTACK_ALARM_TOPIC_ARN"
        in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert env["INFERSTACK_ALARM_TOPIC_ARN"] == publish["Resource"]


@pytest.mark.parametrize(
    ("schedule", "minutes"),
    [("rate(1 hour)", 60), ("rate(6 hours)", 360), ("rate(15 minutes)", 15), ("rate(1 day)", 1440),
     ("cron(0 * * * ? *)", 60)],
)  # fmt: skip
def test_each_run_checks_the_window_since_the_previous_one(schedule: str, minutes: int) -> None:
    assert window_minutes(schedule) == minutes


# ------------------------------------------------------------------ cdk-nag


def test_no_unsuppressed_cdk_nag_findings_in_these_constructs(built: Built) -> None:
    mine = (
        "/Test/Store",
        "/Test/Lambda-",
        "/Test/Promoter",
        "/Test/Drift",
        # aws-cdk-lib's stack-wide handlers that the model bucket brings in.
        "/Test/Custom::S3AutoDeleteObjects",
        "/Test/BucketNotificationsHandler",
    )
    findings = [
        f"{m.id}: {m.entry.data}"
        for m in Annotations.from_stack(built.stack).find_error("*", Match.any_value())
        if m.id.startswith(mine)
    ]
    assert not findings, "\n".join(findings)


# ---------------------------------------------------------- placeholder handlers


def load_handler(function: str) -> Any:
    path = REPO_ROOT / "functions" / function / "handler.py"
    spec = importlib.util.spec_from_file_location(f"{function}_handler", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeContext:
    function_name = "test"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    aws_request_id = "req-1"


def test_the_drift_function_takes_the_schedule_input_as_the_stack_writes_it(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Input of a synthesized schedule, to the handler: a model with no release yet is
    skipped with that reason (the whole check runs in tests/functional/test_drift_scheduled.py)."""
    import boto3
    from moto import mock_aws

    from tests.functional.deployed import use_fake_aws

    schedule = next(iter(built.template.find_resources("AWS::Scheduler::Schedule").values()))
    event = json.loads(schedule["Properties"]["Target"]["Input"])
    use_fake_aws(monkeypatch)
    monkeypatch.setenv("MODEL_BUCKET", "models")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="models")
        result = load_handler("drift_check").handler(event, FakeContext())
    assert result == {"status": "no-release", "model": event["model"]}


# -------------------------------------------------------------- environments


def test_every_lambda_model_has_a_function_with_its_memory_and_a_live_alias(env: Any) -> None:
    for model in env.config.models_on(Target.LAMBDA):
        functions = env.template.find_resources(
            "AWS::Lambda::Function",
            {
                "Properties": {
                    "MemorySize": model.memory_mb,
                    "Environment": {"Variables": {"INFERSTACK_MODEL_NAME": model.name}},
                }
            },
        )
        assert len(functions) == 1, model.name
        (function_id,) = functions
        env.template.has_resource_properties(
            "AWS::Lambda::Alias", {"Name": "live", "FunctionName": {"Ref": function_id}}
        )


def test_prod_wine_has_provisioned_concurrency(synthesized: dict[str, Any]) -> None:
    prod = synthesized["prod"]
    (wine,) = (m for m in prod.config.models if m.name == "wine")
    assert wine.provisioned_concurrency == 5
    env_functions = prod.template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Environment": {"Variables": {"INFERSTACK_MODEL_NAME": "wine"}}}},
    )
    (function_id,) = env_functions
    prod.template.has_resource_properties(
        "AWS::Lambda::Alias",
        {
            "FunctionName": {"Ref": function_id},
            "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 5},
        },
    )


@pytest.mark.parametrize(("name", "policy"), [("prod", "Retain"), ("dev", "Delete")])
def test_model_bucket_is_retained_in_prod_and_destroyed_in_dev(
    synthesized: dict[str, Any], name: str, policy: str
) -> None:
    buckets = synthesized[name].template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"VersioningConfiguration": {"Status": "Enabled"}}}
    )
    assert buckets
    assert {b["DeletionPolicy"] for b in buckets.values()} == {policy}
    emptied = synthesized[name].template.find_resources(
        "Custom::S3AutoDeleteObjects",
        {"Properties": {"BucketName": {"Ref": Match.any_value()}}},
    )
    emptied_ids = {r["Properties"]["BucketName"]["Ref"] for r in emptied.values()}
    assert (set(buckets) <= emptied_ids) == (policy == "Delete")
    assert not (set(buckets) & emptied_ids) or policy == "Delete"


def test_every_model_has_a_drift_schedule(env: Any) -> None:
    for model in env.config.models:
        env.template.has_resource_properties(
            "AWS::Scheduler::Schedule",
            {
                "ScheduleExpression": model.drift.schedule,
                "Target": Match.object_like(
                    {
                        "Input": json.dumps(
                            {
                                "model": model.name,
                                "threshold": model.drift.threshold,
                                "window_minutes": window_minutes(model.drift.schedule),
                            }
                        )
                    }
                ),
            },
        )
