"""The promoter's steps on moto (S3 and Lambda, real boto3 clients): uploads become releases
that reach the Lambda alias; rejected, duplicate and unchanged uploads; failed rollouts;
promote and rollback. The inference handler then serves what the alias points at.

Seams (shared/AWS-TESTING.md): the smoke invoke of a published version runs the real
inference handler in-process (aws_doubles.lambda_invoke); the S3 event is AWS's documented
sample with this upload's bucket, key, version and ETag.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from inferstack.release.exceptions import ReleaseConflict
from inferstack.release.promote import Promoter
from inferstack.release.rollout.lambda_target import LambdaRollout
from inferstack.release.store import ReleaseStore

from . import bad_models
from .aws_doubles import lambda_invoke, no_provisioned_concurrency
from .conftest import DEMO_DIR, DEMO_MODEL
from .deployed import (
    inference_function,
    through_alias,
    upload_event,
    use_fake_aws,
    versioned_bucket,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUCKET = "acme-models"
FUNCTION = "inferstack-dev-wine"


class World:
    def __init__(self) -> None:
        self.s3 = boto3.client("s3")
        self.lambda_ = boto3.client("lambda")
        self.failures: list[tuple[str | None, str]] = []
        self.store = ReleaseStore(self.s3, BUCKET)
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

        self.promoter = Promoter(
            self.store,
            targets={"wine": {"target": "lambda", "function": FUNCTION, "alias": "live"}},
            rollout_for=rollout_for,
            on_failure=lambda model, reason: self.failures.append((model, reason)),
        )

    def upload(self, path: Path, name: str = "model.onnx", **metadata: str) -> dict[str, Any]:
        """Put the file under uploads/wine/ and return the S3 event AWS would send."""
        return upload_event(self.s3, BUCKET, f"uploads/wine/{name}", path.read_bytes(), **metadata)

    def alias_serves(self) -> dict[str, Any]:
        """An inference through the alias's version, as API Gateway would call it."""
        reply = through_alias(self.lambda_, FUNCTION)
        assert reply["statusCode"] == 200, reply
        return dict(json.loads(reply["body"]))

    def states(self, release: str) -> list[str]:
        return [entry.state for entry in self.store.history("wine", release)]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[World]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        versioned_bucket(boto3.client("s3"), BUCKET)
        inference_function(boto3.client("lambda"), function=FUNCTION, bucket=BUCKET)
        yield World()


def promote_upload(world: World, event: dict[str, Any]) -> dict[str, Any]:
    return world.promoter.run(world.promoter.prepare(event), deadline_s=60)


def test_an_upload_becomes_release_1_and_the_alias_serves_it(world: World) -> None:
    step = promote_upload(world, world.upload(DEMO_MODEL, **{"inferstack-pushed-by": "ana"}))
    assert (step["outcome"], step["release"], step["result"]) == ("release", "1", "live")
    assert world.states("1") == ["validated", "rolling_out", "live"]
    assert world.store.live("wine").release == "1"
    manifest = world.store.get_release("wine", "1").manifest
    assert manifest["created_by"] == "ana"
    assert manifest["validation"]["passed"] is True
    assert manifest["signature"]["inputs"][0]["name"] == "features"
    assert world.alias_serves()["model_version"] == "1"
    assert world.failures == []


def test_a_duplicate_event_makes_no_second_release(world: World) -> None:
    event = world.upload(DEMO_MODEL)
    promote_upload(world, event)
    again = promote_upload(world, event)
    assert again["outcome"] == "duplicate"
    assert [r.release for r in world.store.releases("wine")] == ["1"]


def test_the_live_content_uploaded_again_changes_nothing(world: World) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    same = promote_upload(world, world.upload(DEMO_MODEL, "again.onnx"))
    assert same["outcome"] == "unchanged"
    assert [r.release for r in world.store.releases("wine")] == ["1"]


def test_a_rejected_upload_never_serves_and_alarms(world: World, tmp_path: Path) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    bad = bad_models.tiny(tmp_path / "model.onnx", opset=99)
    step = promote_upload(world, world.upload(bad))
    assert step["outcome"] == "rejected"
    assert "check 'opset' failed" in step["reason"]
    assert [r.release for r in world.store.releases("wine")] == ["1"]
    assert world.store.live("wine").release == "1"
    assert [model for model, _ in world.failures] == ["wine"]
    (rejection,) = world.store.rejections("wine")
    assert rejection.report["failed_check"] == "opset"
    assert world.alias_serves()["model_version"] == "1"


