"""The Lambda canary: what a canary version's own metrics say, and whether it may go live.

During the bake the alias `live` keeps the previous version and sends `weight_percent` of its
invocations to the new one (AdditionalVersionWeights). The canary's figures come from one
GetMetricData call over the bake so far:

- ours, from the serving telemetry's per-request EMF document (inferstack.telemetry), under
  exactly its dimensions (service, environment, model, model_version = the release):
  Requests (Sum), ServerErrors (Sum: 5xx answers) and, when a latency bound is set,
  Latency (p99);
- Lambda's, in AWS/Lambda under FunctionName + Resource ("<function>:<alias>") +
  ExecutedVersion (the version the alias ran): Invocations and Errors (Sum). Errors are the
  crashes, timeouts and out-of-memory ends our EMF never records. "Use the ExecutedVersion
  dimension to compare error rates for two versions of a function that are both targets of a
  weighted alias" (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics.html).
  Invocations through the alias leave out the promoter's smoke invokes of the bare version.

The error rate is (ServerErrors + Errors) / requests, requests being the larger of our
Requests and Lambda's Invocations (either may lag the other by a minute).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_MODEL,
    DIM_MODEL_VERSION,
    DIM_SERVICE,
    METRIC_LATENCY,
    METRIC_REQUESTS,
    METRIC_SERVER_ERRORS,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

# Lambda's own namespace, metrics and dimensions (AWS's names, not ours).
LAMBDA_NAMESPACE = "AWS/Lambda"
LAMBDA_INVOCATIONS = "Invocations"
LAMBDA_ERRORS = "Errors"
FUNCTION_NAME, RESOURCE, EXECUTED_VERSION = "FunctionName", "Resource", "ExecutedVersion"
# Lambda sends its metrics at 1-minute intervals, stamped with the invocation's start, and
# EMF lines go through CloudWatch Logs: the verdict after the bake waits this long, the
# traffic still split, so the bake's last minutes count too.
SETTLE_S = 120.0
# The metrics cannot be read after the bake (AWS errors): retried for this long, then the
# release fails (its version never took the whole alias).
READ_GRACE_S = 300.0
# GetMetricData periods are multiples of 60 s for regular-resolution metrics
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html).
_MINUTE = 60

_REQUESTS, _SERVER_ERRORS, _P99 = "requests", "server_errors", "p99"
_INVOCATIONS, _FUNCTION_ERRORS = "invocations", "function_errors"


class Canary(NamedTuple):
    """A model's canary settings, as the target record carries them (infra/config.py Canary
    validates them; the record always has every key)."""

    weight_percent: int
    bake_minutes: int
    max_error_rate: float
    max_p99_ms: float | None
    min_requests: int

    @classmethod
    def from_target(cls, record: Mapping[str, Any] | None) -> Canary | None:
        """The target record's "canary" entry, or None when the model has none."""
        if not record:
            return None
        bound = record.get("max_p99_ms")
        return cls(
            weight_percent=int(record["weight_percent"]),
            bake_minutes=int(record["bake_minutes"]),
            max_error_rate=float(record["max_error_rate"]),
            max_p99_ms=None if bound is None else float(bound),
            min_requests=int(record.get("min_requests") or 0),
        )


class Figures(NamedTuple):
    """What the canary version did since its bake began."""

    requests: int
    server_errors: int  # answered 5xx (our ServerErrors)
    function_errors: int  # ended in a function error or timeout (Lambda's Errors)
    p99_ms: float | None  # our Latency p99; None when not bounded or no request yet

    @property
    def errors(self) -> int:
        return self.server_errors + self.function_errors

    @property
    def error_rate(self) -> float:
        if self.requests:
            return self.errors / self.requests
        return 1.0 if self.errors else 0.0

    def text(self) -> str:
        """ "123 requests, 2 errors (1.63%), p99 41 ms" for progress and failure reasons."""
        shown = f"{self.requests} requests, {self.errors} errors"
        if self.errors:
            shown += f" ({self.error_rate:.2%})"
        if self.p99_ms is not None:
            shown += f", p99 {self.p99_ms:.0f} ms"
        return shown

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "error_rate": round(self.error_rate, 6)}


