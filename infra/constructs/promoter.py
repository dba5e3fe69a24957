"""The model promoter: uploads/ "Object Created" -> validate -> release -> roll targets forward.

The function is a container image because validation loads the model in ONNX Runtime.
It runs as the steps of the rollout state machine (infra/constructs/rollout_machine.py),
which the upload rule and the CLI's promote/rollback start: no invocation waits on a target.
It learns its rollout targets from INFERSTACK_TARGETS, a JSON object keyed by model name,
filled in by the stack's `allow_*_rollout` calls, which also grant exactly the API calls a
rollout of that target needs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sagemaker as sagemaker
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct, IValidation

from inferstack.names import (
    BASELINES_PREFIX,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_BUCKET,
    ENV_POWERTOOLS_SERVICE,
    ENV_TARGETS,
    METRICS_NAMESPACE,
    MODELS_PREFIX,
    RELEASES_PREFIX,
    SERVICE_NAME,
    UPLOADS_PREFIX,
)
from infra.config import GpuModelBase, ModelBase, Target
from infra.constructs.common import dead_letter_queue, suppress_object_wildcards
from infra.constructs.function import execution_role, function_log_group
from infra.constructs.images import function_image, lambda_architecture
from infra.constructs.rollout_machine import RolloutMachine

if TYPE_CHECKING:
    from aws_cdk import aws_ecs as ecs

    from infra.config import Environment, LambdaModel
    from infra.constructs.model_store import ModelStore

PROMOTER_DOCKERFILE = "functions/model_promoter/Dockerfile"
ARCHITECTURE = "arm64"  # Graviton: cheaper per GB-second; onnxruntime ships aarch64 wheels
# The validation gate loads the model in a child process bounded at 8,192 MB for GPU targets
# (inferstack.release.validate.TARGET_LIMITS): the function needs that and room for itself.
# 10,240 MB is Lambda's maximum; a promoter runs per upload, so it costs nothing idle.
MEMORY_MB = 10240
EPHEMERAL_STORAGE_MB = 10240  # the artifact is downloaded to /tmp before validation
TIMEOUT = cdk.Duration.minutes(10)
# Lambda's limit on all environment variables of a function together.
ENV_LIMIT_BYTES = 4096
# A deploy-time identifier (function name, ARN, ...) as the estimate counts it.
_TOKEN_ESTIMATE_BYTES = 128


@jsii.implements(cdk.IStableStringProducer)
class _TargetsJson:
    """INFERSTACK_TARGETS, rendered after every allow_*_rollout call has been made."""

    def __init__(self, scope: Construct, entries: dict[str, dict[str, Any]]) -> None:
        self._stack = cdk.Stack.of(scope)
        self._entries = entries

    def produce(self) -> str:
        return self._stack.to_json_string(dict(sorted(self._entries.items())))


@jsii.implements(IValidation)
class _TargetsCheck:
    """Every served model has a rollout target, and the JSON fits Lambda's env limit."""

    def __init__(self, promoter: ModelPromoter) -> None:
        self._promoter = promoter

    def validate(self) -> list[str]:
        promoter = self._promoter
        errors = [
            f"model {name!r} has no rollout target: call allow_*_rollout for it"
            for name in promoter.served_models
            if name not in promoter.targets
        ]
        size = promoter.estimated_environment_bytes()
        if size > ENV_LIMIT_BYTES:
            errors.append(
                f"the promoter's environment (~{size} bytes with {len(promoter.targets)} "
                f"targets) exceeds Lambda's {ENV_LIMIT_BYTES}-byte limit"
            )
        return errors


def _bounds(model: ModelBase) -> dict[str, Any]:
    """The validation gate's per-model bounds, when the configuration sets them."""
    return {"max_model_bytes": model.max_model_mb * 1024 * 1024} if model.max_model_mb else {}


def _variant(model: ModelBase) -> dict[str, Any]:
    """A GPU target's precision: "fp16" asks the promoter for an FP16 copy of each release,
    checked against the original (inferstack.release.precision)."""
    return {"precision": model.precision} if isinstance(model, GpuModelBase) else {}


