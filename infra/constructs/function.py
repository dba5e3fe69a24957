"""The building blocks every InferStack Lambda function shares.

A log group with the environment's retention, and an execution role that may write only
that log group (and X-Ray): no managed policies. Each construct adds what its function
needs on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions

from infra.constructs.common import log_retention, removal_policy

if TYPE_CHECKING:
    from constructs import Construct

    from infra.config import Environment

_XRAY_REASON = (
    "X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords do not support "
    "resource-level permissions."
)


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
