"""The S3 model cache at its edges: which client it uses, what an unpinned URI is cached as,
buckets with versioning suspended, unreachable endpoints, and memory while hashing.

Real boto3 clients against moto (its HTTP server where the endpoint matters).
"""

from __future__ import annotations

import base64
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
from .deployed import use_fake_aws

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
    use_fake_aws(monkeypatch)


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


# ----------------------------------------------------------------- URIs and local files


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/Xception/model.onnx", ("b", "Xception/model.onnx", None)),
        ("s3://b//m/model.onnx", ("b", "m/model.onnx", None)),
        ("s3://b/k.onnx?versionId=v1&x-id=GetObject", ("b", "k.onnx", "v1")),
        ("s3://b/k.onnx?versionId=Zm9v=", ("b", "k.onnx", "Zm9v=")),
        ("s3://b/k.onnx?versionId=", ("b", "k.onnx", None)),
    ],
    ids=["key-starting-with-X", "leading-slashes", "other-query-keys", "padded-id", "empty-id"],
)
def test_s3_uris_name_the_object_exactly(uri: str, expected: tuple[str, str, str | None]) -> None:
    location = parse_s3_uri(uri)
    assert (location.bucket, location.key, location.version_id) == expected


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "s3:///key", "https://b/k"])
def test_an_s3_uri_without_bucket_or_key_says_what_is_expected(uri: str) -> None:
    with pytest.raises(ModelLoadError) as raised:
        parse_s3_uri(uri)
    assert str(raised.value) == f"not an S3 model URI: {uri!r} (expected s3://bucket/key)"


def test_file_uris_and_home_paths_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(FIRST)
    assert resolve_model_file(f"file://{model}") == model
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_file("~/model.onnx") == model


def test_a_missing_local_model_is_logged_with_its_uri_and_told_plainly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = str(tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError) as raised:
        resolve_model_file(uri)
    assert str(raised.value) == "model file not found"
    assert [r.getMessage() for r in caplog.records] == [f"model file not found: {uri}"]


def test_the_cache_directory_given_is_the_one_used(
    s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERSTACK_CACHE_DIR", str(tmp_path / "from-environment"))
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    path = resolve_model_file(f"s3://{BUCKET}/{KEY}", cache_dir=tmp_path / "given", s3_client=s3)
    assert path.is_relative_to(tmp_path / "given")
    assert not (tmp_path / "from-environment").exists()


# -------------------------------------------------------------- checksums and temp files


def stored_checksum(s3: S3Client, value: str) -> None:
    """GetObject answers with `value` as the object's stored SHA-256, as S3 does, and only
    when the request asks for it (ChecksumMode=ENABLED). moto keeps no checksum given with
    the upload (and omits a multipart object's "-<parts>" suffix): this one call is doubled
    (AWS-TESTING.md). https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html"""
    asked: list[bool] = []

    def request(params: dict[str, Any], **_: Any) -> None:
        asked.append(params.get("ChecksumMode") == "ENABLED")

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        if asked and asked.pop():
            parsed["ChecksumSHA256"] = value

    s3.meta.events.register("before-parameter-build.s3.GetObject", request)
    s3.meta.events.register("after-call.s3.GetObject", answer)


def test_an_object_whose_bytes_do_not_match_its_checksum_is_never_cached(
    s3: S3Client, tmp_path: Path
) -> None:
    """A stored checksum that the downloaded bytes do not match: they are not what was
    uploaded (corrupted on the way, or replaced): refused, and nothing is cached."""
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    stored_checksum(s3, base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode())
    with pytest.raises(ModelLoadError) as raised:
        S3ModelCache(tmp_path, s3).fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert str(raised.value) == f"checksum mismatch downloading s3://{BUCKET}/{KEY}"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_matching_checksum_is_accepted(s3: S3Client, tmp_path: Path) -> None:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    stored_checksum(s3, base64.b64encode(hashlib.sha256(FIRST).digest()).decode())
    path = S3ModelCache(tmp_path, s3).fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert path.read_bytes() == FIRST


def test_a_multipart_checksum_is_not_compared_with_the_whole_file(
    s3: S3Client, tmp_path: Path
) -> None:
    """A multipart object's checksum is over its parts ("<b64>-<parts>"): it cannot be
    checked against the file's digest
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html)."""
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    stored_checksum(s3, base64.b64encode(b"p" * 32).decode() + "-3")
    path = S3ModelCache(tmp_path, s3).fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert path.read_bytes() == FIRST


def test_downloads_write_only_inside_the_cache(
    s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partial downloads live beside their target (an atomic rename needs one filesystem;
    on Lambda only /tmp is writable), never in the system's temp directory."""
    import tempfile

    blocked = tmp_path / "no-temp-here"
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))  # does not exist: unusable
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    path = S3ModelCache(tmp_path / "cache", s3).fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert path.read_bytes() == FIRST
    assert not blocked.exists()


def test_a_cached_model_file_that_went_missing_is_downloaded_again(
    s3: S3Client, tmp_path: Path
) -> None:
    """/tmp can lose a file (an interrupted cleanup): its checksum sidecar alone is not a
    cached model."""
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST)
    cache = S3ModelCache(tmp_path, s3)
    location = parse_s3_uri(f"s3://{BUCKET}/{KEY}")
    path = cache.fetch(location)
    path.unlink()
    assert cache.fetch(location).read_bytes() == FIRST


def test_downloads_are_read_in_bounded_chunks(s3: S3Client, tmp_path: Path) -> None:
    """A multi-GB model must stream to disk, never be held whole in memory: every read of
    the response body asks for at most 1 MiB (the body is wrapped to see the reads)."""
    import io

    from botocore.response import StreamingBody

    reads: list[int | None] = []

    class Watched(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(size)
            return super().read(size)

    def watch(parsed: dict[str, Any], **_: Any) -> None:
        data = parsed["Body"].read()
        parsed["Body"] = StreamingBody(Watched(data), len(data))

    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=FIRST * 2000)  # ~2.8 MB
    s3.meta.events.register("after-call.s3.GetObject", watch)
    path = S3ModelCache(tmp_path, s3).fetch(parse_s3_uri(f"s3://{BUCKET}/{KEY}"))
    assert path.stat().st_size == len(FIRST) * 2000
    assert reads and all(isinstance(n, int) and 0 < n <= 1024 * 1024 for n in reads), reads
