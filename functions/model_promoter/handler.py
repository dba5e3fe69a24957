"""Model promoter Lambda: the steps of the rollout state machine, or a whole rollout locally.

As a step of the state machine (infra/constructs/rollout_machine.py), the event is
{"step": "prepare" | "start" | "check" | "finish", "input": {...}} and the answer is the next
step dict (inferstack.release.promote). Prepare's input is the execution's input:
- S3 "Object Created" for uploads/<model>/<file> (EventBridge): validate and release;
- {"action": "promote", "model": M, "release": R, "by": WHO}: move M to release R;
- {"action": "rollback", "model": M, "to": R | null, "by": WHO}: move M back.
Invoked directly with one of those three (no "step"), it runs the whole rollout in this one
invocation, for local use and targets that finish at once.

A failure raises an exception whose class name is the error name Step Functions retries or
catches on (ReleaseConflict, ReleaseNotFound, ..., UnsupportedEvent).
One code path, one set of permissions moves traffic (inferstack.release.promote).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_lambda_powertools.utilities.typing import LambdaContext

    from inferstack.release.promote import Promoter, RolloutFactory

    Step = dict[str, Any]

logger = Logger()
# Leave this much of the function's time for finishing (pointer, status, slot) and logging.
FINISH_MARGIN_MS = 60_000
# Where the state machine's Catch on Check puts the error (rollout_machine.CHECK_ERROR_PATH).
CHECK_ERROR = "check_error"


class UnsupportedEvent(ValueError):
    """Not an event or step the promoter handles (the error name callers see)."""


def build_promoter(
    environ: Mapping[str, str] = os.environ, *, rollout_for: RolloutFactory | None = None
) -> Promoter:
    """The promoter over this environment's bucket and targets (the CDK app sets both);
    `rollout_for`: the targets' rollouts (inferstack.release.rollout.targets by default)."""
    import boto3

    from inferstack.names import ENV_MODEL_BUCKET, ENV_TARGETS
    from inferstack.release.metrics import promotion_failed
    from inferstack.release.promote import Promoter
    from inferstack.release.rollout.targets import rollout_for as target_rollout
    from inferstack.release.store import ReleaseStore

    store = ReleaseStore(boto3.client("s3"), environ[ENV_MODEL_BUCKET])
    return Promoter(
        store,
        targets=json.loads(environ.get(ENV_TARGETS) or "{}"),
        rollout_for=rollout_for or target_rollout,
        on_failure=lambda model, reason: promotion_failed(model),
    )


@functools.cache
def environment_promoter() -> Promoter:
    """Built once per execution environment (clients and targets are reused)."""
    return build_promoter(os.environ)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Step:
    return dispatch(environment_promoter(), event, context)


def dispatch(promoter: Promoter, event: Mapping[str, Any], context: LambdaContext) -> Step:
    """One state machine step, or (no "step") a whole rollout in this invocation."""
    if "step" in event:
        owner = event.get("execution")
        result = run_step(promoter, str(event["step"]), event.get("input") or {}, owner)
    else:
        deadline_s = max(0.0, (context.get_remaining_time_in_millis() - FINISH_MARGIN_MS) / 1000)
        result = promoter.run(prepared(promoter, event), deadline_s=deadline_s)
    logger.info("promoter step done", extra={"step": result})
    return result


def run_step(
    promoter: Promoter, name: str, step: Mapping[str, Any], owner: str | None = None
) -> Step:
    if name == "prepare":
        return prepared(promoter, step)
    if name == "start":
        return promoter.start(dict(step), owner=owner)
    if name == "check":
        return promoter.check(dict(step))
    if name == "finish":
        return promoter.finish(_unless_check_failed(step))
    raise UnsupportedEvent(f"no promoter step {name!r}: prepare, start, check or finish")


def prepared(promoter: Promoter, event: Mapping[str, Any]) -> Step:
    """What a rollout starts from: an upload event, or the CLI's promote or rollback."""
    if event.get("source") == "aws.s3":
        return promoter.prepare(event)
    action = event.get("action")
    by = str(event.get("by") or "cli")
    reason = event.get("reason")
    if action == "promote":
        release = str(_field(event, "release"))
        return promoter.promotion(_field(event, "model"), release, by=by, reason=reason)
    if action == "rollback":
        to = event.get("to")
        return promoter.rollback(
            _field(event, "model"), to=None if to is None else str(to), by=by, reason=reason
        )
    raise UnsupportedEvent(
        f"not an event the promoter handles (keys {sorted(event)}): an S3 upload event or "
        '{"action": "promote" | "rollback", "model": ...}'
    )


def _field(event: Mapping[str, Any], name: str) -> Any:
    value = event.get(name)
    if value is None or value == "":
        raise UnsupportedEvent(f"{event.get('action')} needs {name!r}")
    return value


def _unless_check_failed(step: Mapping[str, Any]) -> Step:
    """A step the state machine's Catch on Check handed over: the rollout failed, with the
    error that ended the checking as its reason (Finish records it and frees the slot)."""
    step = dict(step)
    caught = step.pop(CHECK_ERROR, None)
    if caught is None:
        return step
    error, cause = str(caught.get("Error", "")), caught.get("Cause")
    with contextlib.suppress(TypeError, ValueError, KeyError):  # a Lambda error's Cause is
        cause = json.loads(cause)["errorMessage"]  # its JSON error object
    reason = f"the rollout could not be checked: {error}: {cause}"
    return {**step, "phase": "failed", "phase_reason": reason}
