"""The rollout state machine as synthesized: its states and transitions, retries, the
wait/check loop, timeout, logging and tracing; the upload rule starts it; only it may invoke
the promoter; its ARN is published for the CLI. cfn-lint and cdk-nag: test_checks.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferstack.names import SSM_ROLLOUT_STATE_MACHINE, ssm_parameter_name
from inferstack.release.exceptions import ReleaseConflict
from inferstack.release.promote import CLAIM_STALE_S, ROLLOUT_STALE_S
from tests.rollout_asl import definition

if TYPE_CHECKING:
    from infra.constructs.promoter import ModelPromoter
    from tests.infra.conftest import Synthesized

SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def promoter_of(env: Synthesized) -> ModelPromoter:
    promoter: ModelPromoter = env.stack.node.find_child("Promoter")  # type: ignore[assignment]
    return promoter


def logical_id(env: Synthesized, construct: Any) -> str:
    return str(env.stack.get_logical_id(construct.node.default_child))


def machine_id(env: Synthesized) -> str:
    return logical_id(env, promoter_of(env).state_machine)


def machine(env: Synthesized) -> dict[str, Any]:
    return definition(env.template.to_json(), machine_id(env))


def transitions(states: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(state, how, next state) for every way out of every state."""
    found: set[tuple[str, str, str]] = set()
    for name, state in states.items():
        if "Next" in state:
            found.add((name, "next", state["Next"]))
        for choice in state.get("Choices", []):
            found.add((name, _condition(choice), choice["Next"]))
        if "Default" in state:
            found.add((name, "otherwise", state["Default"]))
        for catch in state.get("Catch", []):
            found.add((name, "catch " + ",".join(catch["ErrorEquals"]), catch["Next"]))
    return found


def _condition(choice: dict[str, Any]) -> str:
    if "Or" in choice:
        return " or ".join(_condition(c) for c in choice["Or"])
    return f"{choice['Variable']}=={choice['StringEquals']}"


def test_states_and_transitions(env: Synthesized) -> None:
    states = machine(env)["States"]
    assert machine(env)["StartAt"] == "Prepare"
    assert transitions(states) == {
        ("Prepare", "next", "Outcome"),
        ("Outcome", "$.outcome==release", "Start"),
        ("Outcome", "$.outcome==rejected", "Rejected"),
        (
            "Outcome",
            "$.outcome==duplicate or $.outcome==unchanged or $.outcome==superseded "
            "or $.outcome==ignored",
            "NothingToRollOut",
        ),
        ("Outcome", "otherwise", "UnexpectedOutcome"),
        ("Start", "next", "Phase"),
        ("Phase", "$.phase==in_progress", "WaitForRollout"),
        ("Phase", "otherwise", "Finish"),
        ("WaitForRollout", "next", "Check"),
        ("Check", "next", "Phase"),
        ("Check", "catch States.ALL", "Finish"),
        ("Finish", "next", "Result"),
        ("Result", "$.result==live", "Live"),
        ("Result", "otherwise", "RolloutFailed"),
    }
    kinds = {name: state["Type"] for name, state in states.items()}
    assert kinds == {
        **dict.fromkeys(["Prepare", "Start", "Check", "Finish"], "Task"),
        **dict.fromkeys(["Outcome", "Phase", "Result"], "Choice"),
        "WaitForRollout": "Wait",
        **dict.fromkeys(["NothingToRollOut", "Live"], "Succeed"),
        **dict.fromkeys(["Rejected", "RolloutFailed", "UnexpectedOutcome"], "Fail"),
    }
    # The console shows why: the step's reason is the failure's cause.
    assert states["Rejected"] == {"Type": "Fail", "Error": "Rejected", "CausePath": "$.reason"}
    assert states["RolloutFailed"] == {
        "Type": "Fail",
        "Error": "RolloutFailed",
        "CausePath": "$.reason",
    }
    assert states["WaitForRollout"]["Seconds"] == 30


def test_every_task_invokes_the_promoter_with_its_step(env: Synthesized) -> None:
    states = machine(env)["States"]
    function = f"<{logical_id(env, promoter_of(env).function)}.Arn>"
    for name in ("Prepare", "Start", "Check", "Finish"):
        state = states[name]
        assert state["Resource"].endswith(":states:::lambda:invoke"), name
        assert state["Parameters"] == {
            "FunctionName": function,
            "Payload": {
                "step": name.lower(),
                "input.$": "$",
                "execution.$": "$$.Execution.Id",
            },
        }
        # Each state's output is the promoter's step dict, nothing else.
        assert state["OutputPath"] == "$.Payload"


def test_retries(env: Synthesized) -> None:
    states = machine(env)["States"]
    for name in ("Prepare", "Start", "Check", "Finish"):
        first = states[name]["Retry"][0]
        assert set(first["ErrorEquals"]) >= SERVICE_ERRORS, name
        assert first["BackoffRate"] > 1 and first["MaxAttempts"] >= 3, name
    # Start waits for the model's rollout slot: ReleaseConflict (the exception's class name,
    # which the Lambda runtime reports as the error name) every minute for about two hours.
    start = states["Start"]["Retry"]
    assert [r["ErrorEquals"] for r in start[1:]] == [[ReleaseConflict.__name__]]
    conflict = start[1]
    assert (conflict["IntervalSeconds"], conflict.get("BackoffRate", 2)) == (60, 1)
    assert 2 * 3600 <= conflict["IntervalSeconds"] * conflict["MaxAttempts"] < ROLLOUT_STALE_S
    # Start is not idempotent (it takes the slot): nothing else retried, nothing caught.
    assert "Catch" not in states["Start"]
    # Prepare waits out a duplicate event's claim until it settles or goes stale.
    (claim,) = states["Prepare"]["Retry"][1:]
    assert claim["ErrorEquals"] == [ReleaseConflict.__name__]
    assert claim["IntervalSeconds"] * claim["MaxAttempts"] > CLAIM_STALE_S
    # Check only reads and Finish is safe to repeat: both retry any task failure; a Check
    # that keeps failing hands its input (the step with its slot) to Finish.
    for name in ("Check", "Finish"):
        assert states[name]["Retry"][1]["ErrorEquals"] == ["States.TaskFailed"], name
    (catch,) = states["Check"]["Catch"]
    assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.check_error", "Next": "Finish"}
    assert "Catch" not in states["Finish"] and "Catch" not in states["Prepare"]


