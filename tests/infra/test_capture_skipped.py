"""CaptureSkipped on the dashboard and behind a low-severity alarm, for every model that
captures (Lambda and ECS hosts with capture_rate > 0; SageMaker's DataCapture skips nothing).

The alarm is checked against what the real emitter (inferstack.capture) prints under the
serving host's environment from the synthesized template: an alarm whose dimensions differ
from the published ones by a single name or value never fires
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension).
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.names import (
    ENV_CAPTURE_RATE,
    ENV_MODEL_NAME,
    METRIC_CAPTURE_SKIPPED,
    METRICS_NAMESPACE,
)
from infra.config import EcsModel, Environment, LambdaModel
from infra.constructs.monitoring import (
    CAPTURE_PERIOD,
    CAPTURE_SKIPPED_HOURS,
    CAPTURE_SKIPPED_MIN,
    CAPTURE_SKIPPED_PERCENT,
)

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

WIDGET_TITLE = "{}: capture skipped"


def _captures(model: Any) -> bool:
    return isinstance(model, LambdaModel | EcsModel) and model.capture_rate > 0


def _flatten(value: Any) -> str:
    """A template string with CloudFormation intrinsics (Fn::Join, Ref) made plain text."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_flatten(part) for part in parts)
    return "TOKEN"


