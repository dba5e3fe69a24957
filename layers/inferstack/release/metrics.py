"""The promoter's metric: PromotionFailures, per model (or per environment when an upload
matches no model), with exactly the dimensions the monitoring stack's alarms watch."""

from __future__ import annotations

import os

from inferstack.constants import DEFAULT_ENVIRONMENT
from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_MODEL,
    DIM_SERVICE,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_POWERTOOLS_SERVICE,
    METRIC_PROMOTION_FAILURES,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)


def promotion_failed(model: str | None) -> None:
    """One failed promotion (rejected upload, failed rollout) as a CloudWatch EMF line."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    env = os.environ
    dimensions = {
        # service explicitly: single_metric adds it only when POWERTOOLS_SERVICE_NAME is set.
        DIM_SERVICE: env.get(ENV_POWERTOOLS_SERVICE) or SERVICE_NAME,
        DIM_ENVIRONMENT: env.get(ENV_ENVIRONMENT) or DEFAULT_ENVIRONMENT,
    }
    if model is not None:
        dimensions[DIM_MODEL] = model
    with single_metric(
        name=METRIC_PROMOTION_FAILURES,
        unit=MetricUnit.Count,
        value=1,
        namespace=env.get(ENV_METRICS_NAMESPACE) or METRICS_NAMESPACE,
        default_dimensions=dimensions,
    ):
        pass
