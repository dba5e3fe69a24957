"""The Lambda rollout against moto's Lambda control plane with real boto3 clients.

The seam: the smoke invoke of a published version is the one AWS call doubled
(tests/functional/aws_doubles.py), since moto never runs an image function's code.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from inferstack.names import live_pointer_key, manifest_key
from inferstack.release.rollout.base import ReleaseRef
from inferstack.release.rollout.lambda_target import LambdaRollout

from .aws_doubles import OneCall, lambda_invoke, no_provisioned_concurrency
from .conftest import DEMO_MODEL, json_infer_body, reference_rows
from .deployed import inference_function, use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUCKET = "acme-models"
FUNCTION = "inferstack-dev-wine"
ROLE = "arn:aws:iam::123456789012:role/inferstack-dev-wine"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/inference:latest"
SMOKE = json_infer_body(reference_rows(2))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[dict[str, Any]]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        versioned_bucket(s3, BUCKET)
        client = boto3.client("lambda")
        first = inference_function(client, function=FUNCTION, bucket=BUCKET)
        yield {"s3": s3, "lambda": client, "first": first}


@pytest.fixture
def no_pc(aws: dict[str, Any]) -> None:
    no_provisioned_concurrency(aws["lambda"])


def release(s3: Any, release_id: str, data: bytes) -> ReleaseRef:
    digest = hashlib.sha256(data).hexdigest()
    key = f"models/wine/{digest}/model.onnx"
    version = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["VersionId"]
    record = {
        "model": "wine",
        "release": release_id,
        "artifact": {"bucket": BUCKET, "key": key, "version_id": version, "sha256": digest},
    }
    s3.put_object(Bucket=BUCKET, Key=manifest_key("wine", release_id), Body=json.dumps(record))
    return ReleaseRef("wine", release_id, f"s3://{BUCKET}/{manifest_key('wine', release_id)}")


def alias_version(client: Any) -> str:
    return str(client.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"])


def test_a_release_reaches_the_alias_on_a_pinned_version(aws: dict[str, Any], no_pc: None) -> None:
    client = aws["lambda"]
    target = release(aws["s3"], "2", DEMO_MODEL.read_bytes())
    rollout = LambdaRollout(
        client, function=FUNCTION, alias="live", smoke_body=SMOKE, invoke=lambda_invoke(client)
    )
    progress = rollout.start(target)
    assert (progress.phase, progress.reason) == ("succeeded", None)
    version = alias_version(client)
    assert version != aws["first"]
    assert progress.state == {"version": version, "previous": aws["first"]}
    pinned = client.get_function_configuration(FunctionName=FUNCTION, Qualifier=version)
    assert pinned["Environment"]["Variables"]["INFERSTACK_MODEL_URI"] == target.uri
    assert pinned["Description"] == "inferstack wine release 2"


def test_a_version_that_cannot_serve_never_gets_the_alias(aws: dict[str, Any]) -> None:
    client = aws["lambda"]
    target = release(aws["s3"], "2", b"not an onnx model")
    rollout = LambdaRollout(
        client, function=FUNCTION, alias="live", smoke_body=SMOKE, invoke=lambda_invoke(client)
    )
    progress = rollout.start(target)
    assert progress.phase == "failed"
    assert progress.reason is not None
    assert "failed its smoke test: GET /v2/models/wine/ready answered 503" in progress.reason
    assert alias_version(client) == aws["first"]


def test_a_version_serving_another_release_never_gets_the_alias(aws: dict[str, Any]) -> None:
    """Say the version's environment still pointed at the live pointer (release 1)."""
    client = aws["lambda"]
    release(aws["s3"], "1", DEMO_MODEL.read_bytes())
    live = json.loads(
        aws["s3"].get_object(Bucket=BUCKET, Key=manifest_key("wine", "1"))["Body"].read()
    )
    aws["s3"].put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=json.dumps(live))
    target = release(aws["s3"], "2", DEMO_MODEL.read_bytes())
    stale = target._replace(uri=f"s3://{BUCKET}/{live_pointer_key('wine')}")
    rollout = LambdaRollout(
        client, function=FUNCTION, alias="live", smoke_body=SMOKE, invoke=lambda_invoke(client)
    )
    progress = rollout.start(stale)
    assert progress.phase == "failed"
    assert "it served release '1', not '2'" in str(progress.reason)
    assert alias_version(client) == aws["first"]


def test_a_function_that_does_not_exist_is_a_failed_rollout(aws: dict[str, Any]) -> None:
    rollout = LambdaRollout(aws["lambda"], function="nope", alias="live", smoke_body=SMOKE)
    progress = rollout.start(release(aws["s3"], "2", DEMO_MODEL.read_bytes()))
    assert progress.phase == "failed"
    assert "could not publish a version: ResourceNotFoundException" in str(progress.reason)


def provisioned(status: str, reason: str | None = None) -> dict[str, Any]:
    answer = {"RequestedProvisionedConcurrentExecutions": 2, "Status": status}
    if reason:
        answer["StatusReason"] = reason
    return answer


def test_the_release_is_live_once_provisioned_concurrency_is_ready(aws: dict[str, Any]) -> None:
    """Moving the alias moves its provisioned concurrency: the new version's environments
    start first; the rollout waits for READY (the state machine's check loop)."""
    client = aws["lambda"]
    OneCall(client, "GetProvisionedConcurrencyConfig",
            provisioned("IN_PROGRESS"), provisioned("READY"))  # fmt: skip
    rollout = LambdaRollout(
        client, function=FUNCTION, alias="live", smoke_body=SMOKE, invoke=lambda_invoke(client)
    )
    progress = rollout.start(release(aws["s3"], "2", DEMO_MODEL.read_bytes()))
    assert (progress.phase, progress.reason) == (
        "in_progress",
        "provisioned concurrency IN_PROGRESS",
    )
    assert rollout.check(progress).phase == "succeeded"


def test_a_failed_provisioned_concurrency_allocation_moves_the_alias_back(
    aws: dict[str, Any],
) -> None:
    client = aws["lambda"]
    OneCall(client, "GetProvisionedConcurrencyConfig",
            provisioned("FAILED", "FUNCTION_ERROR_INIT_FAILURE"))  # fmt: skip
    rollout = LambdaRollout(
        client, function=FUNCTION, alias="live", smoke_body=SMOKE, invoke=lambda_invoke(client)
    )
    progress = rollout.start(release(aws["s3"], "2", DEMO_MODEL.read_bytes()))
    assert progress.phase == "failed"
    assert "FUNCTION_ERROR_INIT_FAILURE" in str(progress.reason)
    assert alias_version(client) == aws["first"]
