"""What the GPU backend reads from a release (moto): the variant it serves (the FP16 copy
made at release time), the FP32 original, the reference sample and the bundle settings."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from inferstack.exceptions import ModelLoadError
from inferstack.names import live_pointer_key, manifest_key
from inferstack.release_pointer import fetch_release, fetch_release_files

from .conftest import DEMO_MODEL
from .deployed import put_artifact, use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-models"
LIVE_URI = f"s3://{BUCKET}/{live_pointer_key('wine')}"
FP16 = b"an fp16 copy of the model"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[S3Client]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        versioned_bucket(client, BUCKET)
        yield client


def publish(s3: S3Client, manifest_fields: dict[str, Any]) -> None:
    """Release r3 of wine, live; the pointer holds only the release and its artifact."""
    model = put_artifact(s3, BUCKET, DEMO_MODEL.read_bytes(), "model.onnx")
    manifest = {"model": "wine", "release": "r3", "artifact": model, **manifest_fields}
    s3.put_object(Bucket=BUCKET, Key=manifest_key("wine", "r3"), Body=json.dumps(manifest))
    pointer = {"model": "wine", "release": "r3", "artifact": model}
    s3.put_object(Bucket=BUCKET, Key=live_pointer_key("wine"), Body=json.dumps(pointer))


def test_the_fp16_copy_reference_and_settings_come_from_the_manifest(s3: S3Client) -> None:
    sample = io.BytesIO()
    np.save(sample, np.ones((2, 13), np.float32))
    reference = put_artifact(s3, BUCKET, sample.getvalue(), "reference.npy")
    publish(
        s3,
        {
            "variants": {"fp16": {"artifact": put_artifact(s3, BUCKET, FP16, "model.fp16.onnx")}},
            "reference": {"key": reference["key"], "version_id": reference["version_id"]},
            "settings": {"profiles": {"features": {"min": [1, 13]}}},
        },
    )
    files = fetch_release_files(LIVE_URI, variant="fp16")
    assert files.release == "r3"
    assert files.path.read_bytes() == FP16
    assert (files.precision, files.note) == ("fp16", "")
    assert files.fp32_path.read_bytes() == DEMO_MODEL.read_bytes()
    assert files.reference is not None
    assert np.load(files.reference).shape == (2, 13)
    assert files.settings == {"profiles": {"features": {"min": [1, 13]}}}
    fp32 = fetch_release_files(LIVE_URI)
    assert fp32.path == fp32.fp32_path
    assert fetch_release(LIVE_URI).path == fp32.path  # the existing reader is unchanged


def test_a_release_from_before_fp16_was_asked_serves_fp32_and_says_so(s3: S3Client) -> None:
    """A deploy that switches a model to fp16 must not fail on the live release the promoter
    made before: it serves that release's FP32 model until a release has a copy."""
    publish(s3, {})
    files = fetch_release_files(LIVE_URI, variant="fp16")
    assert files.path.read_bytes() == DEMO_MODEL.read_bytes() and files.precision == "fp32"
    assert files.note == (
        "release r3 has no fp16 copy: serving fp32 until a release has one "
        "(push the model again to make it)"
    )
    plain = fetch_release_files(LIVE_URI)
    assert plain.reference is None and plain.settings == {} and plain.note == ""


def test_a_tampered_fp16_copy_is_refused(s3: S3Client) -> None:
    copy = put_artifact(s3, BUCKET, FP16, "model.fp16.onnx")
    s3.put_object(Bucket=BUCKET, Key=copy["key"], Body=b"tampered")
    copy.pop("version_id")  # the key's newest version: the tampered one
    publish(s3, {"variants": {"fp16": {"artifact": copy}}})
    with pytest.raises(ModelLoadError, match="SHA-256 does not match"):
        fetch_release_files(LIVE_URI, variant="fp16")
