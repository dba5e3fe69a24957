"""Drift-check Lambda: invoked per model by an EventBridge Scheduler schedule.

PLACEHOLDER. This version only validates and logs its input
({"model": <name>, "threshold": <PSI alarm level>}) and answers
{"status": "not-implemented"}; it reads no captured traffic, computes no drift score and
writes no report. The real check (captured traffic vs. the model's baseline -> the
InferStack/DriftScore metric and a report under drift-reports/) is a later issue; see
README.md next to this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    model = event.get("model")
    threshold = event.get("threshold")
    if not isinstance(model, str) or not model:
        logger.error("drift check input without a model name", extra={"input": event})
        return {"status": "invalid-input", "reason": "'model' must be a non-empty string"}
    logger.info(
        "drift check requested; drift detection is not implemented yet",
        extra={"model": model, "threshold": threshold},
    )
    return {"status": "not-implemented", "model": model, "threshold": threshold}