def test_an_incompatible_signature_needs_the_upload_to_say_so(world: World, tmp_path: Path) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    other = bad_models.tiny(tmp_path / "model.onnx", input_name="features", shape=("n", 13))
    refused = promote_upload(world, world.upload(other))
    assert (refused["outcome"], "check 'signature' failed" in refused["reason"]) == (
        "rejected",
        True,
    )
    allowed = promote_upload(
        world, world.upload(other, "v2.onnx", **{"inferstack-allow-signature-change": "true"})
    )
    assert (allowed["release"], allowed["result"]) == ("2", "live")


def test_a_second_release_supersedes_the_first_and_rollback_returns(
    world: World, tmp_path: Path
) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    bundle = _bundle(tmp_path)
    second = promote_upload(world, world.upload(bundle, "wine.tar.gz"))
    assert (second["release"], second["result"]) == ("2", "live")
    assert world.states("1")[-1] == "superseded"
    assert world.alias_serves()["model_version"] == "2"

    back = world.promoter.run(world.promoter.rollback("wine", to=None, by="ops"), deadline_s=60)
    assert (back["release"], back["result"], back["action"]) == ("1", "live", "rollback")
    assert world.states("2")[-1] == "rolled_back"
    assert world.alias_serves()["model_version"] == "1"
    pointer = world.store.live("wine")
    assert [(e.release, e.action) for e in pointer.history] == [
        ("1", "promote"),
        ("2", "promote"),
        ("1", "rollback"),
    ]


def test_a_failed_rollout_leaves_the_previous_release_live(world: World) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    first_alias = world.lambda_.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]
    # Someone broke the function's configuration: a new version cannot start.
    world.lambda_.update_function_configuration(
        FunctionName=FUNCTION, Environment={"Variables": {"INFERSTACK_METRICS": "off"}}
    )
    failed = world.promoter.run(world.promoter.promotion("wine", "1", by="ops"), deadline_s=60)
    assert failed["result"] == "failed"
    assert "failed its smoke test" in failed["reason"]
    assert world.states("1")[-1] == "failed"
    assert world.store.live("wine").release == "1"
    alias = world.lambda_.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]
    assert alias == first_alias
    assert ("wine", failed["reason"]) in world.failures


def test_one_rollout_per_model_at_a_time(world: World) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    held = world.promoter.start(world.promoter.promotion("wine", "1", by="a"))
    with pytest.raises(ReleaseConflict, match="under way"):
        world.promoter.start(world.promoter.promotion("wine", "1", by="b"))
    world.promoter.finish(held)
    again = world.promoter.run(world.promoter.promotion("wine", "1", by="b"), deadline_s=60)
    assert again["result"] == "live"


def test_an_upload_for_no_configured_model_is_counted_unattributed(world: World) -> None:
    event = world.upload(DEMO_MODEL)
    event["detail"]["object"]["key"] = "uploads/nosuchmodel/model.onnx"
    step = world.promoter.prepare(event)
    assert step["outcome"] == "ignored"
    assert world.failures and world.failures[0][0] is None


def _retrained(tmp_path: Path) -> Path:
    """The demo model with other bytes (same signature), as a retrained model is."""
    import onnx

    model = onnx.load(DEMO_MODEL)
    model.doc_string = "retrained"
    onnx.save(model, tmp_path / "retrained.onnx")
    return tmp_path / "retrained.onnx"


def _bundle(tmp_path: Path) -> Path:
    """A retrained model (other bytes, same signature) with its reference sample."""
    import onnx

    from inferstack.release.bundle import build_bundle

    model = onnx.load(DEMO_MODEL)
    model.doc_string = "retrained"
    onnx.save(model, tmp_path / "model.onnx")
    reference = DEMO_DIR / "reference_sample.npy"
    return build_bundle(tmp_path / "model.onnx", tmp_path / "wine.tar.gz", reference=reference)


def test_a_retried_start_of_the_same_execution_keeps_its_slot(world: World) -> None:
    """Step Functions retries Start after a Lambda service error: the execution that holds
    the slot gets it again; any other still waits."""
    promote_upload(world, world.upload(DEMO_MODEL))
    step = world.promoter.promotion("wine", "1", by="ops")
    first = world.promoter.start(step, owner="execution-a")
    again = world.promoter.start(step, owner="execution-a")
    assert again["lock"]["key"] == first["lock"]["key"]
    with pytest.raises(ReleaseConflict):
        world.promoter.start(step, owner="execution-b")
    assert world.promoter.finish(again)["result"] == "live"


