"""SnapStart keep-active: a scheduled health check that keeps each snapstart model's live version
Active (a version invoked by nobody for 14 days goes Inactive and answers
SnapStartNotReadyException: https://docs.aws.amazon.com/lambda/latest/dg/snapstart-troubleshooting.html).

The templates hold one EventBridge Scheduler schedule per snapstart model and none for the
others, aimed at the alias `live`, run by a role that may invoke that alias and nothing else,
with retries and a dead-letter queue. The schedule's Input, taken from the synthesized template,
is fed to the real function (functions/inference/handler.py with the demo model): it answers 200,
is never captured for the drift check and is not counted as any model's traffic.
cfn-lint and cdk-nag run over every environment in test_checks.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.config import ColdStart, LambdaModel, load_environment
from tests.functional.conftest import (
    EXAMPLE_REQUEST,
    HTTP,
    demo_env,
    http_event,
    import_function_module,
    invoke,
    load_event,
)

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

# Powertools keeps one metric set per process; the function imported here sets the
# "environment" default dimension again.
pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'environment' has already been added")

SCHEDULE = "AWS::Scheduler::Schedule"
# What Scheduler puts in place of <aws.scheduler.execution-id> (AWS's example value,
# https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-context-attributes.html).
EXECUTION_ID = "d32c5kddcf5bb8c3"
INACTIVE_AFTER_DAYS = 14
_RATE = re.compile(r"rate\((\d+) (minute|hour|day)s?\)")
_DAYS = {"minute": 1 / 1440, "hour": 1 / 24, "day": 1}


def _template(env: Synthesized) -> dict[str, Any]:
    template: dict[str, Any] = json.loads(env.template_path.read_text())
    return template


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in template["Resources"].items() if r["Type"] == kind}


def _alias_models(template: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Alias logical id -> (model name, alias name), through the alias's function."""
    functions = {
        logical_id: props.get("Environment", {}).get("Variables", {}).get("INFERSTACK_MODEL_NAME")
        for logical_id, props in _resources(template, "AWS::Lambda::Function").items()
    }
    return {
        logical_id: (functions[props["FunctionName"]["Ref"]], props["Name"])
        for logical_id, props in _resources(template, "AWS::Lambda::Alias").items()
    }


