"""Scheduled drift checks: captured traffic vs. each model's baseline -> metric and report.

One function serves every model; an EventBridge Scheduler schedule per model invokes it
with {"model": <name>, "threshold": <PSI alarm level>}.

The function is a container image, like the others: it needs numpy, and an image built
from the repository root (at deploy time, by cdk-assets) needs no Docker or pip run at
synth time, shares the runtime package with the other images and has no size issues,
whereas a zip would need numpy bundled for the target platform while synthesizing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from inferstack.names import (
    BASELINES_PREFIX,
    CAPTURE_PREFIX,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_BUCKET,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    REPORTS_PREFIX,
    SERVICE_NAME,
)
from infra.constructs.common import dead_letter_queue, suppress_object_wildcards
from infra.constructs.function import execution_role, function_log_group
from infra.constructs.images import function_image, lambda_architecture

if TYPE_CHECKING:
    from infra.config import Environment, ModelBase
    from infra.constructs.model_store import ModelStore

DRIFT_DOCKERFILE = "functions/drift_check/Dockerfile"
ARCHITECTURE = "arm64"
MEMORY_MB = 1024
TIMEOUT = cdk.Duration.minutes(5)
# A missed check is retried within the hour; after that the next scheduled run covers it.
_MAX_EVENT_AGE_S = 3600
_MAX_RETRIES = 3


class DriftCheck(Construct):
    """The drift-check function and one schedule per model."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Environment, store: ModelStore
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        stack = cdk.Stack.of(self)

        log_group = function_log_group(self, "Logs", config=config)
        role = execution_role(
            self, "Role", log_group=log_group, description=f"InferStack {config.name}: drift check"
        )
        # Schedules that could not invoke the function, and invocations that failed after
        # their retries: a drift check that never ran shows up here.
        self.dead_letter_queue = dead_letter_queue(
            self, holds="the drift schedules and the drift function's asynchronous invocations"
        )
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=function_image(DRIFT_DOCKERFILE, ARCHITECTURE),
            description=f"InferStack {config.name}: captured traffic vs. baseline drift check",
            architecture=lambda_architecture(ARCHITECTURE),
            memory_size=MEMORY_MB,
            timeout=TIMEOUT,
            environment={
                ENV_ENVIRONMENT: config.name,
                ENV_MODEL_BUCKET: store.bucket.bucket_name,
                ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
                ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            retry_attempts=1,
            dead_letter_queue=self.dead_letter_queue,
        )

        store.grant_prefix_read(self.function, CAPTURE_PREFIX, BASELINES_PREFIX)
        # Captured traffic is keyed by time: the check lists what arrived since its last run.
        store.grant_prefix_list(self.function, CAPTURE_PREFIX, BASELINES_PREFIX)
        store.grant_prefix_write(self.function, REPORTS_PREFIX)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        suppress_object_wildcards(
            role,
            [CAPTURE_PREFIX, BASELINES_PREFIX, REPORTS_PREFIX],
            "The drift check reads any model's captured traffic and baseline and writes its "
            "report: one function serves every model, keys carry model name and time.",
        )
        NagSuppressions.add_resource_suppressions(
            role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="cloudwatch:PutMetricData has no resource-level permissions; the "
                    f"statement is restricted to the {METRICS_NAMESPACE} namespace by condition.",
                    applies_to=["Resource::*"],
                )
            ],
            apply_to_children=True,
        )

        # The role EventBridge Scheduler assumes to invoke exactly this function.
        self._scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description=f"InferStack {config.name}: drift schedules invoke the drift check",
        )
        # Not grant_invoke: that also allows every version and alias (function:*).
        self._scheduler_role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]
            )
        )
        self.dead_letter_queue.grant_send_messages(self._scheduler_role)

    def add_model(self, model: ModelBase) -> scheduler.CfnSchedule:
        """A schedule (model.drift.schedule) that checks `model` against its threshold."""
        return scheduler.CfnSchedule(
            self,
            f"Schedule-{model.name}",
            description=f"InferStack {self._config.name}: drift check of {model.name}",
            schedule_expression=model.drift.schedule,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.function.function_arn,
                role_arn=self._scheduler_role.role_arn,
                input=json.dumps({"model": model.name, "threshold": model.drift.threshold}),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=_MAX_EVENT_AGE_S,
                    maximum_retry_attempts=_MAX_RETRIES,
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
                    arn=self.dead_letter_queue.queue_arn
                ),
            ),
        )