def test_an_older_uploads_late_event_does_not_replace_the_newer_upload(
    world: World, tmp_path: Path
) -> None:
    """Two uploads to one key, their events delivered newest first: the older model must not
    become the next release (S3 orders one key's events by `sequencer`, not by delivery)."""
    older = world.upload(DEMO_MODEL)
    newer = world.upload(_retrained(tmp_path), "model.onnx")  # same key, newer content
    older["detail"]["object"]["sequencer"] = "617f08299329d189"
    newer["detail"]["object"]["sequencer"] = "617f0829a000000001"  # longer: compare padded
    assert promote_upload(world, newer)["result"] == "live"
    late = promote_upload(world, older)
    assert late["outcome"] == "superseded"
    assert [r.release for r in world.store.releases("wine")] == ["1"]
    assert world.promoter.prepare(older)["outcome"] == "duplicate"


def test_concurrent_uploads_become_distinct_releases_rolled_out_one_at_a_time(
    world: World, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    events = [world.upload(DEMO_MODEL, "a.onnx"), world.upload(_retrained(tmp_path), "b.onnx")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        steps = list(pool.map(world.promoter.prepare, events))
    assert sorted(step["release"] for step in steps) == ["1", "2"]
    first = world.promoter.start(steps[0])
    with pytest.raises(ReleaseConflict, match="under way"):
        world.promoter.start(steps[1])  # the state machine retries this every minute
    assert world.promoter.finish(first)["result"] == "live"
    assert world.promoter.run(steps[1], deadline_s=60)["result"] == "live"
    assert world.store.live("wine").release == steps[1]["release"]


def test_the_models_size_bound_from_its_configuration_applies(world: World) -> None:
    world.promoter.targets = {"wine": {**world.promoter.targets["wine"], "max_model_bytes": 1000}}
    step = promote_upload(world, world.upload(DEMO_MODEL))  # 1,397 bytes
    assert step["outcome"] == "rejected"
    assert "check 'size' failed" in step["reason"]


def test_a_release_with_a_reference_sample_gets_the_drift_baseline_the_check_reads(
    world: World, tmp_path: Path
) -> None:
    """The bundle's reference sample and the model's outputs on it become the release's
    baseline (SageMaker's statistics.json and constraints.json, and ours); the drift check
    compares the live release's traffic with exactly that."""
    import numpy as np

    from inferstack.drift.baseline import Baseline
    from inferstack.release.bundle import build_bundle

    bundle = build_bundle(
        DEMO_MODEL, tmp_path / "wine.tar.gz", reference=DEMO_DIR / "reference_sample.npy"
    )
    promote_upload(world, world.upload(bundle, "wine.tar.gz"))
    manifest = world.store.get_release("wine", "1").manifest
    prefix = manifest["baseline"]["prefix"]
    assert prefix == f"baselines/wine/{manifest['content_sha256']}/"
    assert manifest["baseline_problem"] is None
    local = tmp_path / "baseline"
    local.mkdir()
    for name in ("statistics.json", "constraints.json", "baseline.json"):
        body = world.s3.get_object(Bucket=BUCKET, Key=prefix + name)["Body"].read()
        (local / name).write_bytes(body)
    statistics = json.loads((local / "statistics.json").read_text())
    reference = np.load(DEMO_DIR / "reference_sample.npy")
    assert statistics["dataset"]["item_count"] == len(reference)
    baseline = Baseline.load(local)
    # Inputs (13 features of `features`) and outputs (the label and 3 probabilities).
    sources = {f.source for f in baseline.features}
    assert sources == {"input", "output"}
    assert sum(f.source == "input" for f in baseline.features) == reference.shape[1]


def test_a_release_without_a_reference_sample_says_it_has_no_baseline(world: World) -> None:
    promote_upload(world, world.upload(DEMO_MODEL))
    manifest = world.store.get_release("wine", "1").manifest
    assert manifest["baseline"] is None
    assert "no reference sample" in manifest["baseline_problem"]
    listed = world.s3.list_objects_v2(Bucket=BUCKET, Prefix="baselines/")
    assert listed.get("KeyCount", 0) == 0