def _skipped_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Alarm properties by the model its CaptureSkipped metric names."""
    found: dict[str, dict[str, Any]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        for query in props.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("MetricName") == METRIC_CAPTURE_SKIPPED:
                model = {d["Name"]: d["Value"] for d in metric["Dimensions"]}["model"]
                assert model not in found, f"two CaptureSkipped alarms for {model}"
                found[model] = props
    return found


def _skipped_widgets(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Dashboard widgets graphing CaptureSkipped, by model."""
    widgets: dict[str, dict[str, Any]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Dashboard":
            continue
        body = json.loads(_flatten(resource["Properties"]["DashboardBody"]))
        for widget in body["widgets"]:
            for entry in widget.get("properties", {}).get("metrics", []):
                head = [part for part in entry if not isinstance(part, dict)]
                if head[:2] == [METRICS_NAMESPACE, METRIC_CAPTURE_SKIPPED]:
                    widgets[dict(zip(head[2::2], head[3::2], strict=True))["model"]] = widget
    return widgets


def _host_environment(template: dict[str, Any], model: str) -> dict[str, str]:
    """The environment the template gives `model`'s serving function or container."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            candidates = [props.get("Environment", {}).get("Variables", {})]
        elif resource["Type"] == "AWS::ECS::TaskDefinition":
            candidates = [
                {e["Name"]: e["Value"] for e in c.get("Environment", [])}
                for c in props.get("ContainerDefinitions", [])
            ]
        else:
            continue
        for variables in candidates:
            if variables.get(ENV_MODEL_NAME) == model:
                return {k: v for k, v in variables.items() if isinstance(v, str)}
    raise AssertionError(f"no serving host for {model} in the template")


def _emitted_skip(host: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The dimensions of the CaptureSkipped the host's capture prints for an oversized record."""
    from inferstack.capture import capture_from_env
    from inferstack.protocol.types import HttpResponse

    with monkeypatch.context() as patch:
        for name, value in host.items():
            patch.setenv(name, value)
        patch.setenv(ENV_CAPTURE_RATE, "1")  # every request sampled: one offer, one skip
        capture = capture_from_env()
    capture.max_record_bytes = 16
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        written = capture.offer(
            host[ENV_MODEL_NAME], b'{"inputs": []}' * 4, None, HttpResponse(200, b"{}")
        )
    assert written is False and capture.skipped == 1
    (document,) = [json.loads(line) for line in out.getvalue().splitlines() if "_aws" in line]
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == METRICS_NAMESPACE
    assert [m["Name"] for m in directive["Metrics"]] == [METRIC_CAPTURE_SKIPPED]
    (dimensions,) = directive["Dimensions"]
    return {name: str(document[name]) for name in dimensions}


def test_every_capturing_model_has_a_capture_skipped_alarm_on_what_its_host_publishes(
    env: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = json.loads(env.template_path.read_text())
    alarms = _skipped_alarms(template)
    capturing = {m.name for m in env.config.models if _captures(m)}
    assert capturing, "every environment has a model that captures"
    assert set(alarms) == capturing  # none for SageMaker (its DataCapture skips nothing)
    for name in capturing:
        alarm = alarms[name]
        [skipped] = [
            q["MetricStat"]
            for q in alarm["Metrics"]
            if q.get("MetricStat", {}).get("Metric", {}).get("MetricName") == METRIC_CAPTURE_SKIPPED
        ]
        published = _emitted_skip(_host_environment(template, name), monkeypatch)
        alarmed = {d["Name"]: d["Value"] for d in skipped["Metric"]["Dimensions"]}
        assert alarmed == published
        assert skipped["Metric"]["Namespace"] == METRICS_NAMESPACE
        # Sustained: an hourly share over the threshold, hours in a row, never one burst.
        assert skipped["Period"] == CAPTURE_PERIOD.to_seconds() == 3600
        assert alarm["EvaluationPeriods"] == CAPTURE_SKIPPED_HOURS >= 2
        assert alarm.get("DatapointsToAlarm", CAPTURE_SKIPPED_HOURS) == CAPTURE_SKIPPED_HOURS
        assert alarm["Threshold"] == CAPTURE_SKIPPED_PERCENT
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        description = _flatten(alarm["AlarmDescription"])
        assert f"{name} (low severity)" in description and "biased sample" in description
        [expression] = [q["Expression"] for q in alarm["Metrics"] if q.get("ReturnData", True)]
        model = next(m for m in env.config.models if m.name == name)
        assert f"{model.capture_rate:g} *" in expression  # sampled = requests x rate
        # The requests: the API's count of the model's v2 infer route (v1 is never captured).
        [requests] = [
            q["MetricStat"]["Metric"]
            for q in alarm["Metrics"]
            if q.get("MetricStat", {}).get("Metric", {}).get("MetricName") == "Count"
        ]
        route = {d["Name"]: _flatten(d["Value"]) for d in requests["Dimensions"]}
        assert (route["Resource"], route["Method"]) == (f"/v2/models/{name}/infer", "POST")
        assert f">= {CAPTURE_SKIPPED_MIN}" in expression


def test_every_capturing_model_has_a_capture_skipped_widget(env: Synthesized) -> None:
    template = json.loads(env.template_path.read_text())
    widgets = _skipped_widgets(template)
    capturing = {m.name for m in env.config.models if _captures(m)}
    assert set(widgets) == capturing
    for name, widget in widgets.items():
        properties = widget["properties"]
        assert properties["title"].startswith(WIDGET_TITLE.format(name))
        annotations = properties["annotations"]["horizontal"]
        assert [a["value"] for a in annotations] == [CAPTURE_SKIPPED_PERCENT]


def test_a_model_that_captures_nothing_gets_no_capture_skipped_alarm() -> None:
    """capture_rate = 0 (capture off) and a SageMaker model: nothing is skipped to watch."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from infra.constructs.monitoring import Monitoring

    config = Environment.model_validate(
        {
            "name": "test",
            "models": [
                {"name": "off", "target": "lambda", "capture_rate": 0},
                {"name": "on", "target": "lambda", "capture_rate": 0.25},
            ],
        }
    )
    stack = cdk.Stack(
        cdk.App(), "Test", env=cdk.Environment(account="123456789012", region="us-east-1")
    )
    monitoring = Monitoring(stack, "Monitoring", config=config)
    for model in config.models:
        assert isinstance(model, LambdaModel)
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{model.name}"
        function = lambda_.Function.from_function_arn(stack, f"Fn-{model.name}", arn)
        alias = lambda_.Function.from_function_arn(stack, f"Live-{model.name}", f"{arn}:live")
        monitoring.add_lambda_model(model, function, alias)
    template = dict(Template.from_stack(stack).to_json())
    alarms = _skipped_alarms(template)
    assert set(alarms) == {"on"}
    [expression] = [q["Expression"] for q in alarms["on"]["Metrics"] if q.get("ReturnData", True)]
    assert "0.25 *" in expression
    assert set(_skipped_widgets(template)) == {"on"}
