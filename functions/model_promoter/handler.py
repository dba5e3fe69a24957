"""Model promoter Lambda: uploads become releases and roll out; the CLI's promote/rollback.

Events:
- S3 "Object Created" for uploads/<model>/<file> (EventBridge): validate, release, roll out;
- {"action": "promote", "model": M, "release": R, "by": WHO}: move M to release R;
- {"action": "rollback", "model": M, "to": R | null, "by": WHO}: move M back.
One code path, one set of permissions moves traffic (inferstack.release.promote).
Each answers the final step: {"outcome", "model", "release", "result": live | failed, ...}.
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from inferstack.release.promote import Promoter

logger = Logger()
# Leave this much of the function's time for finishing (pointer, status, slot) and logging.
FINISH_MARGIN_MS = 60_000


def build_promoter(environ: dict[str, str] | os._Environ[str] = os.environ) -> Promoter:
    """The promoter over this environment's bucket and targets (the CDK app sets both)."""
    import boto3

    from inferstack.names import ENV_MODEL_BUCKET, ENV_TARGETS
    from inferstack.release.metrics import promotion_failed
    from inferstack.release.promote import Promoter
    from inferstack.release.rollout.targets import rollout_for
    from inferstack.release.store import ReleaseStore

    store = ReleaseStore(boto3.client("s3"), environ[ENV_MODEL_BUCKET])
    return Promoter(
        store,
        targets=json.loads(environ.get(ENV_TARGETS) or "{}"),
        rollout_for=rollout_for,
        on_failure=lambda model, reason: promotion_failed(model),
    )


@functools.cache
def environment_promoter() -> Promoter:
    """Built once per execution environment (clients and targets are reused)."""
    return build_promoter(os.environ)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    promoter = environment_promoter()
    if event.get("source") == "aws.s3":
        step = promoter.prepare(event)
    elif event.get("action") == "promote":
        step = promoter.promotion(event["model"], str(event["release"]), by=event.get("by", "cli"))
    elif event.get("action") == "rollback":
        step = promoter.rollback(event["model"], to=event.get("to"), by=event.get("by", "cli"))
    else:
        raise ValueError(f"not an event the promoter handles: {sorted(event)}")
    deadline_s = max(0.0, (context.get_remaining_time_in_millis() - FINISH_MARGIN_MS) / 1000)
    result = promoter.run(step, deadline_s=deadline_s)
    logger.info("promoter step done", extra={"step": result})
    return result
