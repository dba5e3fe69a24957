"""The promoter may read a published version's state (a SnapStart snapshot's readiness), and
the rollout state machine's Check loop is what waits for the snapshot: its synthesized
definition walked by tests/rollout_asl.py, the promoter handler on moto with Lambda's SnapStart
answers (tests/functional/test_lambda_snapstart_rollout.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.functional.conftest import FakeContext, isolated_cache  # noqa: F401 (fixture)
from tests.functional.test_lambda_snapstart_rollout import (  # noqa: F401 (the aws fixture)
    INIT_TIMEOUT,
    World,
    aws,
    retrained,
)
from tests.infra.test_promoter_handler import import_promoter_handler, machine  # noqa: F401
from tests.infra.test_releases_infra import as_list, lambda_ids, promoter_statements
from tests.rollout_asl import Execution

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.infra.conftest import Synthesized


def test_the_promoter_may_read_the_state_of_each_published_version(env: Synthesized) -> None:
    """GetFunctionConfiguration with a version as Qualifier is authorized only by a statement
    on a qualified ARN (lambda-api-permissions-ref): `<function ARN>:*`, beside the
    unqualified ARN for $LATEST."""
    readable = [
        r
        for s in promoter_statements(env)
        if "lambda:GetFunctionConfiguration" in as_list(s["Action"]) and s["Effect"] == "Allow"
        for r in as_list(s["Resource"])
    ]
    for name, (function_id, _) in lambda_ids(env).items():
        arn = {"Fn::GetAtt": [function_id, "Arn"]}
        assert {"Fn::Join": ["", [arn, ":*"]]} in readable, name
        assert arn in readable, name
    assert "*" not in readable


def execution(definition: dict[str, Any], monkeypatch: pytest.MonkeyPatch, world: World,
              on_wait: Any) -> Execution:  # fmt: skip
    module = import_promoter_handler(monkeypatch, {})
    return Execution(
        definition,
        lambda payload: module.dispatch(world.promoter, payload, FakeContext()),
        on_wait=on_wait,
    )


def test_the_check_loop_waits_for_the_snapshot_then_the_release_goes_live(
    machine: dict[str, Any],  # noqa: F811 (fixture)
    aws: dict[str, Any],  # noqa: F811 (fixture)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Start publishes the version (Pending); each WaitForRollout (30 s in AWS) then Check
    reads its state; once Lambda has the snapshot, Check smoke-tests it and moves the alias."""
    world = World(aws)
    looks: list[str] = []

    def meanwhile(state: str) -> None:
        looks.append(
            world.lambda_.get_alias(FunctionName="inferstack-dev-wine", Name="live")[
                "FunctionVersion"
            ]
        )
        if len(looks) == 3:  # Lambda finishes the snapshot during the third wait
            (version,) = world.pending()
            world.snapstart.ready(version)

    result = execution(machine, monkeypatch, world, meanwhile).run(
        world.upload("v2.onnx", retrained(tmp_path))
    )
    assert result.status == "SUCCEEDED", result
    assert (result.output["release"], result.output["result"]) == ("2", "live")
    version = result.output["state"]["version"]
    assert looks == [world.live_version] * 3  # the alias stayed while the version was Pending
    assert (
        world.lambda_.get_alias(FunctionName="inferstack-dev-wine", Name="live")["FunctionVersion"]
        == version
    )
    assert world.store.live("wine").release == "2"  # type: ignore[union-attr]
    assert [state for state, _ in world.history("2")] == [
        "validated", "rolling_out", "rolling_out", "live"
    ]  # fmt: skip


def test_a_failed_snapshot_ends_the_execution_as_a_failed_rollout(
    machine: dict[str, Any],  # noqa: F811 (fixture)
    aws: dict[str, Any],  # noqa: F811 (fixture)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    world = World(aws)

    def meanwhile(state: str) -> None:
        for version in world.pending():
            world.snapstart.fail(version, *INIT_TIMEOUT)

    result = execution(machine, monkeypatch, world, meanwhile).run(
        world.upload("v2.onnx", retrained(tmp_path))
    )
    assert (result.status, result.error) == ("FAILED", "RolloutFailed")
    version = result.output["state"]["version"]
    assert result.cause == (
        f"snapshot of version {version} failed: {': '.join(INIT_TIMEOUT)}; alias live was not moved"
    )
    assert world.history("2")[-1] == ("failed", result.cause)
    assert world.store.live("wine").release == "1"  # type: ignore[union-attr]
    assert (
        world.lambda_.get_alias(FunctionName="inferstack-dev-wine", Name="live")["FunctionVersion"]
        == world.live_version
    )
