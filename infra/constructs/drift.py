"""Scheduled drift checks: captured traffic vs. each model's baseline -> metric and report.

One function serves every model; an EventBridge Scheduler schedule per model invokes it
with {"model": <name>, "threshold": <the alarm's drift score>, "window_minutes": <the
schedule's period>}: each run checks the traffic captured since the previous one
(functions/drift_check/handler.py, inferstack.drift.scheduled).

The function is a container image, like the others: it needs numpy, and an image built
from the repository root (at deploy time, by cdk-assets) needs no Docker or pip run at
synth time, shares the runtime package with the other images and has no size issues,
whereas a zip would need numpy bundled for the target platform while synthesizing.
"""

from __future__ import annotations

import json
import re
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
    ENV_ALARM_TOPIC_ARN,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_BUCKET,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    RELEASES_PREFIX,
    REPORTS_PREFIX,
    SERVICE_NAME,
)
from infra.constructs.common import (
    dead_letter_queue,
    schedule_target,
    scheduler_role,
    suppress_object_wildcards,
)
from infra.constructs.function import execution_role, function_log_group
from infra.constructs.images import function_image, lambda_architecture

if TYPE_CHECKING:
    from aws_cdk import aws_sns as sns

    from infra.config import Environment, ModelBase
    from infra.constructs.model_store import ModelStore

DRIFT_DOCKERFILE = "functions/drift_check/Dockerfile"
ARCHITECTURE = "arm64"
MEMORY_MB = 1024
TIMEOUT = cdk.Duration.minutes(5)
# A missed check is retried within the hour; after that the next scheduled run covers it.
_MAX_EVENT_AGE_S = 3600
_MAX_RETRIES = 3
# The window a cron schedule's run checks (a rate schedule's run checks its own period).
CRON_WINDOW_MINUTES = 60
_UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}


class DriftCheck(Construct):
    """The drift-check function and one schedule per model."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        store: ModelStore,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config

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
                # Drift found: the check sends the report's location here.
                ENV_ALARM_TOPIC_ARN: alarm_topic.topic_arn,
                ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
                ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
                # numpy's BLAS threads spin on a busy 2-vCPU function: one thread is faster
                # for the small matrix products of the multivariate check.
                "OPENBLAS_NUM_THREADS": "1",
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            retry_attempts=1,
            dead_letter_queue=self.dead_letter_queue,
        )

        # The live pointer and manifest name the release and its baseline.
        store.grant_prefix_read(self.function, CAPTURE_PREFIX, BASELINES_PREFIX, RELEASES_PREFIX)
        # An encrypted topic: a publisher needs kms:GenerateDataKey* and kms:Decrypt on its
        # key (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html), which
        # grant_publish adds.
        alarm_topic.grant_publish(self.function)
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
            [CAPTURE_PREFIX, BASELINES_PREFIX, RELEASES_PREFIX, REPORTS_PREFIX],
            "The drift check reads any model's captured traffic, release records and baseline "
            "and writes its report: one function serves every model, keys carry model name "
            "and time.",
        )
        NagSuppressions.add_resource_suppressions(
            role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="cloudwatch:PutMetricData has no resource-level permissions; the "
                    f"statement is restricted to the {METRICS_NAMESPACE} namespace by condition.",
                    applies_to=["Resource::*"],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="kms:GenerateDataKey* on the alarm topic's key only: what publishing "
                    "to an encrypted topic takes (Topic.grant_publish).",
                    applies_to=["Action::kms:GenerateDataKey*"],
                ),
            ],
            apply_to_children=True,
        )

        # The role EventBridge Scheduler assumes to invoke exactly this function.
        self._scheduler_role = scheduler_role(
            self,
            "SchedulerRole",
            description=f"InferStack {config.name}: drift schedules invoke the drift check",
            invokes=self.function.function_arn,
            queue=self.dead_letter_queue,
        )

    def add_model(self, model: ModelBase) -> scheduler.CfnSchedule:
        """A schedule (model.drift.schedule) that checks `model` against its threshold."""
        return scheduler.CfnSchedule(
            self,
            f"Schedule-{model.name}",
            description=f"InferStack {self._config.name}: drift check of {model.name}",
            schedule_expression=model.drift.schedule,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=schedule_target(
                arn=self.function.function_arn,
                role=self._scheduler_role,
                payload=json.dumps(
                    {
                        "model": model.name,
                        "threshold": model.drift.threshold,
                        "window_minutes": window_minutes(model.drift.schedule),
                    }
                ),
                dead_letter_queue=self.dead_letter_queue,
                max_event_age_s=_MAX_EVENT_AGE_S,
                retries=_MAX_RETRIES,
            ),
        )


def window_minutes(schedule: str) -> int:
    """The minutes between two runs of a rate(...) schedule; CRON_WINDOW_MINUTES for cron."""
    found = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", schedule)
    if not found:
        return CRON_WINDOW_MINUTES
    return int(found.group(1)) * _UNIT_MINUTES[found.group(2)]