def test_standard_workflow_with_timeout_logging_and_tracing(env: Synthesized) -> None:
    resource = env.template.to_json()["Resources"][machine_id(env)]["Properties"]
    assert resource["StateMachineType"] == "STANDARD"
    assert resource["StateMachineName"] == f"inferstack-{env.config.name}-rollout"
    # An execution never outlives the rollout slot it took (stale after ROLLOUT_STALE_S).
    assert machine(env)["TimeoutSeconds"] == ROLLOUT_STALE_S == 3 * 3600
    assert resource["TracingConfiguration"] == {"Enabled": True}
    logging = resource["LoggingConfiguration"]
    assert (logging["Level"], logging["IncludeExecutionData"]) == ("ALL", False)
    (destination,) = logging["Destinations"]
    group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    group = env.template.to_json()["Resources"][group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["LogGroupName"].startswith("/aws/vendedlogs/states/")
    assert group["Properties"]["RetentionInDays"] == env.config.log_retention_days


def test_upload_rule_starts_the_state_machine_with_its_dead_letter_queue(
    env: Synthesized,
) -> None:
    resources = env.template.to_json()["Resources"]
    promoter = promoter_of(env)
    rule = resources[logical_id(env, promoter.rule)]["Properties"]
    assert rule["EventPattern"]["detail"]["object"] == {"key": [{"prefix": "uploads/"}]}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Ref": machine_id(env)}
    assert target["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": [logical_id(env, promoter.dead_letter_queue), "Arn"]}
    }
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert "Input" not in target and "InputTransformer" not in target  # the whole event
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    assert policy_statements(resources, role_id) == [
        {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": machine_id(env)}}
    ]


def test_only_the_state_machine_may_invoke_the_promoter(env: Synthesized) -> None:
    resources = env.template.to_json()["Resources"]
    promoter = promoter_of(env)
    function_id = logical_id(env, promoter.function)
    machine_role = logical_id(env, promoter.state_machine.role)
    invokers = {
        role
        for policy in resources.values()
        if policy["Type"] == "AWS::IAM::Policy"
        for role in _roles(policy)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in _list(statement["Action"])
        and function_id in json.dumps(statement["Resource"])
    }
    assert invokers == {machine_role}
    # No resource policy on the promoter (no rule or other service invokes it), and no
    # asynchronous invocation settings: nothing invokes it asynchronously any more.
    for resource in resources.values():
        if resource["Type"] in ("AWS::Lambda::Permission", "AWS::Lambda::EventInvokeConfig"):
            assert function_id not in json.dumps(resource["Properties"]), resource
    assert "DeadLetterConfig" not in resources[function_id]["Properties"]
    # The machine's role gains nothing else: the invoke, log delivery and X-Ray.
    actions = {
        action
        for statement in policy_statements(resources, machine_role)
        for action in _list(statement["Action"])
    }
    assert {a for a in actions if not a.startswith(("logs:", "xray:"))} == {"lambda:InvokeFunction"}
    assert {a for a in actions if a.startswith("logs:")} <= {
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:DescribeLogGroups",
        "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:UpdateLogDelivery",
    }


def test_state_machine_arn_is_an_output_and_in_ssm(env: Synthesized) -> None:
    arn = {"Ref": machine_id(env)}
    env.template.has_output("RolloutStateMachineArn", {"Value": arn})
    env.template.has_resource_properties(
        "AWS::SSM::Parameter",
        {
            "Name": ssm_parameter_name(env.config.name, SSM_ROLLOUT_STATE_MACHINE),
            "Value": arn,
            "Type": "String",
        },
    )
    assert ssm_parameter_name("prod", SSM_ROLLOUT_STATE_MACHINE) == (
        "/inferstack/prod/rollout-state-machine"
    )


def policy_statements(resources: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources.values()
        if policy["Type"] == "AWS::IAM::Policy" and role_id in _roles(policy)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _roles(policy: dict[str, Any]) -> list[str]:
    return [r["Ref"] for r in policy["Properties"].get("Roles", []) if "Ref" in r]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_failed_rollouts_and_undelivered_uploads_alarm(env: Synthesized) -> None:
    """What no PromotionFailures line reports: an execution that failed, timed out or was
    aborted, and upload events waiting in the dead-letter queue."""
    from aws_cdk.assertions import Match

    env.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Metrics": Match.array_with(
                [Match.object_like({"Expression": "failed + timedout + aborted"})]
            ),
            "Threshold": 1,
            "AlarmActions": Match.any_value(),
        },
    )
    env.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Namespace": "AWS/SQS",
            "Threshold": 1,
            "AlarmActions": Match.any_value(),
        },
    )
