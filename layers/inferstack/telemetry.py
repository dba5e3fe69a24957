"""Logs, metrics and traces with Powertools for AWS Lambda.

Metrics are CloudWatch EMF lines on stdout (Lambda, ECS awslogs and SageMaker all
ship stdout to CloudWatch Logs, which extracts them), one document per request.
Dimensions: environment, model, model version; errors also by class. The per-request
document's ServerErrors (1 for a 5xx answer) gives each model version its own error rate,
which the Lambda canary (inferstack.release.rollout.canary) reads.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import orjson

from inferstack.constants import DEFAULT_ENVIRONMENT
from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_ERROR_CLASS,
    DIM_MODEL,
    DIM_MODEL_VERSION,
    DIM_SERVICE,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_POWERTOOLS_SERVICE,
    ENV_TRACING,
    METRIC_COLD_START,
    METRIC_ERRORS,
    METRIC_LATENCY,
    METRIC_MODEL_LATENCY,
    METRIC_REQUEST_BYTES,
    METRIC_REQUESTS,
    METRIC_RESPONSE_BYTES,
    METRIC_RESTORED_START,
    METRIC_SERVER_ERRORS,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from inferstack.settings import env_flag

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = SERVICE_NAME

# EMF document templates kept per telemetry (one per model version and request shape).
_MAX_EMF_TEMPLATES = 256

# The error class a status maps to, as the ErrorClass dimension of the Errors metric.
ERROR_CLASSES = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "Throttled",  # the monitoring stack alarms on this class for GPU models
    500: "Internal",
    503: "NotReady",
}


def metric_identity(
    env: Mapping[str, str],
    *,
    environment: str | None = None,
    namespace: str | None = None,
    service: str | None = None,
) -> tuple[str, str, str]:
    """(namespace, service, environment) of a process's metrics: the arguments, else what
    the CDK app sets in `env`, else the defaults. The serving hosts emit under it; the
    promoter, given the same variables, reads a canary's metrics under it."""
    return (
        namespace or env.get(ENV_METRICS_NAMESPACE) or METRICS_NAMESPACE,
        # Passed explicitly (so a missing variable cannot make it "service_undefined"):
        # the alarms watch the service dimension Powertools adds to every metric.
        service or env.get(ENV_POWERTOOLS_SERVICE) or SERVICE,
        environment or env.get(ENV_ENVIRONMENT) or DEFAULT_ENVIRONMENT,
    )


class RequestRecord:
    """What one request did, as the data plane saw it (filled in as it goes).

    A plain slotted class: a dataclass costs ~0.3 ms of cold start to define.
    """

    __slots__ = (
        "model",
        "model_ms",
        "model_version",
        "request_bytes",
        "response_bytes",
        "status",
        "total_ms",
    )

    def __init__(
        self,
        status: int = 500,
        total_ms: float = 0.0,
        *,
        model: str | None = None,
        model_version: str | None = None,
        model_ms: float | None = None,
        request_bytes: int = 0,
        response_bytes: int = 0,
    ) -> None:
        """status and total_ms are the answer's, filled in when it is known."""
        self.status, self.total_ms = status, total_ms
        self.model, self.model_version, self.model_ms = model, model_version, model_ms
        self.request_bytes, self.response_bytes = request_bytes, response_bytes


class Telemetry:
    """No-op telemetry: the local server's default."""

    logger: Logger | None = None

    @property
    def identity(self) -> tuple[str, str, str] | None:
        """(namespace, service, environment) the host's metrics go under; None: none go."""
        return None

    def record(self, record: RequestRecord) -> None:
        """Account for one request."""

    def trace(self, name: str) -> AbstractContextManager[Any]:
        return nullcontext()

    def restored(self) -> None:
        """The environment was restored from a SnapStart snapshot (inferstack.snapstart):
        its next request is its first."""


# The start metrics of an environment's first request: every new environment's, and a
# restored one's (a subset of ColdStart; initialized = ColdStart - RestoredStart).
_INITIALIZED = (METRIC_COLD_START,)
_RESTORED = (METRIC_COLD_START, METRIC_RESTORED_START)


