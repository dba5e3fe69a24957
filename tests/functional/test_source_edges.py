"""The S3 model cache at its edges: which client it uses, what an unpinned URI is cached as,
buckets with versioning suspended, unreachable endpoints, and memory while hashing.

Real boto3 clients against moto (its HTTP server where the endpoint matters).
"""

from __future__ import annotations

import hashlib
import tracemalloc
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.server import ThreadedMotoServer

from inferstack.exceptions import ModelLoadError
from inferstack.sources import S3ModelCache, file_sha256, parse_s3_uri, resolve_model_file

from .conftest import DEMO_MODEL

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-models"
KEY = "wine/model.onnx"
FIRST = DEMO_MODEL.read_bytes()
SECOND = FIRST + b"\0"  # different bytes, different object: the cache never parses them
# Nothing listens on port 9 (discard) on the test machines: connecting fails at once.
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3(aws: None) -> Iterator[S3Client]:
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


def failing_fast() -> Config:
    return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2)


def test_the_client_passed_in_is_the_one_used(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's client (its endpoint, credentials, retries) fetches the model: the
    environment's default S3 endpoint here is unreachable, so using it would fail."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        version = client.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)["VersionId"]
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", UNREACHABLE)
        for uri in (f"s3://{BUCKET}/{KEY}", f"s3://{BUCKET}/{KEY}?versionId={version}"):
            cache = tmp_path / uri.rpartition("=")[2]
            path = resolve_model_file(uri, cache_dir=cache, s3_client=client)
            assert path.read_bytes() == FIRST, uri
    finally:
        server.stop()


def test_an_unpinned_fetch_is_cached_as_the_version_it_got(s3: S3Client, tmp_path: Path) -> None:
    """`s3://b/k` resolves to the object's current version: a later cold start pinned to
    that version (what a release records) reuses the download, even with S3 gone."""
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=SECOND)
    latest = s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)["VersionId"]
    cache = S3ModelCache(tmp_path, s3)
    unpinned = cache.fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert unpinned.read_bytes() == FIRST

    for version in s3.list_object_versions(Bucket=BUCKET)["Versions"]:
        s3.delete_object(Bucket=BUCKET, Key=KEY, VersionId=version["VersionId"])
    pinned = cache.fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}?versionId={latest}"))
    assert pinned == unpinned


def test_a_bucket_with_versioning_suspended_serves_each_new_upload(
    s3: S3Client, tmp_path: Path
) -> None:
    """With versioning suspended every upload is version "null": not an identity to cache
    by, or the second upload would be answered with the first's cached file.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/AddingObjectstoVersionSuspendedBuckets.html
    """
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})

    # S3 answers HeadObject on a null version with "x-amz-version-id: null"; moto sends no
    # header there, so this one call gets it added (AWS-TESTING.md: a narrow double).
    def null_version(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("VersionId", "null")

    s3.meta.events.register("after-call.s3.HeadObject", null_version)
    uri = parse_s3_uri(f"s3://{BUCKET}/{KEY}")
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["VersionId"] == "null"
    assert S3ModelCache(tmp_path, s3).fetch(uri).read_bytes() == FIRST

    s3.put_object(Bucket=BUCKET, Key=KEY, Body=SECOND)
    assert S3ModelCache(tmp_path, s3).fetch(uri).read_bytes() == SECOND


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_an_unreachable_endpoint_is_a_load_error_naming_the_failure(
    aws: None, tmp_path: Path, pinned: bool
) -> None:
    client = boto3.client("s3", endpoint_url=UNREACHABLE, config=failing_fast())
    uri = f"s3://{BUCKET}/{KEY}" + ("?versionId=v1" if pinned else "")
    with pytest.raises(ModelLoadError) as raised:
        S3ModelCache(tmp_path, client).fetch(parse_s3_uri(uri))
    assert str(raised.value) == f"could not download the model from {uri}: EndpointConnectionError"
    assert not list(tmp_path.rglob("*")), "nothing is left in the cache"


def test_hashing_a_model_reads_it_in_chunks(tmp_path: Path) -> None:
    """Verifying a cached multi-GB model must not hold it in memory (Lambda's memory is
    the function's whole budget)."""
    big = tmp_path / "model.onnx"
    with big.open("wb") as handle:
        handle.truncate(48 * 1024 * 1024)
    tracemalloc.start()
    try:
        digest = file_sha256(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(bytes(48 * 1024 * 1024)).hexdigest()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while hashing 48 MiB"
