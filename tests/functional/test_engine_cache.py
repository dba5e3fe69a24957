"""The TensorRT engine cache in the model bucket (moto): an engine built once serves every
later start on the same TensorRT and GPU, and never one built for anything else."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from inferstack.models.tensorrt.cache import EngineCache, EngineKey

from .deployed import use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-models"
KEY = EngineKey(
    model_sha256="ab" * 32,
    trt_version="11.4.0.106",
    gpu_name="NVIDIA A10G",
    compute_capability="8.6",
    machine="x86_64",
    precision="fp16",
    profiles={"input": [[1, 3, 224, 224], [32, 3, 224, 224], [32, 3, 224, 224]]},
    workspace_bytes=4 << 30,
    builder_optimization_level=3,
)
PLAN = b"\x00plan-bytes" * 100


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        versioned_bucket(client, BUCKET)
        yield client


@pytest.fixture
def cache(s3: S3Client, tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path, s3, BUCKET, "resnet50")


def test_round_trip_keeps_the_plan_and_its_build_record(cache: EngineCache, s3: S3Client) -> None:
    assert cache.get(KEY) is None
    assert cache.put(KEY, PLAN, {"build_s": 93.5, "release": "r7"})
    entry = cache.get(KEY)
    assert entry is not None and entry.plan == PLAN
    assert entry.info["build_s"] == 93.5 and entry.info["plan_bytes"] == len(PLAN)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"engines/resnet50/{KEY.digest()}/build.json" in keys
    # a second process (another task) finds it too
    assert EngineCache("/nonexistent", s3, BUCKET, "resnet50").get(KEY) is not None


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"trt_version": "11.3.0.1"},
        {"gpu_name": "NVIDIA L4"},
        {"compute_capability": "8.9"},
        {"machine": "aarch64"},
        {"precision": "fp32"},
        {"profiles": {"input": [[1, 3, 224, 224], [16, 3, 224, 224], [32, 3, 224, 224]]}},
        {"workspace_bytes": 2 << 30},
        {"builder_optimization_level": 5},
        {"key_version": 0},
    ],
)
def test_every_key_field_changes_the_digest_and_misses(
    cache: EngineCache, change: dict[str, object]
) -> None:
    cache.put(KEY, PLAN, {})
    other = KEY._replace(**change)
    assert other.digest() != KEY.digest()
    assert cache.get(other) is None


def test_an_entry_whose_stored_key_differs_is_not_used(
    cache: EngineCache, s3: S3Client, caplog: pytest.LogCaptureFixture
) -> None:
    cache.put(KEY, PLAN, {})
    name = f"engines/resnet50/{KEY.digest()}/build.json"
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=name)["Body"].read())
    record["key"]["gpu_name"] = "NVIDIA T4"  # at the right digest, but built for another GPU
    s3.put_object(Bucket=BUCKET, Key=name, Body=json.dumps(record).encode())
    assert cache.get(KEY) is None
    assert "built for another gpu_name" in caplog.text


def test_a_corrupted_plan_is_a_miss(cache: EngineCache, s3: S3Client) -> None:
    cache.put(KEY, PLAN, {})
    entry = cache.get(KEY)
    assert entry is not None
    s3.put_object(Bucket=BUCKET, Key="engines/resnet50/" + entry.info["plan_key"], Body=b"torn")
    assert cache.get(KEY) is None


def test_two_builders_at_once_keep_the_first_entry(cache: EngineCache, s3: S3Client) -> None:
    assert cache.put(KEY, PLAN, {"host": "a"})
    assert not EngineCache("/x", s3, BUCKET, "resnet50").put(KEY, b"other plan", {"host": "b"})
    entry = cache.get(KEY)
    assert entry is not None and entry.plan == PLAN and entry.info["host"] == "a"


def test_an_unusable_entry_is_replaced_only_by_its_etag(cache: EngineCache) -> None:
    cache.put(KEY, PLAN, {})
    first = cache.get(KEY)
    assert first is not None
    assert not cache.put(KEY, b"rebuilt", {}, replace='"not-its-etag"')
    assert cache.put(KEY, b"rebuilt", {}, replace=first.etag)
    again = cache.get(KEY)
    assert again is not None and again.plan == b"rebuilt"


def test_timing_cache_is_per_trt_gpu_and_cc(cache: EngineCache, s3: S3Client) -> None:
    assert cache.get_timing(KEY) is None
    cache.put_timing(KEY, b"timing")
    assert cache.get_timing(KEY) == b"timing"
    assert cache.get_timing(KEY._replace(compute_capability="8.9")) is None
    assert s3.head_object(
        Bucket=BUCKET, Key="engines/resnet50/_timing/11.4.0.106-8.6-nvidia-a10g.cache"
    )


def test_without_a_bucket_the_cache_is_a_local_directory(tmp_path: Path) -> None:
    local = EngineCache(tmp_path, None, None, "resnet50")
    assert local.put(KEY, PLAN, {})
    assert not local.put(KEY, b"second", {})
    entry = local.get(KEY)
    assert entry is not None and entry.plan == PLAN