class PowertoolsTelemetry(Telemetry):
    """EMF metrics + structured JSON logs (+ X-Ray subsegments when tracing is on)."""

    def __init__(
        self,
        *,
        environment: str | None = None,
        namespace: str | None = None,
        service: str | None = None,
        tracing: bool | None = None,
    ) -> None:
        """Arguments come from the host's Settings; None reads the process environment."""
        from aws_lambda_powertools import Logger, Metrics
        from aws_lambda_powertools.metrics import MetricUnit

        env = os.environ
        self.namespace, self.service, self.environment = metric_identity(
            env, environment=environment, namespace=namespace, service=service
        )
        self.logger = Logger(service=self.service)
        self.metrics: Metrics = Metrics(namespace=self.namespace, service=self.service)
        # Powertools keeps metric state per process, shared by every Metrics object: a new
        # telemetry replaces the old one's default dimensions rather than adding to them.
        self.metrics.clear_default_dimensions()
        self.metrics.clear_metrics()
        self.metrics.set_default_dimensions(**{DIM_ENVIRONMENT: self.environment})
        # Bound once: the per-request path should not go through the import machinery.
        self._units = MetricUnit
        # What the next request counts as a start (empty once one has been served).
        self._start: tuple[str, ...] = _INITIALIZED
        self._emf_templates: dict[tuple[Any, ...], dict[str, Any]] = {}
        if tracing is None:
            tracing = env_flag(env, ENV_TRACING, default=False)
        self.tracer: Tracer | None = _make_tracer(self.service) if tracing else None

    @property
    def identity(self) -> tuple[str, str, str] | None:
        return (self.namespace, self.service, self.environment)

    def record(self, record: RequestRecord) -> None:
        # The EMF document's shape (namespace, dimensions, metric names and units) is the
        # same for every request of a model version: Powertools builds it once per shape
        # (_emf_template) and each request fills in its values and timestamp. Building it
        # with add_metric/flush_metrics per request cost ~100 us of the ~250 us a warm
        # Lambda request takes (benchmarks/warm_overhead.py); this costs ~5 us.
        shape = (record.model, record.model_version, record.model_ms is not None, self._start)
        template = self._emf_templates.get(shape)
        if template is None:
            template = self._emf_templates[shape] = self._emf_template(record)
        self._start = ()
        if template:
            document = template.copy()
            # Milliseconds since the epoch, as Powertools and the EMF specification have it.
            document["_aws"] = {**template["_aws"], "Timestamp": int(time.time() * 1000)}
            document[METRIC_REQUESTS] = [1.0]
            document[METRIC_LATENCY] = [float(record.total_ms)]
            if record.model_ms is not None:
                document[METRIC_MODEL_LATENCY] = [float(record.model_ms)]
            document[METRIC_REQUEST_BYTES] = [float(record.request_bytes)]
            document[METRIC_RESPONSE_BYTES] = [float(record.response_bytes)]
            document[METRIC_SERVER_ERRORS] = [1.0 if record.status >= 500 else 0.0]
            write_line(orjson.dumps(document).decode())
        if record.status >= 400:
            self._record_error(record)

    def _emf_template(self, record: RequestRecord) -> dict[str, Any]:
        """Powertools' own EMF document for requests shaped like this one; {} when disabled.
        record() keeps one per shape (models x versions: few), cleared past a bound."""
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        metrics, unit = self.metrics, self._units
        if record.model is not None:
            metrics.add_dimension(DIM_MODEL, record.model)
            metrics.add_dimension(DIM_MODEL_VERSION, record.model_version or "unversioned")
        metrics.add_metric(METRIC_REQUESTS, unit.Count, 1)
        metrics.add_metric(METRIC_LATENCY, unit.Milliseconds, 0)
        if record.model_ms is not None:
            metrics.add_metric(METRIC_MODEL_LATENCY, unit.Milliseconds, 0)
        metrics.add_metric(METRIC_REQUEST_BYTES, unit.Bytes, 0)
        metrics.add_metric(METRIC_RESPONSE_BYTES, unit.Bytes, 0)
        metrics.add_metric(METRIC_SERVER_ERRORS, unit.Count, 0)
        for name in self._start:
            metrics.add_metric(name, unit.Count, 1)
        # POWERTOOLS_METRICS_DISABLED / POWERTOOLS_DEV silence flush_metrics; so here.
        template = {} if is_metrics_disabled() else dict(metrics.serialize_metric_set())
        metrics.clear_metrics()
        if len(self._emf_templates) >= _MAX_EMF_TEMPLATES:  # models x versions: bounded
            self._emf_templates.clear()
        return template

    def _record_error(self, record: RequestRecord) -> None:
        error_class = ERROR_CLASSES.get(record.status, f"Status{record.status}")
        # service explicitly (Powertools adds it only when POWERTOOLS_SERVICE_NAME is set):
        # the alarms need the exact dimension set wherever the server runs.
        dimensions = {
            DIM_SERVICE: self.service,
            DIM_ENVIRONMENT: self.environment,
            DIM_MODEL: record.model or "none",
        }
        emit_count(METRIC_ERRORS, self.namespace, dimensions, {DIM_ERROR_CLASS: error_class})

    def trace(self, name: str) -> AbstractContextManager[Any]:
        if self.tracer is None:
            return nullcontext()
        return self.tracer.provider.in_subsegment(name=name)

    def restored(self) -> None:
        # Once, by the after-restore hook; record() reads this attribute on every request
        # anyway, so a restore adds no work to any request.
        self._start = _RESTORED