def _keep_active(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Model name -> the schedule that invokes its alias (other schedules: drift checks)."""
    aliases = _alias_models(template)
    found: dict[str, dict[str, Any]] = {}
    for props in _resources(template, SCHEDULE).values():
        target = props["Target"]["Arn"]
        if isinstance(target, dict) and target.get("Ref") in aliases:
            model, alias = aliases[target["Ref"]]
            assert alias == "live", props
            assert model not in found, f"two keep-active schedules for {model}"
            found[model] = props
    return found


def _snapstart_models(config: Any) -> set[str]:
    return {
        m.name
        for m in config.models
        if isinstance(m, LambdaModel) and m.cold_start is ColdStart.SNAPSTART
    }


def _policy_statements(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every statement of every policy attached to the role (inline or AWS::IAM::Policy)."""
    role = template["Resources"][role_id]["Properties"]
    assert not role.get("ManagedPolicyArns"), role
    statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for props in _resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in props["Roles"]:
            statements += props["PolicyDocument"]["Statement"]
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _check_schedule(template: dict[str, Any], model: str, schedule: dict[str, Any]) -> None:
    """Aimed at `model`'s alias `live`, often enough, with retries, a dead-letter queue and a
    role that can invoke that alias only."""
    target = schedule["Target"]
    alias_id = target["Arn"]["Ref"]
    assert _alias_models(template)[alias_id] == (model, "live")
    assert schedule["State"] == "ENABLED"
    found = _RATE.fullmatch(schedule["ScheduleExpression"])
    assert found, schedule["ScheduleExpression"]
    every_days = int(found.group(1)) * _DAYS[found.group(2)]
    window_days = schedule["FlexibleTimeWindow"].get("MaximumWindowInMinutes", 0) / 1440
    # Two runs in a row may fail (their events end in the queue) and the version still never
    # goes 14 days without an invocation.
    assert 2 * (every_days + window_days) < INACTIVE_AFTER_DAYS, schedule
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    queue_id = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert template["Resources"][queue_id]["Type"] == "AWS::SQS::Queue"

    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    trust = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    invoke_resources = []
    for statement in _policy_statements(template, role_id):
        actions = _as_list(statement["Action"])
        if any(a.startswith("lambda:") for a in actions):
            assert actions == ["lambda:InvokeFunction"], statement
            invoke_resources += _as_list(statement["Resource"])
        else:  # the dead-letter queue, and nothing else
            assert all(a.startswith("sqs:") for a in actions), statement
            assert _as_list(statement["Resource"]) == [{"Fn::GetAtt": [queue_id, "Arn"]}]
    # The alias's ARN (Ref of AWS::Lambda::Alias): not the function, not function:*.
    assert invoke_resources == [{"Ref": alias_id}]


# ------------------------------------------------------------------ templates


def test_a_keep_active_schedule_for_each_snapstart_model_only(env: Synthesized) -> None:
    template = _template(env)
    schedules = _keep_active(template)
    snapstart = _snapstart_models(env.config)
    assert snapstart == ({"wine"} if env.config.name == "dev" else set())
    assert set(schedules) == snapstart
    for model, schedule in schedules.items():
        _check_schedule(template, model, schedule)


def test_a_custom_environment_keeps_only_its_snapstart_model_active(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import add_stack, feature_flags

    (tmp_path / "lab.toml").write_text(
        '[[models]]\nname = "fast"\ntarget = "lambda"\narchitecture = "x86_64"\n'
        'cold_start = "snapstart"\n\n'
        '[[models]]\nname = "plain"\ntarget = "lambda"\n\n'
        '[[models]]\nname = "warm"\ntarget = "lambda"\nprovisioned_concurrency = 1\n'
    )
    config = load_environment("lab", tmp_path)
    app = cdk.App(outdir=str(tmp_path / "out"), context=feature_flags())
    template = dict(Template.from_stack(add_stack(app, config)).to_json())
    schedules = _keep_active(template)
    assert set(schedules) == {"fast"}
    _check_schedule(template, "fast", schedules["fast"])


# ------------------------------------------------------------------ the real handler


def _keys(value: Any, prefix: str = "") -> dict[str, type]:
    """Every JSON path of a document -> the type at it (headers: a map of any names)."""
    if not isinstance(value, dict) or prefix == "headers":
        return {prefix: type(value)}
    found: dict[str, type] = {prefix: dict} if prefix else {}
    for key, item in value.items():
        found.update(_keys(item, f"{prefix}.{key}" if prefix else key))
    return found


def _schedule_input(env: Synthesized) -> dict[str, Any]:
    (schedule,) = _keep_active(_template(env)).values()
    text = schedule["Target"]["Input"]
    assert isinstance(text, str), "the Input must be plain JSON, with no deploy-time token"
    # Scheduler replaces its context attributes at each attempt.
    event: dict[str, Any] = json.loads(text.replace("<aws.scheduler.execution-id>", EXECUTION_ID))
    return event


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


def test_the_schedules_input_is_an_http_api_event_the_real_handler_answers(
    synthesized: dict[str, Synthesized],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    metrics_on: None,
) -> None:
    event = _schedule_input(synthesized["dev"])
    # The shape of AWS's own HTTP API (payload 2.0) sample event: no field it lacks, none
    # of another type.
    sample = _keys(load_event(HTTP))
    assert {path: sample.get(path) for path in _keys(event)} == _keys(event)
    assert all(isinstance(v, str) for v in event["headers"].values())
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/v2/health/ready"
    assert event["requestContext"]["requestId"] == EXECUTION_ID

    # The deployed function's configuration, every request captured for the drift check.
    function = import_function_module(
        monkeypatch, demo_env(INFERSTACK_ENV="keep-active-test", INFERSTACK_CAPTURE_RATE="1")
    )
    capsys.readouterr()
    reply = invoke(function.handler, event)
    assert reply.status == 200, reply.text
    assert reply.json() == {"ready": True}
    # Answered as the same request through API Gateway (AWS's sample event) is answered.
    same = invoke(function.handler, http_event(HTTP, "GET", "/v2/health/ready"))
    assert (same.status, same.json()) == (reply.status, reply.json())
    out = capsys.readouterr().out

    # Not an inference: no drift-capture record, and no metric under any model's dimensions
    # (the per-model graphs and alarms read model + model version).
    assert '"captureData"' not in out
    documents = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    assert documents, "the function emits request metrics: the check below must see them"
    # The ping is the first request of its environment: the start is counted with it, under
    # the same model-less dimensions (keep_active.py says so).
    assert documents[0].get("ColdStart") == [1.0], documents[0]
    for document in documents:
        assert "model" not in document, document
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert all("model" not in dims for dims in directive["Dimensions"]), document

    # The same function and the same observation do see an inference: captured, per model.
    infer = invoke(
        function.handler,
        http_event(HTTP, "POST", "/v2/models/wine/infer", body=EXAMPLE_REQUEST.read_text()),
    )
    assert infer.status == 200, infer.text
    out = capsys.readouterr().out
    assert '"captureData"' in out
    assert any(
        json.loads(line).get("model") == "wine" for line in out.splitlines() if '"_aws"' in line
    )
