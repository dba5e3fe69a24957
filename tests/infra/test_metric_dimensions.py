"""Every InferStack metric an alarm or dashboard widget watches is one the code publishes.

A CloudWatch alarm (and a SEARCH schema) matches only a metric with exactly the same
dimension set: an alarm that leaves out `service`, which Powertools adds, never fires.
This runs the real emitters under the environment each serving host gets from the
synthesized template, parses the EMF lines they print, and compares the dimension sets
(names and the values of service/environment) with every alarm and widget of every
environment. Metrics that no code emits yet are held to their declared dimension set
(infra.constructs.monitoring.METRIC_DIMENSIONS); their emitters join EMITTERS here.
The Lambda canary's queries are held to the same: each reads a metric exactly as the
serving function emits it, under the promoter's own environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_SERVICE,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_POWERTOOLS_SERVICE,
    ENV_TARGETS,
    METRICS_NAMESPACE,
)
from infra.config import Target
from infra.constructs.monitoring import METRIC_DIMENSIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.infra.conftest import Synthesized

# (metric name, dimension name -> value) as printed in one EMF document.
Emitted = tuple[str, dict[str, str]]


def _emf_metrics(stdout: str) -> list[Emitted]:
    """Parse CloudWatch EMF documents: every metric with the dimensions it is stored under."""
    found: list[Emitted] = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            assert directive["Namespace"] == METRICS_NAMESPACE
            for dimension_set in directive["Dimensions"]:
                values = {name: str(document[name]) for name in dimension_set}
                found += [(metric["Name"], values) for metric in directive["Metrics"]]
    return found


def _serving_runtime(env: dict[str, str]) -> list[Emitted]:
    """layers/inferstack/telemetry.py as a serving host runs it: one answer, one 429."""
    from inferstack.telemetry import PowertoolsTelemetry, RequestRecord

    telemetry = PowertoolsTelemetry()
    model = env[ENV_MODEL_NAME]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for status in (200, 429):
            record = RequestRecord(status, 4.0, model=model, model_version="3", model_ms=2.0)
            telemetry.record(record)
    return _emf_metrics(out.getvalue())


def _promoter(env: dict[str, str]) -> list[Emitted]:
    """layers/inferstack/release/metrics.py: a failed promotion of a model, and of an upload
    that matches no model."""
    from inferstack.release.metrics import promotion_failed

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        promotion_failed(env[ENV_MODEL_NAME])
        promotion_failed(None)
    return _emf_metrics(out.getvalue())


def _gpu_sampler(env: dict[str, str]) -> list[Emitted]:
    """layers/inferstack/server/gpu_metrics.py: a minute of GPU samples for the model."""
    from inferstack.server.gpu_metrics import gpu_emf_document
    from inferstack.telemetry import metric_identity

    document = gpu_emf_document([(50.0, 20.0)], metric_identity(env), env[ENV_MODEL_NAME])
    return _emf_metrics(json.dumps(document))


def _batcher(env: dict[str, str]) -> list[Emitted]:
    """layers/inferstack/models/batching.py: a batch's size and its requests' queue times."""
    from inferstack.models.batching import BatchMetrics
    from inferstack.telemetry import metric_identity

    lines: list[str] = []
    metrics = BatchMetrics(metric_identity(env), env[ENV_MODEL_NAME], write=lines.append)
    metrics.record(4, [1.0, 2.0])
    metrics.publish()
    return _emf_metrics("\n".join(lines))


# Emitters, run under each serving host's environment. The drift check adds its own when
# it emits (DriftScore).
EMITTERS: dict[str, Callable[[dict[str, str]], list[Emitted]]] = {
    "runtime": _serving_runtime,
    "promoter": _promoter,
    "gpu sampler": _gpu_sampler,
    "batcher": _batcher,
}


def _host_environments(template: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The environment of every Lambda function, SageMaker model and ECS container that serves."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        variables: dict[str, Any] = {}
        if kind == "AWS::Lambda::Function":
            variables = props.get("Environment", {}).get("Variables", {})
        elif kind == "AWS::SageMaker::Model":
            variables = props.get("PrimaryContainer", {}).get("Environment", {})
        elif kind == "AWS::ECS::TaskDefinition":
            for container in props.get("ContainerDefinitions", []):
                variables = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
                if ENV_MODEL_NAME in variables:
                    break
        if ENV_MODEL_NAME in variables:
            yield {k: v for k, v in variables.items() if isinstance(v, str)}


def _emitted(env: Synthesized, monkeypatch: pytest.MonkeyPatch) -> list[Emitted]:
    template = json.loads(env.template_path.read_text())
    hosts = list(_host_environments(template))
    assert hosts, "no serving host found in the template"
    emitted: list[Emitted] = []
    for host in hosts:
        with monkeypatch.context() as patch:
            for name in (ENV_POWERTOOLS_SERVICE, ENV_METRICS_NAMESPACE, ENV_ENVIRONMENT):
                patch.delenv(name, raising=False)
            for name, value in host.items():
                patch.setenv(name, value)
            for emit in EMITTERS.values():
                emitted += emit(host)
    return emitted


def _flatten(value: Any) -> str:
    """A template string value with CloudFormation intrinsics replaced by a placeholder."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_flatten(part) for part in parts)
    return "TOKEN"


