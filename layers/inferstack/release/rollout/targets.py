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
