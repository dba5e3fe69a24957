"""The Lambda rollout of a SnapStart model: the alias moves only once the published version's
snapshot is ready, and a failed snapshot is a failed release with Lambda's reason.

moto's Lambda (5.2.5) ignores the SnapStart setting: every configuration it answers says
SnapStart ApplyOn "None", OptimizationStatus "Off", and every version is Active at once. The
seam is `SnapStartLambda`: a botocore after-call handler on the real client that rewrites
moto's answers of PublishVersion and GetFunctionConfiguration as Lambda gives them for a
function with SnapStart on published versions (the version Pending while Lambda initializes
and snapshots it, then Active or Failed with StateReasonCode and StateReason,
https://docs.aws.amazon.com/lambda/latest/dg/snapstart-activate.html#snapstart-function-states).
Everything else is moto; the smoke invoke runs the real handler (aws_doubles.lambda_invoke).
The reason codes come from the API's StateReasonCode values; their texts are examples.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.validate import ParamValidator
from moto import mock_aws

from inferstack.release.promote import Promoter
from inferstack.release.rollout.canary import Canary
from inferstack.release.rollout.lambda_target import SNAPSHOT_WAIT_S, LambdaRollout
from inferstack.release.rollout.targets import canary_metrics
from inferstack.release.store import ReleaseStore

from .aws_doubles import lambda_invoke, no_provisioned_concurrency
from .conftest import DEMO_MODEL
from .deployed import inference_function, upload_event, use_fake_aws, versioned_bucket
from .test_lambda_rollout import BUCKET, FUNCTION, SMOKE, alias_version, release

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ALIAS = "live"
INIT_TIMEOUT = (
    "FunctionError.InitTimeout",
    "The function's initialization code ran past its time limit while creating the snapshot.",
)


class SnapStartLambda:
    """Lambda's answers for a function with SnapStart on published versions: each version
    published from now on is Pending until the test says Lambda finished its snapshot
    (`ready`) or failed it (`fail`). Rewritten answers are checked against the operations'
    output shapes."""

    PENDING = ("Pending", "Creating", "The function is being created.")

    def __init__(self, client: Any) -> None:
        self.states: dict[str, tuple[str, str | None, str | None]] = {}
        for operation in ("PublishVersion", "GetFunctionConfiguration"):
            client.meta.events.register(f"after-call.lambda.{operation}", self._rewrite)

    def ready(self, version: str) -> None:
        self.states[version] = ("Active", None, None)

    def fail(self, version: str, code: str, reason: str) -> None:
        self.states[version] = ("Failed", code, reason)

    def _rewrite(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        version = parsed.get("Version")
        if version is None:  # an error answer
            return
        published = version != "$LATEST"
        parsed["SnapStart"] = {
            "ApplyOn": "PublishedVersions",
            "OptimizationStatus": "On" if published else "Off",
        }
        if published and model.name == "PublishVersion":
            self.states[version] = self.PENDING
        if published and version in self.states:
            state, code, reason = self.states[version]
            parsed["State"] = state
            for key, value in (("StateReasonCode", code), ("StateReason", reason)):
                if value is None:
                    parsed.pop(key, None)
                else:
                    parsed[key] = value
        answer = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
        report = ParamValidator().validate(answer, model.output_shape)
        assert not report.has_errors(), report.generate_report()


class Smoke:
    """The smoke invoke (the real handler), recording which versions were invoked."""

    def __init__(self, client: Any) -> None:
        self.invoke = lambda_invoke(client)
        self.versions: list[str] = []

    def __call__(self, function: str, qualifier: str, event: dict[str, Any]) -> dict[str, Any]:
        self.versions.append(qualifier)
        answer: dict[str, Any] = self.invoke(function, qualifier, event)
        return answer


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[dict[str, Any]]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        versioned_bucket(s3, BUCKET)
        client = boto3.client("lambda")
        first = inference_function(client, function=FUNCTION, bucket=BUCKET)
        no_provisioned_concurrency(client)
        yield {"s3": s3, "lambda": client, "first": first}


class Clock:
    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


def rollout(client: Any, smoke: Smoke, clock: Clock, canary: Canary | None = None) -> LambdaRollout:
    metrics = None
    if canary is not None:
        target = {"function": FUNCTION, "alias": ALIAS}
        metrics = canary_metrics(boto3.client("cloudwatch"), "wine", target, {})
    return LambdaRollout(
        client,
        function=FUNCTION,
        alias=ALIAS,
        smoke_body=SMOKE,
        invoke=smoke,
        canary=canary,
        metrics=metrics,
        clock=clock,
    )


def test_the_alias_moves_only_once_the_snapshot_is_ready(aws: dict[str, Any]) -> None:
    client, first = aws["lambda"], aws["first"]
    snapstart, smoke, clock = SnapStartLambda(client), Smoke(client), Clock()
    target = release(aws["s3"], "2", DEMO_MODEL.read_bytes())
    roll = rollout(client, smoke, clock)

    progress = roll.start(target)
    assert progress.phase == "in_progress", progress.reason
    version = str(progress.state["version"])  # type: ignore[index]
    assert progress.reason == (
        f"SnapStart snapshot of version {version}: Lambda is initializing it (model download, "
        "session, warm-up) and snapshotting it; state Pending (Creating: The function is being "
        "created.)"
    )
    # A Pending version is neither invoked (it would fail) nor given the alias.
    assert (smoke.versions, alias_version(client)) == ([], first)

    clock.skew += 60
    progress = roll.check(progress)  # the state machine's next look, 30 s or more later
    assert progress.phase == "in_progress"
    assert (smoke.versions, alias_version(client)) == ([], first)

    snapstart.ready(version)
    progress = roll.check(progress)
    assert (progress.phase, progress.reason) == ("succeeded", None)
    assert progress.state == {"version": version, "previous": first}
    assert smoke.versions == [version, version]  # ready, then one inference
    assert alias_version(client) == version
    pinned = client.get_function_configuration(FunctionName=FUNCTION, Qualifier=version)
    assert pinned["Environment"]["Variables"]["INFERSTACK_MODEL_URI"] == target.uri


class World:
    """The promoter over the SnapStart model: release 1 went live before SnapStart was turned
    on (a plain version), then each version is snapshotted."""

    def __init__(self, aws: dict[str, Any]) -> None:
        self.s3, self.lambda_ = aws["s3"], aws["lambda"]
        self.store = ReleaseStore(self.s3, BUCKET)
        self.failures: list[tuple[str | None, str]] = []
        self.smoke, self.clock = Smoke(self.lambda_), Clock()
        self.promoter = Promoter(
            self.store,
            targets={"wine": {"target": "lambda", "function": FUNCTION, "alias": ALIAS}},
            rollout_for=lambda model, target, body: rollout(self.lambda_, self.smoke, self.clock),
            on_failure=lambda model, reason: self.failures.append((model, reason)),
        )
        step = self.promoter.run(self.prepare("model.onnx", DEMO_MODEL.read_bytes()), deadline_s=60)
        assert step["result"] == "live"
        self.live_version = alias_version(self.lambda_)
        self.snapstart = SnapStartLambda(self.lambda_)

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        """The S3 event of an upload to uploads/wine/<name>."""
        return upload_event(self.s3, BUCKET, f"uploads/wine/{name}", data)

    def prepare(self, name: str, data: bytes) -> dict[str, Any]:
        return self.promoter.prepare(self.upload(name, data))

    def pending(self) -> list[str]:
        """The published versions Lambda is still snapshotting."""
        return [v for v, (state, _, _) in self.snapstart.states.items() if state == "Pending"]

    def history(self, release: str) -> list[tuple[str, str | None]]:
        return [(e.state, e.reason) for e in self.store.history("wine", release)]


def retrained(tmp_path: Path) -> bytes:
    import onnx

    model = onnx.load(DEMO_MODEL)
    model.doc_string = "retrained"
    onnx.save(model, tmp_path / "retrained.onnx")
    return (tmp_path / "retrained.onnx").read_bytes()


def test_a_failed_snapshot_fails_the_release_with_lambdas_reason(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    world = World(aws)
    step = world.promoter.start(world.prepare("v2.onnx", retrained(tmp_path)))
    assert step["phase"] == "in_progress"
    version = step["state"]["version"]
    # The release's history says why it is still rolling out.
    assert world.history("2")[-1] == ("rolling_out", step["phase_reason"])
    assert f"SnapStart snapshot of version {version}" in step["phase_reason"]

    world.snapstart.fail(version, *INIT_TIMEOUT)
    step = world.promoter.check(step)
    reason = (
        f"snapshot of version {version} failed: FunctionError.InitTimeout: The function's "
        "initialization code ran past its time limit while creating the snapshot.; "
        "alias live was not moved"
    )
    assert (step["phase"], step["phase_reason"]) == ("failed", reason)
    done = world.promoter.finish(step)
    assert (done["result"], done["reason"]) == ("failed", reason)
    assert world.history("2")[-1] == ("failed", reason)
    assert world.failures == [("wine", reason)]
    # The previous release keeps serving, on its version; the failed one was never invoked.
    assert alias_version(world.lambda_) == world.live_version
    assert world.store.live("wine").release == "1"  # type: ignore[union-attr]
    assert version not in world.smoke.versions


def test_a_snapshot_never_ready_fails_the_release_in_time(
    aws: dict[str, Any], tmp_path: Path
) -> None:
    """Lambda fails a version whose init runs past 15 minutes; a version still Pending long
    after that must not hold the model's rollout slot for hours."""
    world = World(aws)
    step = world.promoter.start(world.prepare("v2.onnx", retrained(tmp_path)))
    world.clock.skew += SNAPSHOT_WAIT_S - 60
    step = world.promoter.check(step)
    assert step["phase"] == "in_progress"
    world.clock.skew += 120
    step = world.promoter.check(step)
    version = step["state"]["version"]
    assert (step["phase"], step["phase_reason"]) == (
        "failed",
        f"snapshot of version {version} is not ready after 31 min (state Pending (Creating: "
        "The function is being created.)); alias live was not moved",
    )
    assert world.promoter.finish(step)["result"] == "failed"
    assert alias_version(world.lambda_) == world.live_version