_SEARCH = re.compile(r"SEARCH\(\s*'\{([^}]*)\}(.*?)'")
_TERM = re.compile(r'(\w+)="([^"]*)"')


def _watched(template: dict[str, Any]) -> list[tuple[str, str, dict[str, str], bool]]:
    """(where, metric, dimensions, exact) of every InferStack metric alarms and widgets read.

    `exact` is False for a SEARCH, whose schema gives the dimension names and whose terms
    give only some values.
    """
    watched: list[tuple[str, str, dict[str, str], bool]] = []
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            stats = [props] + [
                q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q
            ]
            for stat in stats:
                if stat.get("Namespace") == METRICS_NAMESPACE:
                    dims = {d["Name"]: _flatten(d["Value"]) for d in stat.get("Dimensions", [])}
                    watched.append((logical_id, stat["MetricName"], dims, True))
        elif resource["Type"] == "AWS::CloudWatch::Dashboard":
            body = json.loads(_flatten(props["DashboardBody"]))
            for widget in body["widgets"]:
                for entry in widget.get("properties", {}).get("metrics", []):
                    head = [part for part in entry if not isinstance(part, dict)]
                    options = [part for part in entry if isinstance(part, dict)]
                    if head and head[0] == METRICS_NAMESPACE:
                        dims = dict(zip(head[2::2], head[3::2], strict=True))
                        watched.append((logical_id, head[1], dims, True))
                    for option in options:
                        for schema, terms in _SEARCH.findall(option.get("expression", "")):
                            namespace, *names = [p.strip() for p in schema.split(",")]
                            if namespace != METRICS_NAMESPACE:
                                continue
                            values = dict(_TERM.findall(terms))
                            metric = values.pop("MetricName")
                            dims = {name: values.get(name, "*") for name in names}
                            watched.append((logical_id, metric, dims, False))
    return watched


