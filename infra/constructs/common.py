"""Small helpers the construct modules share.

Removal and retention policies, the dead-letter queue, what an EventBridge Scheduler schedule
that invokes a function needs (its role, its target with retries and dead letters), the nag
suppression of prefix-scoped object grants (every role that reads or writes the model bucket),
and names that several constructs must agree on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo

from infra.config import RemovalPolicy

if TYPE_CHECKING:
    from constructs import Construct

    from infra.config import Environment

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


_REMOVAL = {
    RemovalPolicy.DESTROY: cdk.RemovalPolicy.DESTROY,
    RemovalPolicy.RETAIN: cdk.RemovalPolicy.RETAIN,
}


def removal_policy(config: Environment) -> cdk.RemovalPolicy:
    """The CDK removal policy for the environment's stateful resources."""
    return _REMOVAL[config.removal_policy]


def log_retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a number of days that config.py already validated."""
    return _RETENTION[days]


def dead_letter_queue(scope: Construct, *, holds: str) -> sqs.Queue:
    """An encrypted, TLS-only queue kept 14 days; `holds` says whose failures land in it."""
    queue = sqs.Queue(
        scope,
        "DeadLetterQueue",
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=cdk.Duration.days(14),
    )
    NagSuppressions.add_resource_suppressions(
        queue,
        [
            NagPackSuppression(
                id="AwsSolutions-SQS3",
                reason=f"This queue is itself the dead-letter queue of {holds}.",
            )
        ],
    )
    return queue


def scheduler_role(
    scope: Construct, construct_id: str, *, description: str, invokes: str, queue: sqs.IQueue
) -> iam.Role:
    """The role EventBridge Scheduler assumes to invoke exactly `invokes` (a function, version
    or alias ARN) and to send what it could not deliver to `queue`.

    Not grant_invoke: on a function that also allows every version and alias (function:*).
    """
    role = iam.Role(
        scope,
        construct_id,
        # The schedule's execution role (https://docs.aws.amazon.com/scheduler/latest/
        # UserGuide/setting-up.html#setting-up-execution-role), for this account's schedules only.
        assumed_by=iam.ServicePrincipal(
            "scheduler.amazonaws.com",
            conditions={"StringEquals": {"aws:SourceAccount": cdk.Stack.of(scope).account}},
        ),
        description=description,
    )
    role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[invokes]))
    queue.grant_send_messages(role)
    return role


def schedule_target(
    *,
    arn: str,
    role: iam.IRole,
    payload: str,
    dead_letter_queue: sqs.IQueue,
    max_event_age_s: int,
    retries: int,
) -> scheduler.CfnSchedule.TargetProperty:
    """A Lambda Invoke target (templated: the function, version or alias ARN) that retries
    for `max_event_age_s` and then leaves the event in `dead_letter_queue`
    (https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-targets-templated.html)."""
    return scheduler.CfnSchedule.TargetProperty(
        arn=arn,
        role_arn=role.role_arn,
        input=payload,
        retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
            maximum_event_age_in_seconds=max_event_age_s, maximum_retry_attempts=retries
        ),
        dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
            arn=dead_letter_queue.queue_arn
        ),
    )


def rest_api_name(env_name: str) -> str:
    """The API's name: also the ApiName dimension of its CloudWatch metrics."""
    return f"inferstack-{env_name}"


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
