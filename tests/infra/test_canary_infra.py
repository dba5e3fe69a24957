"""The stack gives each Lambda canary what it needs: its settings in the promoter's target
record (INFERSTACK_TARGETS), the one metric read it makes, and a bake that ends inside the
rollout's execution (read from the three synthesized environments, conftest.py); and the
rollout state machine's Check loop is what bakes it (its synthesized definition walked by
tests/rollout_asl.py, the promoter handler on moto as in test_promoter_handler.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from infra.config import Target
from tests.functional.conftest import FakeContext, isolated_cache  # noqa: F401 (fixture)
from tests.functional.test_lambda_canary import (  # noqa: F401 (the aws fixture)
    World,
    aws,
    first_release_live,
    put_lambda_metrics,
    retrained,
)
from tests.infra.test_promoter_handler import import_promoter_handler, machine  # noqa: F401
from tests.infra.test_releases_infra import (
    MODEL_ENV,
    as_list,
    promoter,
    promoter_statements,
    rendered,
    resources,
)
from tests.rollout_asl import Execution

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.infra.conftest import Synthesized


def canaries(env: Synthesized) -> dict[str, dict[str, object]]:
    """Model name -> its canary settings, from the configuration."""
    found = {}
    for model in env.config.models_on(Target.LAMBDA):
        canary = getattr(model, "canary", None)
        if canary is not None:
            found[model.name] = canary.model_dump()
    return found


def test_the_target_record_carries_each_models_canary(env: Synthesized) -> None:
    from inferstack.release.rollout.canary import Canary

    _, props = promoter(env)
    targets = json.loads(rendered(props["Environment"]["Variables"]["INFERSTACK_TARGETS"]))
    carried = {name: entry["canary"] for name, entry in targets.items() if "canary" in entry}
    assert carried == canaries(env)
    if env.config.name == "prod":
        assert carried, "prod's wine has a canary"
    for name, record in carried.items():
        # What the promoter reads back is what the configuration says.
        assert Canary.from_target(record) == Canary(**canaries(env)[name]), name  # type: ignore[arg-type]


def test_the_promoter_reads_metrics_only_for_a_canary(env: Synthesized) -> None:
    readers = [
        s for s in promoter_statements(env) if "cloudwatch:GetMetricData" in as_list(s["Action"])
    ]
    if not canaries(env):
        assert readers == []
        return
    # GetMetricData has no resource-level permissions: "*" (the CDK merges it with the other
    # actions granted on "*", minimizePolicies).
    (statement,) = readers
    assert (statement["Effect"], statement["Resource"]) == ("Allow", "*")
    assert "Condition" not in statement


def test_the_check_loop_bakes_the_canary_then_the_release_goes_live(
    machine: dict[str, Any],  # noqa: F811 (fixture)
    aws: None,  # noqa: F811 (fixture)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Start puts the canary on the alias; each WaitForRollout (30 s in AWS; a minute of the
    test's clock here) brings traffic to it; Check bakes until the verdict, then moves the
    alias; Finish makes the release live."""
    module = import_promoter_handler(monkeypatch, {})
    world = World(weight_percent=20, bake_minutes=10, max_error_rate=0.05)
    previous = first_release_live(world)
    seen: list[tuple[str, dict[str, float]]] = []

    def meanwhile(state: str) -> None:
        version, weights = world.alias()
        seen.append((version, weights))
        for canary in weights:
            world.serve(canary, 2)
            put_lambda_metrics(world.cloudwatch, canary, invocations=2, errors=0)
        world.later(1)

    execution = Execution(
        machine,
        lambda payload: module.dispatch(world.promoter, payload, FakeContext()),
        on_wait=meanwhile,
    )
    event = world.upload(retrained(tmp_path), "v2.onnx")
    result = execution.run(event)

    assert result.status == "SUCCEEDED", result
    assert (result.output["release"], result.output["result"]) == ("2", "live")
    canary = result.output["state"]["version"]
    # 10 minutes of bake and 2 for the last metrics, a look a minute: 12 Checks.
    assert execution.visited.count("Check") == 12
    assert seen == [(previous, {canary: 0.2})] * 12
    assert world.alias() == (canary, {})
    assert world.store.live("wine").release == "2"
    assert result.output["state"]["canary"]["figures"]["requests"] == 24


def test_the_promoter_reads_metrics_under_the_names_the_functions_emit_them(
    env: Synthesized,
) -> None:
    """The canary's reader takes namespace, service and environment from the promoter's own
    variables (rollout.targets.canary_metrics): they must be what each inference function
    emits under, or the canary reads nothing and passes every bake."""
    from inferstack.telemetry import metric_identity

    _, props = promoter(env)
    promoter_identity = metric_identity(props["Environment"]["Variables"])
    functions = [
        function["Properties"]["Environment"]["Variables"]
        for function in resources(env, "AWS::Lambda::Function").values()
        if MODEL_ENV in function["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert {v[MODEL_ENV] for v in functions} == {
        m.name for m in env.config.models_on(Target.LAMBDA)
    }
    for variables in functions:
        assert metric_identity(variables) == promoter_identity, variables[MODEL_ENV]