class CanaryMetrics:
    """Reads a canary version's figures: one GetMetricData call per check."""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        service: str,
        environment: str,
        model: str,
        function: str,
        alias: str,
    ) -> None:
        """`client`: a CloudWatch client; `namespace`, `service`, `environment`: what the
        serving telemetry emits under (inferstack.telemetry.metric_identity)."""
        self.client = client
        self.namespace = namespace
        self._ours = {DIM_SERVICE: service, DIM_ENVIRONMENT: environment, DIM_MODEL: model}
        self._lambda = {FUNCTION_NAME: function, RESOURCE: f"{function}:{alias}"}

    def queries(
        self, release: str, version: str, period: int, *, p99: bool
    ) -> list[dict[str, Any]]:
        """The MetricDataQueries for release `release` served by version `version`."""
        ours = {**self._ours, DIM_MODEL_VERSION: release}
        lambdas = {**self._lambda, EXECUTED_VERSION: version}
        wanted = [
            (_REQUESTS, self.namespace, METRIC_REQUESTS, ours, "Sum"),
            (_SERVER_ERRORS, self.namespace, METRIC_SERVER_ERRORS, ours, "Sum"),
            (_INVOCATIONS, LAMBDA_NAMESPACE, LAMBDA_INVOCATIONS, lambdas, "Sum"),
            (_FUNCTION_ERRORS, LAMBDA_NAMESPACE, LAMBDA_ERRORS, lambdas, "Sum"),
        ]
        if p99:
            wanted.append((_P99, self.namespace, METRIC_LATENCY, ours, "p99"))
        return [
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": name,
                        # Sorted by name: one stable spelling (CloudWatch ignores order).
                        "Dimensions": [{"Name": k, "Value": dims[k]} for k in sorted(dims)],
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
            for query_id, namespace, name, dims, stat in wanted
        ]

    def read(self, release: str, version: str, since: float, until: float, *, p99: bool) -> Figures:
        """The figures from `since` to `until` (epoch seconds) as one period: CloudWatch
        rounds a recent StartTime down to the minute, and a p99 is only right over the whole
        window, never combined from shorter periods."""
        start = math.floor(since / _MINUTE) * _MINUTE
        period = max(_MINUTE, math.ceil((until - start) / _MINUTE) * _MINUTE)
        answer = self.client.get_metric_data(
            MetricDataQueries=self.queries(release, version, period, p99=p99),
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(start + period, UTC),
        )
        values: dict[str, list[float]] = {}
        for result in answer.get("MetricDataResults", []):
            status = result.get("StatusCode")
            if status not in ("Complete", "PartialData"):
                raise RuntimeError(f"GetMetricData answered {status} for {result.get('Id')}")
            values[result["Id"]] = [float(v) for v in result.get("Values", [])]

        def total(query_id: str) -> int:
            return round(sum(values.get(query_id, [])))

        latencies = values.get(_P99) or []
        return Figures(
            requests=max(total(_REQUESTS), total(_INVOCATIONS)),
            server_errors=total(_SERVER_ERRORS),
            function_errors=total(_FUNCTION_ERRORS),
            p99_ms=max(latencies) if latencies else None,
        )


def crossed(canary: Canary, figures: Figures) -> str | None:
    """Which threshold the canary's figures crossed (checked at every look), or None."""
    if figures.error_rate > canary.max_error_rate:
        return (
            f"error rate {figures.error_rate:.2%} ({figures.errors} of {figures.requests} "
            f"requests: {figures.server_errors} answered 5xx, {figures.function_errors} "
            f"function errors) is over max_error_rate {canary.max_error_rate:.2%}"
        )
    bound = canary.max_p99_ms
    if bound is not None and figures.p99_ms is not None and figures.p99_ms > bound:
        return (
            f"p99 latency {figures.p99_ms:.0f} ms over {figures.requests} requests is over "
            f"max_p99_ms {bound:g} ms"
        )
    return None


def unexercised(canary: Canary, figures: Figures) -> str | None:
    """Why a finished bake proves nothing (too few requests reached it), or None."""
    if figures.requests < canary.min_requests:
        return (
            f"only {figures.requests} requests reached it in {canary.bake_minutes} min, fewer "
            f"than min_requests {canary.min_requests}: nothing shows it serves well"
        )
    return None
