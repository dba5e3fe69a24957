"""Serving hosts load releases: the live pointer (what the CDK app points every target at)
or one pinned release, and come up healthy before the first release exists.

Records are written here in the documented layout (README "Releasing a model"); the
promoter's own writes are exercised end to end in tests/functional/test_lifecycle_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from inferstack.models import repository
from inferstack.names import live_pointer_key, manifest_key

from .conftest import (
    DEMO_MODEL,
    HTTP,
    assert_error_reply,
    http_event,
    invoke,
    json_infer_body,
    reference_rows,
)
from .deployed import put_artifact, use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-models"
LIVE_URI = f"s3://{BUCKET}/{live_pointer_key('wine')}"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[S3Client]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        versioned_bucket(client, BUCKET)
        yield client


def release(s3: S3Client, release_id: str, data: bytes, *, live: bool) -> None:
    record = {"model": "wine", "release": release_id, "artifact": put_artifact(s3, BUCKET, data)}
    s3.put_object(Bucket=BUCKET, Key=manifest_key("wine", release_id), Body=json.dumps(record))
    if live:
        s3.put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=json.dumps(record))


def function(uri: str) -> Any:
    from inferstack.bootstrap import lambda_entry_from_env

    return lambda_entry_from_env(
        {"INFERSTACK_MODEL_NAME": "wine", "INFERSTACK_MODEL_URI": uri, "INFERSTACK_METRICS": "off"}
    )


def infer(handler: Any) -> Any:
    body = json_infer_body(reference_rows(2))
    return invoke(handler, http_event(HTTP, "POST", "/v2/models/wine/infer", body=body))


def get(handler: Any, path: str) -> Any:
    return invoke(handler, http_event(HTTP, "GET", path))


def test_a_first_deploy_comes_up_and_serves_the_first_release_when_it_lands(
    s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = function(LIVE_URI)
    assert get(handler, "/v2/health/live").status == 200
    assert_error_reply(infer(handler), 503, "model 'wine' has no release yet")
    assert get(handler, "/v2/health/ready").status == 503  # the protocol's ready stays true
    assert get(handler, "/v2/models/wine/ready").status == 503

    release(s3, "1", DEMO_MODEL.read_bytes(), live=True)
    # Looked at again at most every RELEASE_RECHECK_S: not before it has passed...
    assert_error_reply(infer(handler), 503, "no release yet")
    monkeypatch.setattr(repository, "RELEASE_RECHECK_S", 0.0)
    # ...then the same execution environment loads the release, with no other step.
    reply = infer(handler)
    assert reply.status == 200, reply.text
    assert reply.json()["model_version"] == "1"
    assert get(handler, "/v2/health/ready").status == 200


def test_a_new_environment_loads_the_live_release(s3: S3Client) -> None:
    release(s3, "1", DEMO_MODEL.read_bytes(), live=False)
    release(s3, "2", DEMO_MODEL.read_bytes() + b"", live=True)
    reply = infer(function(LIVE_URI))
    assert reply.status == 200, reply.text
    assert reply.json()["model_version"] == "2"
    meta = get(function(LIVE_URI), "/v2/models/wine").json()
    assert meta["versions"] == ["2"]


def test_a_pinned_release_keeps_serving_after_the_pointer_moves(s3: S3Client) -> None:
    release(s3, "1", DEMO_MODEL.read_bytes(), live=True)
    release(s3, "2", DEMO_MODEL.read_bytes(), live=True)
    pinned = function(f"s3://{BUCKET}/{manifest_key('wine', '1')}")
    reply = infer(pinned)
    assert reply.status == 200, reply.text
    assert reply.json()["model_version"] == "1"
    versioned = invoke(
        pinned,
        http_event(
            HTTP,
            "POST",
            "/v2/models/wine/versions/1/infer",
            body=json_infer_body(reference_rows(1)),
        ),
    )
    assert versioned.status == 200, versioned.text


def test_an_artifact_that_does_not_match_its_release_never_serves(s3: S3Client) -> None:
    release(s3, "1", DEMO_MODEL.read_bytes(), live=True)
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=live_pointer_key("wine"))["Body"].read())
    record["artifact"]["sha256"] = hashlib.sha256(b"another model").hexdigest()
    s3.put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=json.dumps(record))
    handler = function(LIVE_URI)
    assert_error_reply(infer(handler), 503, "SHA-256 does not match")


def test_a_missing_pinned_release_is_a_load_failure_not_a_first_deploy(s3: S3Client) -> None:
    handler = function(f"s3://{BUCKET}/{manifest_key('wine', '7')}")
    reply = infer(handler)
    assert_error_reply(reply, 503, "NoSuchKey")
    assert "no release yet" not in reply.text


def test_sagemaker_ping_is_up_before_the_first_release_and_down_after_a_failed_load(
    s3: S3Client,
) -> None:
    from inferstack.sagemaker import SageMakerHost

    handler = function(LIVE_URI)
    assert SageMakerHost(handler.dataplane).ping().status == 200

    s3.put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=b"{not json")
    broken = function(LIVE_URI)
    ping = SageMakerHost(broken.dataplane).ping()
    assert ping.status == 503
    assert "wine" in ping.body.decode()


def test_a_bundle_release_loads_its_external_data(s3: S3Client, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(13, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["features", "w"], ["scaled"])],
        "scaled",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 13])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["n", 13])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "model.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    artifact = put_artifact(s3, BUCKET, path.read_bytes())
    data = put_artifact(s3, BUCKET, (tmp_path / "weights.bin").read_bytes(), "weights.bin")
    record = {
        "model": "wine",
        "release": "4",
        "artifact": artifact,
        "files": [{"name": "weights.bin", **data}],
    }
    s3.put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=json.dumps(record))

    reply = infer(function(LIVE_URI))
    assert reply.status == 200, reply.text
    (output,) = reply.json()["outputs"]
    expected = reference_rows(2) * np.arange(13, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(2, 13), expected, rtol=1e-6)
