"""`inferstack push` in-process against moto: what it uploads, and where it reads from."""

from __future__ import annotations

import io
import json
import tarfile
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from inferstack.cli.lifecycle import run
from inferstack.names import SSM_MODEL_BUCKET, SSM_TARGETS, ssm_parameter_name

from . import bad_models
from .deployed import use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BUCKET = "acme-dev-models"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The dev environment's outputs in SSM and its bucket (what `cdk deploy` leaves)."""
    use_fake_aws(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        versioned_bucket(s3, BUCKET)
        ssm = boto3.client("ssm")
        targets = {"wine": {"target": "lambda", "function": "f", "alias": "live"}}
        for name, value in ((SSM_MODEL_BUCKET, BUCKET), (SSM_TARGETS, json.dumps(targets))):
            ssm.put_parameter(Name=ssm_parameter_name("dev", name), Value=value, Type="String")
        yield s3


def test_a_model_with_external_data_is_pushed_as_one_bundle(deployed: Any, tmp_path: Path) -> None:
    model = bad_models.with_external_data(tmp_path / "model.onnx")
    assert run(["push", "wine", str(model), "--env", "dev"]) == 0
    (uploaded,) = deployed.list_objects_v2(Bucket=BUCKET, Prefix="uploads/")["Contents"]
    assert uploaded["Key"] == "uploads/wine/wine.tar.gz"
    body = deployed.get_object(Bucket=BUCKET, Key=uploaded["Key"])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as bundle:
        assert sorted(bundle.getnames()) == ["model.onnx", "model.onnx.data"]
    metadata = deployed.head_object(Bucket=BUCKET, Key=uploaded["Key"])["Metadata"]
    assert metadata["inferstack-pushed-by"]  # who pushed it, for the release's history


def test_a_plain_model_is_pushed_as_it_is(deployed: Any, tmp_path: Path) -> None:
    model = bad_models.tiny(tmp_path / "relu.onnx")
    assert run(["push", "wine", str(model), "--env", "dev"]) == 0
    body = deployed.get_object(Bucket=BUCKET, Key="uploads/wine/relu.onnx")["Body"].read()
    assert body == model.read_bytes()


def test_a_model_the_environment_does_not_serve_is_refused(
    deployed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = bad_models.tiny(tmp_path / "relu.onnx")
    assert run(["push", "resnet", str(model), "--env", "dev"]) == 1
    assert "serves no model 'resnet' (wine)" in " ".join(capsys.readouterr().err.split())
    assert "Contents" not in deployed.list_objects_v2(Bucket=BUCKET, Prefix="uploads/")
