"""CPU models on Lambda: the inference container image and one function + alias per model.

Also the building blocks every InferStack function shares: container images built from
the repository root with their Dockerfile's allow-list, a log group with the
environment's retention, and an execution role with no managed policies.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from inferstack.names import (
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    MODELS_PREFIX,
    SERVICE_NAME,
)
from infra.constructs.common import log_retention, removal_policy

if TYPE_CHECKING:
    from infra.config import Environment, LambdaModel
    from infra.constructs.model_store import ModelStore

# The Docker build context of every function image (Dockerfiles COPY layers/inferstack).
REPO_ROOT = Path(__file__).resolve().parents[2]
INFERENCE_DOCKERFILE = "functions/inference/Dockerfile"
LIVE_ALIAS = "live"

_ARCHITECTURES: dict[str, tuple[lambda_.Architecture, ecr_assets.Platform]] = {
    "arm64": (lambda_.Architecture.ARM_64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (lambda_.Architecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}
# Never part of an image's build context, whatever a Dockerfile's ignore file says.
_ALWAYS_EXCLUDED = (
    ".git",
    ".venv",
    "cdk.out",
    "node_modules",
    "**/node_modules",
    "tests",
    "benchmarks",
    "infra",
    "**/__pycache__",
    "**/*.py[cod]",
)
_XRAY_REASON = (
    "X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords do not support "
    "resource-level permissions."
)


def lambda_architecture(architecture: str) -> lambda_.Architecture:
    return _ARCHITECTURES[architecture][0]


@cache
def build_context_excludes(dockerfile: str) -> tuple[str, ...]:
    """Ignore rules for a Dockerfile whose build context is the repository root.

    The rules are the Dockerfile's own `<Dockerfile>.dockerignore` (what BuildKit applies
    to a local `docker build`), so CDK stages and hashes exactly the files the image
    copies: an edit to tests or infra neither rebuilds nor re-uploads an image.
    """
    ignore_file = REPO_ROOT / f"{dockerfile}.dockerignore"
    if not ignore_file.is_file():
        raise FileNotFoundError(f"{ignore_file}: every function Dockerfile needs its ignore file")
    rules = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # The Dockerfile and its ignore file must reach the staged context for the build.
    return (*rules, *_ALWAYS_EXCLUDED, f"!{dockerfile}", f"!{dockerfile}.dockerignore")


def function_image(dockerfile: str, architecture: str) -> lambda_.DockerImageCode:
    """A function's container image, built from the repository root for `architecture`."""
    return lambda_.DockerImageCode.from_image_asset(
        directory=str(REPO_ROOT),
        file=dockerfile,
        platform=_ARCHITECTURES[architecture][1],
        exclude=list(build_context_excludes(dockerfile)),
        ignore_mode=cdk.IgnoreMode.DOCKER,
    )


def inference_image(architecture: str) -> lambda_.DockerImageCode:
    """The Lambda inference image (functions/inference/Dockerfile) for `architecture`."""
    return function_image(INFERENCE_DOCKERFILE, architecture)


def function_log_group(
    scope: Construct, construct_id: str, *, config: Environment
) -> logs.LogGroup:
    return logs.LogGroup(
        scope,
        construct_id,
        retention=log_retention(config.log_retention_days),
        removal_policy=removal_policy(config),
    )


def execution_role(
    scope: Construct, construct_id: str, *, log_group: logs.ILogGroup, description: str
) -> iam.Role:
    """A function role that may write its own log group (and, with tracing on, X-Ray).

    Used instead of AWSLambdaBasicExecutionRole, which may write to every log group.
    Each construct adds what its function needs on top.
    """
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    log_group.grant_write(role)
    NagSuppressions.add_resource_suppressions(
        role,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5", reason=_XRAY_REASON, applies_to=["Resource::*"]
            )
        ],
        apply_to_children=True,
    )
    return role


def suppress_object_wildcards(role: iam.IRole, prefixes: list[str], reason: str) -> None:
    """Accept `<bucket ARN>/<prefix>*` resources: prefix-scoped object grants, by design."""
    NagSuppressions.add_resource_suppressions(
        role,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=reason,
                applies_to=[
                    RegexAppliesTo(regex=f"/^Resource::<[A-Za-z0-9]+\\.Arn>\\/{_regex(p)}.*\\*$/")
                    for p in prefixes
                ],
            )
        ],
        apply_to_children=True,
    )


def _regex(text: str) -> str:
    return "".join(c if c.isalnum() else f"\\{c}" for c in text)


class LambdaInference(Construct):
    """One CPU model served by a Lambda container-image function behind the alias `live`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        model: LambdaModel,
        store: ModelStore,
        image: lambda_.DockerImageCode,
    ) -> None:
        super().__init__(scope, construct_id)
        log_group = function_log_group(self, "Logs", config=config)
        role = execution_role(
            self,
            "Role",
            log_group=log_group,
            description=f"InferStack {config.name}: inference function for {model.name}",
        )

        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=image,
            description=f"InferStack {config.name}: {model.name} (Open Inference Protocol)",
            architecture=lambda_architecture(model.architecture),
            memory_size=model.memory_mb,
            # Below API Gateway's integration timeout, with a margin (config.py
            # LAMBDA_TIMEOUT_MAX_S): a longer run only answers a client that got a 504.
            timeout=cdk.Duration.seconds(model.timeout_s),
            ephemeral_storage_size=cdk.Size.mebibytes(model.ephemeral_storage_mb),
            reserved_concurrent_executions=model.reserved_concurrency,
            environment={
                ENV_MODEL_NAME: model.name,
                # Deploy-time default: the artifact's latest object version. The promoter
                # later rewrites this variable with ?versionId=<v> pinned, publishes a
                # version and moves the alias; a stack deploy resets it to this value.
                ENV_MODEL_URI: store.model_uri(model),
                ENV_ENVIRONMENT: config.name,
                ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
                ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
        )
        # Traffic goes through the alias, so provisioned concurrency stays warm across
        # the versions the promoter publishes.
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            description=f"The version of {model.name} that serves traffic",
            provisioned_concurrent_executions=model.provisioned_concurrency or None,
        )
        store.grant_model_read(self.function, model)
        prefix = f"{MODELS_PREFIX}{model.name}/"
        suppress_object_wildcards(
            role,
            [prefix],
            f"Read access to the released artifacts of {model.name} only ({prefix}*): "
            "artifacts are versioned objects under that prefix.",
        )