def write_line(line: str, *, flush: bool = False) -> None:
    """`line` and its newline to stdout in ONE write call.

    print() writes the text and the newline apart: two system calls where stdout writes
    through (Lambda's runtime flushes every write; the container sets PYTHONUNBUFFERED),
    and room for a line from another thread (the server loads models and decodes large
    bodies in threads, and they log) to land between them, corrupting both lines for
    CloudWatch Logs, which splits stdout on newlines. One call is one piece: io's text and
    buffered layers append and flush whole writes in order."""
    stream = sys.stdout
    stream.write(line + "\n")
    if flush:
        stream.flush()


def emit_count(
    name: str,
    namespace: str,
    dimensions: Mapping[str, str],
    extra_dimensions: Mapping[str, str] | None = None,
) -> None:
    """One EMF document counting 1 of `name` under exactly these dimensions: the document
    Powertools' single_metric prints, written as one line (write_line)."""
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.metrics.base import SingleMetric

    metric = SingleMetric(namespace=namespace)
    metric.add_metric(name=name, unit=MetricUnit.Count, value=1)
    for key, value in {**dimensions, **(extra_dimensions or {})}.items():
        metric.add_dimension(name=key, value=value)
    write_line(orjson.dumps(metric.serialize_metric_set()).decode())


# Powertools publishes a metric set on its own (print()) once a metric holds 100 values:
# documents built here keep each metric under that.
MAX_EMF_VALUES = 99


def emf_document(
    identity: tuple[str, str, str],
    model: str,
    series: Mapping[str, tuple[str, Sequence[float]]],
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """One EMF document, as Powertools builds it, of several metrics with value arrays
    (name -> (unit, values), at most MAX_EMF_VALUES each; empty ones left out) under
    (namespace, service, environment) + model: the per-minute aggregates of the GPU sampler
    and the batcher."""
    from aws_lambda_powertools.metrics.base import MetricManager

    namespace, service, environment = identity
    metrics = MetricManager(namespace=namespace, service=service)
    for key, value in ((DIM_SERVICE, service), (DIM_ENVIRONMENT, environment), (DIM_MODEL, model)):
        metrics.add_dimension(name=key, value=value)
    for name, (unit, values) in series.items():
        for number in values[:MAX_EMF_VALUES]:
            metrics.add_metric(name=name, unit=unit, value=number)
    document: dict[str, Any] = metrics.serialize_metric_set()
    if timestamp_ms is not None:
        document["_aws"]["Timestamp"] = timestamp_ms
    return document


def _make_tracer(service: str) -> Tracer | None:
    try:
        from aws_lambda_powertools import Tracer

        return Tracer(service=service)
    except ImportError:
        logging.getLogger(__name__).warning(
            "tracing requested but aws-xray-sdk is not installed: tracing stays off"
        )
        return None
