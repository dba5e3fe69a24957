"""CPU models on Lambda: one container-image function + alias `live` per model.

The stack passes in the image (images.inference_image, one per architecture); the
function's log group and execution role are the shared ones from function.py. A model with
cold_start = "snapstart" gets Lambda SnapStart on its published versions, a metric
filter that turns Lambda's "Restore Duration" into a metric, and a schedule that keeps its live
version Active (keep_active.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from inferstack.names import (
    ENV_CAPTURE_RATE,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_POWERTOOLS_SERVICE,
    METRIC_RESTORE_DURATION,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from infra.config import ColdStart
from infra.constructs.capture import CaptureDelivery
from infra.constructs.common import suppress_object_wildcards
from infra.constructs.function import execution_role, function_log_group
from infra.constructs.images import lambda_architecture
from infra.constructs.keep_active import KeepActive
from infra.constructs.model_store import model_read_prefixes
from infra.constructs.monitoring import restore_duration_namespace

if TYPE_CHECKING:
    from infra.config import Environment, LambdaModel
    from infra.constructs.model_store import ModelStore

LIVE_ALIAS = "live"
# CDK warns that SnapStart applies to published versions only; the alias serves one.
_SNAPSTART_PUBLISH_WARNING = "@aws-cdk/aws-lambda:snapStartRequirePublish"
# Lambda's REPORT line of an invocation in a restored environment (text log format, the
# functions' default: function.py sets no LoggingConfig), e.g.
#   REPORT RequestId: <id>  Duration: 2.05 ms  Billed Duration: 3 ms  Memory Size: 1024 MB
#   Max Memory Used: 150 MB  Restore Duration: 474.16 ms  Billed Restore Duration: 257 ms
# "When a new execution environment is created, the REPORT includes the Restore Duration and
# Billed Restore Duration fields" and no Init Duration
# (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-monitoring.html). As a
# space-delimited pattern: one name per field, the restore fields pinned by their labels.
REPORT_FIELDS = (
    "type",
    "request_id_label",
    "request_id",
    "duration_label",
    "duration",
    "duration_unit",
    "billed_word",
    "billed_label",
    "billed",
    "billed_unit",
    "memory_word",
    "memory_label",
    "memory_size",
    "memory_unit",
    "max_word",
    "max_memory_word",
    "max_memory_label",
    "max_memory_used",
    "max_memory_unit",
    "restore_word",
    "restore_label",
    "restore_ms",
    "restore_unit",
    "...",
)
REPORT_LITERALS = {
    "type": "REPORT",
    "restore_word": "Restore",
    "restore_label": "Duration:",
    "restore_unit": "ms",
}


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

        # SnapStart snapshots the initialized environment of each PUBLISHED version (AWS::
        # Lambda::Function SnapStart, ApplyOn PublishedVersions: https://docs.aws.amazon.com/
        # AWSCloudFormation/latest/TemplateReference/aws-properties-lambda-function-snapstart.html).
        # An image on Lambda's Python 3.12+ base image needs nothing more: "Lambda coordinates
        # the lifecycle for you" (https://docs.aws.amazon.com/lambda/latest/dg/
        # snapstart-runtime-hooks-custom.html). aws-cdk-lib 2.275.0 accepts it for
        # Runtime.FROM_IMAGE (Function.configureSnapStart refuses only other runtimes without
        # SnapStart) and itself refuses EFS and ephemeral storage over 512 MB; config.py
        # (LambdaModel) refuses provisioned concurrency, which lives on the alias.
        snap_start = (
            lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS
            if model.cold_start is ColdStart.SNAPSTART
            else None
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
                # The live pointer: a new execution environment loads whatever release is
                # live when it starts, so a stack deploy keeps the promoted release. Before
                # the first release the init finds no pointer and the function answers 503
                # "no release yet". The promoter pins each version it publishes to one
                # release's manifest (releases/<model>/<id>/manifest.json).
                ENV_MODEL_URI: store.live_pointer_uri(model),
                ENV_ENVIRONMENT: config.name,
                ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
                ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
                # inferstack.capture samples this share of requests for the drift check.
                ENV_CAPTURE_RATE: f"{model.capture_rate:g}",
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            snap_start=snap_start,
        )
        if snap_start is not None:
            cdk.Annotations.of(self.function).acknowledge_warning(
                _SNAPSTART_PUBLISH_WARNING,
                f"the alias {LIVE_ALIAS!r} serves a published version (current_version)",
            )
        # Traffic goes through the alias, so provisioned concurrency stays warm across
        # the versions the promoter publishes. With SnapStart the alias serves a published
        # version, so every environment behind it is restored from that version's snapshot;
        # a published SnapStart version is Pending until its snapshot is ready, then Active
        # (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-activate.html#snapstart-function-states),
        # and CloudFormation waits on Lambda's function states
        # (https://aws.amazon.com/blogs/compute/coming-soon-expansion-of-aws-lambda-states-to-all-functions/).
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            description=f"The version of {model.name} that serves traffic",
            provisioned_concurrent_executions=model.provisioned_concurrency or None,
        )
        self.restore_duration = (
            restore_duration_filter(self, config=config, model=model, log_group=log_group)
            if snap_start is not None
            else None
        )
        # A SnapStart version invoked by nobody for 14 days goes Inactive: a scheduled health
        # check through the alias keeps the live one Active (keep_active.py).
        self.keep_active = (
            KeepActive(self, "KeepActive", config=config, model=model, alias=self.alias)
            if snap_start is not None
            else None
        )
        # Captured requests leave through the function's log group (infra/constructs/capture.py).
        self.capture = (
            CaptureDelivery(self, "Capture", model=model, store=store, log_group=log_group)
            if model.capture_rate > 0
            else None
        )
        store.grant_model_read(self.function, model)
        prefixes = model_read_prefixes(model.name)
        suppress_object_wildcards(
            role,
            prefixes,
            f"Read access to {model.name}'s own releases and artifacts only "
            f"({', '.join(p + '*' for p in prefixes)}): release ids and content hashes in "
            "the keys are not known at deploy time.",
        )


def restore_duration_filter(
    scope: Construct, *, config: Environment, model: LambdaModel, log_group: logs.ILogGroup
) -> logs.MetricFilter:
    """Lambda's Restore Duration (ms) of each restored environment, from the REPORT line.

    Published without dimensions under the model's own namespace
    (monitoring.restore_duration_namespace): a metric filter's dimensions take their values
    from the log event, and the REPORT line carries no model or environment.
    """
    pattern = logs.FilterPattern.space_delimited(*REPORT_FIELDS)
    for field, value in REPORT_LITERALS.items():
        pattern = pattern.where_string(field, "=", value)
    return logs.MetricFilter(
        scope,
        "RestoreDuration",
        log_group=log_group,
        filter_pattern=pattern,
        metric_namespace=restore_duration_namespace(config.name, model.name),
        metric_name=METRIC_RESTORE_DURATION,
        metric_value="$restore_ms",
        unit=cloudwatch.Unit.MILLISECONDS,
    )
