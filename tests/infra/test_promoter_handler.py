"""The promoter handler, driven as the rollout state machine drives it, against moto (S3 and
Lambda, real boto3 clients).

Step Functions does not run here: each execution follows the machine's synthesized
definition state by state (tests/rollout_asl.py), calling functions/model_promoter/handler.py
for every Task as the lambda:invoke integration would, so the transitions, retries and
catches are the deployed ones. Seams (shared/AWS-TESTING.md): the smoke invoke of a
published version runs the real inference handler in-process (aws_doubles.lambda_invoke),
given to the handler's own Promoter through build_promoter(rollout_for=...).
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from inferstack.release.rollout.lambda_target import LambdaRollout
from tests.functional import bad_models
from tests.functional.aws_doubles import lambda_invoke, no_provisioned_concurrency
from tests.functional.conftest import DEMO_MODEL, REPO_ROOT, FakeContext
from tests.functional.deployed import (
    inference_function,
    served_version,
    upload_event,
    use_fake_aws,
    versioned_bucket,
)
from tests.rollout_asl import Execution, definition

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUCKET = "acme-models"
FUNCTION = "inferstack-dev-wine"
HANDLER_FILE = REPO_ROOT / "functions" / "model_promoter" / "handler.py"
TARGETS = {"wine": {"target": "lambda", "function": FUNCTION, "alias": "live"}}


@pytest.fixture(scope="module")
def machine() -> dict[str, Any]:
    """The rollout state machine's definition, synthesized by its construct."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template

    from infra.config import load_environment
    from infra.constructs.rollout_machine import RolloutMachine

    stack = cdk.Stack(cdk.App(), "Rollout")
    function = lambda_.Function(
        stack,
        "Promoter",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="index.handler",
        code=lambda_.Code.from_inline("def handler(event, context): pass"),
    )
    built = RolloutMachine(stack, "Rollout", config=load_environment("dev"), function=function)
    template = Template.from_stack(stack).to_json()
    resource = built.state_machine.node.default_child
    assert isinstance(resource, cdk.CfnElement)
    return definition(template, stack.get_logical_id(resource))