CANARY = Canary(weight_percent=10, bake_minutes=10, max_error_rate=0.05, max_p99_ms=None,
                min_requests=0)  # fmt: skip


def test_a_snapshotted_version_then_bakes_as_the_models_canary(aws: dict[str, Any]) -> None:
    client, first = aws["lambda"], aws["first"]
    snapstart, smoke, clock = SnapStartLambda(client), Smoke(client), Clock()
    roll = rollout(client, smoke, clock, CANARY)
    progress = roll.start(release(aws["s3"], "2", DEMO_MODEL.read_bytes()))
    version = str(progress.state["version"])  # type: ignore[index]
    snapstart.ready(version)
    progress = roll.check(progress)
    assert progress.phase == "in_progress"
    assert progress.reason == (
        f"canary 10% on version {version} for 10 min (version {first} serves the rest)"
    )
    alias = client.get_alias(FunctionName=FUNCTION, Name=ALIAS)
    assert alias["FunctionVersion"] == first
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {version: 0.1}


def test_a_rollout_started_without_canary_keeps_none_after_the_snapshot(
    aws: dict[str, Any],
) -> None:
    """A rollback or a first release starts without the model's canary; the checks get the
    target as configured (with it): the snapshot's wait must not bring it back."""
    client = aws["lambda"]
    snapstart, smoke, clock = SnapStartLambda(client), Smoke(client), Clock()
    progress = rollout(client, smoke, clock).start(release(aws["s3"], "2", DEMO_MODEL.read_bytes()))
    version = str(progress.state["version"])  # type: ignore[index]
    snapstart.ready(version)
    progress = rollout(client, smoke, clock, CANARY).check(progress)
    assert progress.phase == "succeeded", progress.reason
    alias = client.get_alias(FunctionName=FUNCTION, Name=ALIAS)
    assert alias["FunctionVersion"] == version
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
