"""The promoter's metric: PromotionFailures, per model (or per environment when an upload
matches no model), with exactly the dimensions the monitoring stack's alarms watch."""

from __future__ import annotations

import os

from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_MODEL,
    DIM_SERVICE,
    METRIC_PROMOTION_FAILURES,
)


def promotion_failed(model: str | None) -> None:
    """One failed promotion (rejected upload, failed rollout) as a CloudWatch EMF line."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    from inferstack.telemetry import metric_identity

    namespace, service, environment = metric_identity(os.environ)
    # service explicitly: single_metric adds it only when POWERTOOLS_SERVICE_NAME is set.
    dimensions = {DIM_SERVICE: service, DIM_ENVIRONMENT: environment}
    if model is not None:
        dimensions[DIM_MODEL] = model
    with single_metric(
        name=METRIC_PROMOTION_FAILURES,
        unit=MetricUnit.Count,
        value=1,
        namespace=namespace,
        default_dimensions=dimensions,
    ):
        pass