def import_promoter_handler(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """functions/model_promoter/handler.py, imported afresh as a new execution environment
    does (as conftest.import_function_module does for the inference function)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(
        f"inferstack_promoter_handler_{uuid.uuid4().hex}", HANDLER_FILE
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class World:
    """One environment: the versioned bucket, the wine function with its `live` alias, and
    the promoter handler as deployed (MODEL_BUCKET, INFERSTACK_TARGETS)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.s3 = boto3.client("s3")
        self.lambda_ = boto3.client("lambda")
        invoke = lambda_invoke(self.lambda_)
        no_provisioned_concurrency(self.lambda_)

        def rollout_for(model: str, target: dict[str, Any], smoke: str) -> LambdaRollout:
            return LambdaRollout(
                self.lambda_,
                function=target["function"],
                alias=target["alias"],
                smoke_body=smoke,
                invoke=invoke,
            )

        # The handler's own Promoter, with the smoke invoke moto cannot run.
        self.promoter = module.build_promoter(
            {"MODEL_BUCKET": BUCKET, "INFERSTACK_TARGETS": json.dumps(TARGETS)},
            rollout_for=rollout_for,
        )
        self.store = self.promoter.store

    def step(self, payload: dict[str, Any]) -> Any:
        """The function invoked by a Task (the promoter with the smoke-invoke seam)."""
        return self.module.dispatch(self.promoter, payload, FakeContext())

    def deployed(self, payload: dict[str, Any]) -> Any:
        """The function's entry point exactly as deployed (its environment's Promoter)."""
        return self.module.handler(payload, FakeContext())

    def upload(self, path: Path, name: str = "model.onnx") -> dict[str, Any]:
        """Put the file under uploads/wine/; the S3 event AWS sends (its documented sample)."""
        return upload_event(self.s3, BUCKET, f"uploads/wine/{name}", path.read_bytes())

    def served_version(self) -> str:
        """model_version of an inference through the alias, as API Gateway calls it."""
        return served_version(self.lambda_, FUNCTION)

    def states(self, release: str) -> list[str]:
        return [entry.state for entry in self.store.history("wine", release)]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    monkeypatch.setenv("INFERSTACK_CACHE_DIR", str(tmp_path / "model-cache"))
    use_fake_aws(monkeypatch)
    with mock_aws():
        versioned_bucket(boto3.client("s3"), BUCKET)
        inference_function(boto3.client("lambda"), function=FUNCTION, bucket=BUCKET)
        module = import_promoter_handler(
            monkeypatch,
            {
                "MODEL_BUCKET": BUCKET,
                "INFERSTACK_TARGETS": json.dumps(TARGETS),
                "POWERTOOLS_METRICS_NAMESPACE": "InferStack",
                "POWERTOOLS_SERVICE_NAME": "inferstack",
            },
        )
        yield World(module)


def test_an_upload_runs_prepare_start_finish_and_goes_live(
    machine: dict[str, Any], world: World
) -> None:
    execution = Execution(machine, world.step)
    result = execution.run(world.upload(DEMO_MODEL))

    assert result.status == "SUCCEEDED", result
    # A Lambda target finishes in Start: no wait, no check.
    assert execution.visited == ["Prepare", "Outcome", "Start", "Phase", "Finish", "Result", "Live"]
    assert (result.output["release"], result.output["result"]) == ("1", "live")
    assert world.store.live("wine").release == "1"
    assert world.states("1") == ["validated", "rolling_out", "live"]
    assert world.served_version() == "1"


def test_a_duplicate_upload_event_succeeds_with_nothing_to_roll_out(
    machine: dict[str, Any], world: World
) -> None:
    event = world.upload(DEMO_MODEL)
    assert Execution(machine, world.step).run(event).status == "SUCCEEDED"

    again = Execution(machine, world.step)
    result = again.run(event)  # S3 delivers events at least once
    assert result.status == "SUCCEEDED"
    assert again.visited == ["Prepare", "Outcome", "NothingToRollOut"]
    assert result.output["outcome"] == "duplicate"
    assert world.states("1") == ["validated", "rolling_out", "live"]


def test_a_rejected_upload_fails_the_execution_as_rejected_with_its_reason(
    machine: dict[str, Any], world: World, tmp_path: Path
) -> None:
    execution = Execution(machine, world.deployed)  # the handler as deployed
    result = execution.run(world.upload(bad_models.text_file(tmp_path / "m.onnx")))

    assert (result.status, result.error) == ("FAILED", "Rejected")
    assert execution.visited == ["Prepare", "Outcome", "Rejected"]
    assert result.cause == result.output["reason"] and result.cause
    assert world.store.live("wine") is None
    assert world.lambda_.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"] == "1"


def test_start_raises_release_conflict_by_name_while_the_slot_is_held(
    machine: dict[str, Any], world: World
) -> None:
    prepared = world.step({"step": "prepare", "input": world.upload(DEMO_MODEL)})
    other = world.store.begin_rollout("wine", "7", "promote", stale_after_s=3600)

    with pytest.raises(Exception) as raised:
        world.deployed({"step": "start", "input": prepared})
    # The Lambda runtime reports the class name as errorType: the error Start retries on.
    assert type(raised.value).__name__ == "ReleaseConflict"
    assert ["ReleaseConflict"] in [r["ErrorEquals"] for r in machine["States"]["Start"]["Retry"]]
    assert "release 7" in str(raised.value)
    assert world.states("1") == ["validated"]  # nothing started
    assert world.store.live("wine") is None

    # The machine retries Start; once the other rollout frees the slot, this one goes live.
    freed: list[str] = []

    def other_rollout_ends(state: str, error: str) -> None:
        world.store.end_rollout(other, "succeeded")
        freed.append(f"{state}:{error}")

    execution = Execution(machine, world.step, on_retry=other_rollout_ends)
    result = execution.run({"action": "promote", "model": "wine", "release": "1", "by": "ana"})
    assert result.status == "SUCCEEDED", result
    assert freed == ["Start:ReleaseConflict"]
    assert execution.visited == ["Prepare", "Outcome", "Start", "Phase", "Finish", "Result", "Live"]
    assert world.store.live("wine").release == "1"
    assert world.served_version() == "1"


def test_a_check_that_keeps_failing_ends_failed_with_the_slot_freed(
    machine: dict[str, Any], world: World
) -> None:
    """What the Catch on Check hands Finish: the step (with its slot) and the error."""
    prepared = world.step({"step": "prepare", "input": world.upload(DEMO_MODEL)})
    started = world.step({"step": "start", "input": prepared})
    # As a SageMaker or ECS rollout stands while the target moves.
    in_progress = {**started, "phase": "in_progress"}
    (catch,) = machine["States"]["Check"]["Catch"]
    error = {"errorMessage": "DescribeEndpoint: AccessDenied", "errorType": "ClientError"}
    caught = {
        **in_progress,
        catch["ResultPath"][2:]: {"Error": "ClientError", "Cause": json.dumps(error)},
    }
    assert catch["Next"] == "Finish"

    finished = world.deployed({"step": "finish", "input": caught})
    assert finished["result"] == "failed"
    assert "could not be checked: ClientError: DescribeEndpoint: AccessDenied" in finished["reason"]
    assert world.states("1")[-1] == "failed"
    assert world.store.live("wine") is None  # the pointer never moved
    # The slot is free: the next rollout of the model starts.
    world.store.begin_rollout("wine", "1", "promote", stale_after_s=3600)


def test_the_cli_requests_and_bad_steps(machine: dict[str, Any], world: World) -> None:
    Execution(machine, world.step).run(world.upload(DEMO_MODEL))

    result = Execution(machine, world.deployed).run(
        {"action": "rollback", "model": "wine", "to": None, "by": "ana"}
    )
    # No release before 1: the execution fails on Prepare with the promoter's own error.
    assert (result.status, result.error) == ("FAILED", "ReleaseNotFound"), result
    assert "no release" in str(result.cause) or "roll back" in str(result.cause), result
    for bad in (
        {"action": "promote", "model": "wine"},
        {"action": "deploy", "model": "wine"},
        {"step": "launch", "input": {}},
    ):
        payload = bad if "step" in bad else {"step": "prepare", "input": bad}
        with pytest.raises(ValueError) as raised:
            world.deployed(payload)
        assert type(raised.value).__name__ == "UnsupportedEvent"
