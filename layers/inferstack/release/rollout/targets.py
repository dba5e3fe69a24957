"""Which Rollout moves which target: built from the target's record (INFERSTACK_TARGETS)."""

from __future__ import annotations

from typing import Any

from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout


def rollout_for(model: str, target: dict[str, Any], smoke_body: str) -> Rollout:
    """The rollout for `model` on its target, with the AWS clients it needs."""
    import boto3

    kind = target.get("target")
    if kind == "lambda":
        from inferstack.release.rollout.lambda_target import LambdaRollout

        return LambdaRollout(
            boto3.client("lambda"),
            function=target["function"],
            alias=target["alias"],
            smoke_body=smoke_body,
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
