"""Which Rollout moves which target: built from the target's record (INFERSTACK_TARGETS)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.release.rollout.canary import CanaryMetrics


def rollout_for(model: str, target: dict[str, Any], smoke_body: str) -> Rollout:
    """The rollout for `model` on its target, with the AWS clients it needs."""
    import boto3

    kind = target.get("target")
    if kind == "lambda":
        from inferstack.release.rollout.canary import Canary
        from inferstack.release.rollout.lambda_target import LambdaRollout

        canary = Canary.from_target(target.get("canary"))
        return LambdaRollout(
            boto3.client("lambda"),
            function=target["function"],
            alias=target["alias"],
            smoke_body=smoke_body,
            canary=canary,
            metrics=canary_metrics(boto3.client("cloudwatch"), model, target) if canary else None,
        )
    if kind == "sagemaker":
        from inferstack.release.rollout.sagemaker_target import SageMakerRollout

        return SageMakerRollout(
            boto3.client("sagemaker"), endpoint=target["endpoint"], role=target.get("role")
        )
    if kind == "ecs":
        from inferstack.release.rollout.ecs_target import EcsRollout

        return EcsRollout(boto3.client("ecs"), cluster=target["cluster"], service=target["service"])
    return Unsupported(kind)


def canary_metrics(
    client: Any, model: str, target: dict[str, Any], env: Mapping[str, str] = os.environ
) -> CanaryMetrics:
    """The reader of a Lambda model's canary figures: the promoter's environment carries the
    namespace, service and environment the serving functions emit under (the CDK app sets
    the same variables on both)."""
    from inferstack.release.rollout.canary import CanaryMetrics
    from inferstack.telemetry import metric_identity

    namespace, service, environment = metric_identity(env)
    return CanaryMetrics(
        client,
        namespace=namespace,
        service=service,
        environment=environment,
        model=model,
        function=target["function"],
        alias=target["alias"],
    )


class Unsupported(Rollout):
    """A target this version cannot roll out yet: the release fails with the reason, and the
    previous release keeps serving (never a half-done move)."""

    def __init__(self, kind: object) -> None:
        self.target = str(kind)

    def start(self, release: ReleaseRef) -> Progress:
        return Progress(
            "failed",
            f"rolling out to {self.target} targets is not built yet: release {release.release} "
            f"of {release.model} is recorded and validated; the live release keeps serving",
        )