class ModelPromoter(Construct):
    """The promoter function, the rollout state machine that runs it step by step, the
    EventBridge rule that starts the machine on uploads and the rule's dead-letter queue."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Environment, store: ModelStore
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.targets: dict[str, dict[str, Any]] = {}
        self.served_models = [m.name for m in config.models]
        self._invoke_suppressed = False
        self._metrics_granted = False

        # Upload events the rule could not hand to the state machine land here; a non-empty
        # queue means an upload never started a rollout.
        self.dead_letter_queue = dead_letter_queue(
            self, holds="the upload rule's target, the rollout state machine"
        )

        log_group = function_log_group(self, "Logs", config=config)
        self._role = execution_role(
            self,
            "Role",
            log_group=log_group,
            description=f"InferStack {config.name}: model promoter",
        )
        # INFERSTACK_TARGETS, rendered once every allow_*_rollout call has been made; the
        # stack also publishes it to SSM for the CLI.
        self.targets_json = cdk.Lazy.string(_TargetsJson(self, self.targets))
        self._environment = {
            ENV_ENVIRONMENT: config.name,
            ENV_MODEL_BUCKET: store.bucket.bucket_name,
            ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
            ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
        }
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=function_image(PROMOTER_DOCKERFILE, ARCHITECTURE),
            description=f"InferStack {config.name}: validates uploaded models and rolls them out",
            architecture=lambda_architecture(ARCHITECTURE),
            memory_size=MEMORY_MB,
            ephemeral_storage_size=cdk.Size.mebibytes(EPHEMERAL_STORAGE_MB),
            timeout=TIMEOUT,
            environment={**self._environment, ENV_TARGETS: self.targets_json},
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=self._role,
            # Only the state machine invokes it, synchronously (it retries; no async queue).
        )
        self.rollout = RolloutMachine(self, "Rollout", config=config, function=self.function)
        self.state_machine = self.rollout.state_machine

        self.rule = events.Rule(
            self,
            "UploadRule",
            description=f"InferStack {config.name}: model uploads start a rollout",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [store.bucket.bucket_name]},
                    "object": {"key": events.Match.prefix(UPLOADS_PREFIX)},
                },
            ),
        )
        # EventBridge starts an execution with the whole event as its input, through a role
        # the target creates (states:StartExecution on this machine only,
        # https://docs.aws.amazon.com/cdk/api/v2/python/aws_cdk.aws_events_targets/SfnStateMachine.html);
        # events it cannot deliver after the retries go to the queue
        # (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-event-delivery.html).
        self.rule.add_target(
            targets.SfnStateMachine(
                self.state_machine,
                dead_letter_queue=self.dead_letter_queue,
                retry_attempts=4,
                max_event_age=cdk.Duration.hours(2),
            )
        )

        store.grant_prefix_read(self.function, UPLOADS_PREFIX, RELEASES_PREFIX)
        # baselines/: each release's drift baseline (inferstack.release.baselines).
        store.grant_prefix_write(self.function, MODELS_PREFIX, RELEASES_PREFIX, BASELINES_PREFIX)
        # Release ids come from listing releases/<model>/, and a model's first release reads
        # a live pointer that does not exist yet: 404 NoSuchKey only with s3:ListBucket.
        store.grant_missing_keys_as_not_found(self.function)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        suppress_object_wildcards(
            self._role,
            [UPLOADS_PREFIX, RELEASES_PREFIX, MODELS_PREFIX, BASELINES_PREFIX],
            "The promoter reads any upload and release record and writes any released "
            "artifact and drift baseline: object keys carry model names and versions, so the "
            "grants are per prefix (uploads/, releases/, models/, baselines/).",
        )
        self._suppress(
            "AwsSolutions-IAM5",
            "cloudwatch:PutMetricData has no resource-level permissions; the statement is "
            f"restricted to the {METRICS_NAMESPACE} namespace by condition.",
            ["Resource::*"],
        )
        self.node.add_validation(_TargetsCheck(self))

    # ------------------------------------------------------------------ rollouts

    def allow_lambda_rollout(
        self, model: LambdaModel, function: lambda_.IFunction, alias: lambda_.IAlias
    ) -> None:
        """Pin a new release on `function`, smoke-invoke the version it publishes and move
        `alias` to it (through the model's canary, if it has one), nothing else."""
        self.targets[model.name] = {
            **_bounds(model),
            "target": Target.LAMBDA.value,
            "function": function.function_name,
            "alias": alias.alias_name,
            # inferstack.release.rollout.canary.Canary.from_target reads it.
            **({"canary": model.canary.model_dump()} if model.canary else {}),
        }
        if model.canary:
            self._allow_metric_reads()
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "lambda:GetFunction",
                    "lambda:UpdateFunctionConfiguration",
                    "lambda:PublishVersion",
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                ],
                # Unqualified for the function calls, the alias ARN for the alias calls.
                resources=[function.function_arn, alias.function_arn],
            )
        )
        # The smoke invoke of a published version before the alias moves. A version's ARN
        # is the function ARN with ":<version>" appended,
        # and a statement on a qualified ARN covers exactly that version or alias
        # (https://docs.aws.amazon.com/lambda/latest/dg/lambda-api-permissions-ref.html).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[f"{function.function_arn}:*"]
            )
        )
        # The configuration of $LATEST (the pin) and of each published version: its State,
        # Pending while Lambda snapshots a SnapStart version, then Active or Failed. Lambda
        # authorizes a call on a version only by a statement on a qualified ARN: "if your
        # policy references the unqualified ARN, Lambda ... denies requests that reference a
        # qualified ARN" (https://docs.aws.amazon.com/lambda/latest/dg/lambda-api-permissions-ref.html).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:GetFunctionConfiguration"],
                resources=[function.function_arn, f"{function.function_arn}:*"],
            )
        )
        if model.provisioned_concurrency:
            # Provisioned concurrency follows the alias: the rollout is live once the new
            # version's allocation is READY (GetProvisionedConcurrencyConfig on the alias,
            # https://docs.aws.amazon.com/lambda/latest/dg/provisioned-concurrency.html).
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["lambda:GetProvisionedConcurrencyConfig"],
                    resources=[alias.function_arn],
                )
            )
        if self._invoke_suppressed:
            return
        self._invoke_suppressed = True
        self._suppress(
            "AwsSolutions-IAM5",
            "lambda:InvokeFunction and lambda:GetFunctionConfiguration on <function ARN>:* "
            "only: the smoke invoke and the state (SnapStart snapshot ready) of the versions "
            "the promoter publishes for an inference function of this stack (version numbers "
            "are not known at deploy time).",
            [RegexAppliesTo(regex="/^Resource::<[A-Za-z0-9]+\\.Arn>:\\*$/")],
        )

    def allow_sagemaker_rollout(
        self,
        model: ModelBase,
        endpoint_name: str,
        role: iam.IRole,
        *,
        live_model: sagemaker.CfnModel | None = None,
        live_endpoint_config: sagemaker.CfnEndpointConfig | None = None,
    ) -> None:
        """Create the next model + endpoint config and update `endpoint_name` to it.

        `live_model` and `live_endpoint_config` are what the stack deployed: CloudFormation
        names them (`Model-a1b2c3...`, outside `inferstack-<env>-*`, and unique so that a
        replacement can be created before the old one goes), and the promoter must describe
        them to copy the live variant's settings into the next release's config.
        """
        self.targets[model.name] = {
            **_bounds(model),
            "target": Target.SAGEMAKER.value,
            **_variant(model),
            "endpoint": endpoint_name,
            "role": role.role_arn,
        }
        stack = cdk.Stack.of(self)
        # SageMaker ARNs carry resource names in lower case.
        endpoint = (
            endpoint_name if cdk.Token.is_unresolved(endpoint_name) else endpoint_name.lower()
        )
        pattern = f"inferstack-{self._config.name}-*"

        def arn(resource: str, name: str) -> str:
            return stack.format_arn(service="sagemaker", resource=resource, resource_name=name)

        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint"],
                resources=[arn("endpoint", endpoint)],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateModel",
                    "sagemaker:DescribeModel",
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                    # A release whose rollout failed leaves no model or config behind.
                    "sagemaker:DeleteModel",
                    "sagemaker:DeleteEndpointConfig",
                ],
                resources=[arn("model", pattern), arn("endpoint-config", pattern)],
            )
        )
        # The stack's own model and endpoint config, by ARN: Ref of AWS::SageMaker::Model and
        # AWS::SageMaker::EndpointConfig is the ARN (CloudFormation docs, "Return values":
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-sagemaker-model.html,
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-sagemaker-endpointconfig.html).
        live: list[tuple[str, str]] = []
        if live_model is not None:
            live.append(("sagemaker:DescribeModel", live_model.model_ref.model_arn))
        if live_endpoint_config is not None:
            live.append(
                (
                    "sagemaker:DescribeEndpointConfig",
                    live_endpoint_config.endpoint_config_ref.endpoint_config_arn,
                )
            )
        for action, resource in live:
            # ListTags too: the next release's model and config carry the live ones' tags.
            self.function.add_to_role_policy(
                iam.PolicyStatement(actions=[action, "sagemaker:ListTags"], resources=[resource])
            )
        # UpdateEndpoint is also authorized against the endpoint config it switches to.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:UpdateEndpoint"],
                resources=[arn("endpoint-config", pattern)],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        self._suppress(
            "AwsSolutions-IAM5",
            f"The promoter creates one SageMaker model and endpoint config per release, "
            f"named {pattern}: the names are not known at deploy time.",
            [
                RegexAppliesTo(
                    regex="/^Resource::arn:.+:sagemaker:.+:"
                    f"(model|endpoint-config)\\/inferstack-{self._config.name}-\\*$/"
                )
            ],
        )

    def allow_ecs_rollout(self, model: ModelBase, service: ecs.BaseService) -> None:
        """Register the next task definition revision and point `service` at it."""
        task_definition = service.task_definition
        self.targets[model.name] = {
            **_bounds(model),
            "target": Target.ECS.value,
            **_variant(model),
            "cluster": service.cluster.cluster_name,
            "service": service.service_name,
            "family": task_definition.family,
        }
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:UpdateService", "ecs:DescribeServices"],
                resources=[service.service_arn],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"],
                resources=["*"],
            )
        )
        # Tags passed to RegisterTaskDefinition need ecs:TagResource for that create action
        # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/supported-iam-actions-tagging.html).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:TagResource"],
                resources=["*"],
                conditions={"StringEquals": {"ecs:CreateAction": "RegisterTaskDefinition"}},
            )
        )
        roles = [task_definition.task_role, task_definition.execution_role]
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[r.role_arn for r in roles if r is not None],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            )
        )
        self._suppress(
            "AwsSolutions-IAM5",
            "ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition do not support "
            "resource-level permissions (ECS requires Resource '*'); the service update "
            "itself is scoped to the one service.",
            ["Resource::*"],
        )

    # ------------------------------------------------------------------ helpers

    def _allow_metric_reads(self) -> None:
        """A canary reads its version's figures with GetMetricData, which has no resource-level
        permissions: Resource "*" (Service Authorization Reference, CloudWatch,
        https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html)."""
        if self._metrics_granted:
            return
        self._metrics_granted = True
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"])
        )
        self._suppress(
            "AwsSolutions-IAM5",
            "cloudwatch:GetMetricData has no resource-level permissions (AWS requires Resource "
            "'*'); it only reads metrics: a Lambda canary's own figures.",
            ["Resource::*"],
        )

    def estimated_environment_bytes(self) -> int:
        """The environment's size with every deploy-time token counted generously."""

        def sized(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: sized(v) for k, v in value.items()}
            is_token = isinstance(value, str) and cdk.Token.is_unresolved(value)
            return "x" * _TOKEN_ESTIMATE_BYTES if is_token else value

        env = {**sized(self._environment), ENV_TARGETS: json.dumps(sized(self.targets))}
        return sum(len(k) + len(str(v)) for k, v in env.items())

    def _suppress(self, rule: str, reason: str, applies_to: list[str | RegexAppliesTo]) -> None:
        NagSuppressions.add_resource_suppressions(
            self._role,
            [NagPackSuppression(id=rule, reason=reason, applies_to=applies_to)],
            apply_to_children=True,
        )
