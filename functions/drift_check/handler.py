"""Drift-check Lambda: invoked per model by its EventBridge Scheduler schedule with
{"model": <name>, "threshold": <the alarm's drift score>, "window_minutes": <the schedule's
period>} (inferstack.drift.scheduled).

It compares the window's captured traffic with the live release's baseline, writes the
report under drift-reports/<model>/<time>/, publishes DriftScore and DriftedFeatures, and on
drift sends the report's location to the alarm topic.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger

from inferstack.drift.scheduled import run_scheduled_check
from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_MODEL,
    ENV_ALARM_TOPIC_ARN,
    ENV_MODEL_BUCKET,
    METRIC_DRIFT_SCORE,
    METRIC_DRIFTED_FEATURES,
    model_name_problem,
)
from inferstack.telemetry import metric_identity

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
DEFAULT_WINDOW_MINUTES = 60
DEFAULT_ALARM_LEVEL = 1.0  # the drift score above which the alarm topic is told


def publish_metrics(model: str, score: float, drifted: int) -> None:
    """One EMF document: the score and the drifted-feature count, per model."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    namespace, service, environment = metric_identity(os.environ)
    metrics = EphemeralMetrics(namespace=namespace, service=service)
    metrics.add_dimension(DIM_ENVIRONMENT, environment)
    metrics.add_dimension(DIM_MODEL, model)
    metrics.add_metric(METRIC_DRIFT_SCORE, MetricUnit.NoUnit, score)
    metrics.add_metric(METRIC_DRIFTED_FEATURES, MetricUnit.Count, drifted)
    metrics.flush_metrics()


def notifier(sns: Any, topic_arn: str | None) -> Any:
    def notify(subject: str, message: str) -> None:
        if topic_arn:
            sns.publish(TopicArn=topic_arn, Subject=subject, Message=message)
        else:
            logger.warning("drift found but no alarm topic is set", extra={"message": message})

    return notify


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    model = event.get("model")
    problem = model_name_problem(model) if isinstance(model, str) else "it is not a string"
    if problem:
        logger.error("drift check input without a valid model name", extra={"input": event})
        return {"status": "invalid-input", "reason": f"'model': {problem}"}
    assert isinstance(model, str)
    try:
        window = timedelta(minutes=float(event.get("window_minutes") or DEFAULT_WINDOW_MINUTES))
        level = float(event.get("threshold") or DEFAULT_ALARM_LEVEL)
    except (TypeError, ValueError):
        return {"status": "invalid-input", "reason": "'window_minutes' and 'threshold' are numbers"}
    outcome = run_scheduled_check(
        boto3.client("s3"),
        bucket=os.environ[ENV_MODEL_BUCKET],
        model=model,
        now=datetime.now(UTC),
        window=window,
        alarm_level=level,
        publish_metrics=publish_metrics,
        notify=notifier(boto3.client("sns"), os.environ.get(ENV_ALARM_TOPIC_ARN)),
    )
    logger.info("drift check done", extra=outcome)
    return outcome