def test_emitters_publish_the_declared_dimension_sets(
    env: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted = _emitted(env, monkeypatch)
    by_metric: dict[str, set[frozenset[str]]] = {}
    for metric, dims in emitted:
        by_metric.setdefault(metric, set()).add(frozenset(dims))
        # The values alarms filter on: the service name and this environment.
        assert dims[DIM_SERVICE] == "inferstack" and dims[DIM_ENVIRONMENT] == env.config.name
    assert {"Requests", "Latency", "ColdStart", "Errors", "PromotionFailures"} <= set(by_metric)
    for metric, sets in by_metric.items():
        assert sets == set(METRIC_DIMENSIONS[metric]), metric


def test_every_watched_metric_has_exactly_a_published_dimension_set(
    env: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted = {(metric, frozenset(dims)) for metric, dims in _emitted(env, monkeypatch)}
    template = json.loads(env.template_path.read_text())
    watched = _watched(template)
    metrics = {metric for _, metric, _, _ in watched}
    # What this issue fixed must be among what is checked, or the test checks nothing.
    assert {"DriftScore", "PromotionFailures", "ColdStart"} <= metrics
    if env.config.name == "prod":
        assert {"Errors", "GPUUtilization"} <= metrics
    problems = []
    for where, metric, dims, exact in watched:
        names = frozenset(dims)
        emitted_here = {n for m, n in emitted if m == metric}
        allowed = emitted_here or set(METRIC_DIMENSIONS.get(metric, ()))
        if names not in allowed:
            problems.append(
                f"{where}: {metric} {sorted(names)} not in {sorted(map(sorted, allowed))}"
            )
        if exact and dims.get(DIM_SERVICE) != "inferstack":
            problems.append(f"{where}: {metric} service={dims.get(DIM_SERVICE)!r}")
        if dims.get(DIM_ENVIRONMENT, env.config.name) != env.config.name:
            problems.append(f"{where}: {metric} environment={dims[DIM_ENVIRONMENT]!r}")
    assert not problems, "\n".join(problems)


def _lambda_hosts(template: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The environment of every inference function (the canary's targets)."""
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        if ENV_MODEL_NAME in variables:
            yield {k: v for k, v in variables.items() if isinstance(v, str)}


def _promoter_environment(template: dict[str, Any]) -> dict[str, str]:
    (variables,) = (
        resource["Properties"]["Environment"]["Variables"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
        and ENV_TARGETS in resource["Properties"].get("Environment", {}).get("Variables", {})
    )
    return {k: v for k, v in variables.items() if isinstance(v, str)}


def test_the_canary_reads_its_version_as_the_function_emits_it(
    env: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary's queries (inferstack.release.rollout.canary), built under the promoter's
    environment, name exactly the metrics and dimension values (release "3") that the
    serving telemetry prints under the inference function's environment; Lambda's own are
    queried by FunctionName + Resource (function:alias) + ExecutedVersion
    (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics.html)."""
    from inferstack.release.rollout.canary import LAMBDA_NAMESPACE
    from inferstack.release.rollout.targets import canary_metrics

    template = json.loads(env.template_path.read_text())
    promoter_env = _promoter_environment(template)
    hosts = list(_lambda_hosts(template))
    assert len(hosts) == len(env.config.models_on(Target.LAMBDA)) >= 1
    for host in hosts:
        with monkeypatch.context() as patch:
            for name in (ENV_POWERTOOLS_SERVICE, ENV_METRICS_NAMESPACE, ENV_ENVIRONMENT):
                patch.delenv(name, raising=False)
            for name, value in host.items():
                patch.setenv(name, value)
            emitted = {
                (metric, tuple(sorted(dims.items()))) for metric, dims in _serving_runtime(host)
            }
        target = {"function": "inferstack-fn", "alias": "live"}
        reader = canary_metrics(None, host[ENV_MODEL_NAME], target, promoter_env)
        queries = reader.queries("3", "7", 60, p99=True)
        ours = [
            q["MetricStat"]["Metric"]
            for q in queries
            if q["MetricStat"]["Metric"]["Namespace"] != LAMBDA_NAMESPACE
        ]
        assert {m["MetricName"] for m in ours} == {"Requests", "ServerErrors", "Latency"}
        for metric in ours:
            assert metric["Namespace"] == METRICS_NAMESPACE
            dims = tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))
            assert (metric["MetricName"], dims) in emitted, (metric, sorted(emitted))
        lambdas = [
            q["MetricStat"]["Metric"]
            for q in queries
            if q["MetricStat"]["Metric"]["Namespace"] == LAMBDA_NAMESPACE
        ]
        assert {m["MetricName"] for m in lambdas} == {"Invocations", "Errors"}
        for metric in lambdas:
            assert {d["Name"]: d["Value"] for d in metric["Dimensions"]} == {
                "FunctionName": "inferstack-fn",
                "Resource": "inferstack-fn:live",
                "ExecutedVersion": "7",
            }
