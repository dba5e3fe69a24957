"""Models from S3 (moto), the /tmp download cache, and Lambda CPU sizing.

In-process `mock_aws` for most tests; one test runs the function module against a
real HTTP S3 endpoint (moto's server on 127.0.0.1), the way a deployed function
talks to S3, and then proves the next cold start reads the cache with S3 gone.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from .conftest import (
    DEMO_MODEL,
    HTTP,
    HTTP_SAM,
    REST_SAM,
    assert_error_reply,
    assert_outputs_match,
    http_event,
    import_function_module,
    invoke,
    json_infer_body,
    ort_reference,
    outputs_from_json,
    reference_rows,
)
from .deployed import use_fake_aws

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-model-registry"
KEY = "wine/model.onnx"
WINE_BYTES = DEMO_MODEL.read_bytes()


def total_model_bytes() -> bytes:
    """A different valid model with the same input: total = sum(features, axis=1)."""
    from onnx import TensorProto, helper

    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 13])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["n"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceSum", ["features", "axes"], ["total"], keepdims=0)
    graph = helper.make_graph([node], "total", [features], [total], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return bytes(model.SerializeToString())


TOTAL_BYTES = total_model_bytes()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing from the host's AWS configuration."""
    use_fake_aws(monkeypatch)


@pytest.fixture
def s3(aws_credentials: None, isolated_cache: Path) -> Iterator[S3Client]:
    with mock_aws():
        yield boto3.client("s3", region_name="us-east-1")


def upload_two_versions(client: S3Client) -> tuple[str, str]:
    """A versioned bucket holding wine.onnx, then a different model, under one key."""
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = client.put_object(Bucket=BUCKET, Key=KEY, Body=WINE_BYTES, ChecksumAlgorithm="SHA256")
    second = client.put_object(Bucket=BUCKET, Key=KEY, Body=TOTAL_BYTES)
    assert first["VersionId"] != second["VersionId"]
    return first["VersionId"], second["VersionId"]


@pytest.fixture
def versions(s3: S3Client) -> tuple[str, str]:
    return upload_two_versions(s3)


def function_for(uri: str, **env: str) -> Any:
    from inferstack.bootstrap import lambda_entry_from_env

    return lambda_entry_from_env(
        {
            "INFERSTACK_MODEL_NAME": "wine",
            "INFERSTACK_MODEL_URI": uri,
            "INFERSTACK_METRICS": "false",
            **env,
        }
    )


def get(handler: Any, path: str) -> Any:
    return invoke(handler, http_event(HTTP_SAM, "GET", path))


def infer(handler: Any, features: np.ndarray, path: str = "/v2/models/wine/infer") -> Any:
    return invoke(handler, http_event(HTTP, "POST", path, body=json_infer_body(features)))


def delete_bucket(client: S3Client) -> None:
    listing = client.list_object_versions(Bucket=BUCKET)
    for item in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"], VersionId=item["VersionId"])
    client.delete_bucket(Bucket=BUCKET)


def cached_model_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob("model.onnx") if p.is_file())


# ----------------------------------------------------------------------- versions


def test_pinned_version_serves_the_first_upload(versions: tuple[str, str]) -> None:
    first, _ = versions
    handler = function_for(f"s3://{BUCKET}/{KEY}?versionId={first}")

    assert get(handler, "/v2/health/ready").status == 200
    meta = get(handler, "/v2/models/wine").json()
    assert meta["versions"] == [first]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]

    features = reference_rows(6, start=20)
    for path in ("/v2/models/wine/infer", f"/v2/models/wine/versions/{first}/infer"):
        reply = infer(handler, features, path)
        assert reply.status == 200, reply.text
        assert reply.json()["model_version"] == first
        assert_outputs_match(outputs_from_json(reply.json()), ort_reference(features))


def test_pinned_second_version_serves_the_other_model(versions: tuple[str, str]) -> None:
    _, second = versions
    handler = function_for(f"s3://{BUCKET}/{KEY}?versionId={second}")
    meta = get(handler, "/v2/models/wine").json()
    assert meta["versions"] == [second]
    assert [o["name"] for o in meta["outputs"]] == ["total"]
    features = reference_rows(4)
    reply = infer(handler, features)
    assert reply.status == 200, reply.text
    (total,) = reply.json()["outputs"]
    np.testing.assert_allclose(total["data"], features.sum(axis=1), rtol=1e-5)


def test_unpinned_uri_serves_the_latest_object(versions: tuple[str, str]) -> None:
    handler = function_for(f"s3://{BUCKET}/{KEY}", INFERSTACK_MODEL_VERSION="2024-06-01")
    meta = get(handler, "/v2/models/wine").json()
    assert meta["versions"] == ["2024-06-01"]
    assert [o["name"] for o in meta["outputs"]] == ["total"]


def test_version_id_as_s3_writes_it(
    s3: S3Client, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real S3 version IDs contain '+' (AWS docs: "3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+...");
    percent-encoded, such an ID must reach S3 unchanged."""
    version_id = "3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"
    upload_with_version_id(s3, monkeypatch, version_id)
    handler = function_for(f"s3://{BUCKET}/{KEY}?versionId={version_id.replace('+', '%2B')}")
    assert get(handler, "/v2/models/wine").json()["versions"] == [version_id]


def test_version_id_pasted_verbatim(
    s3: S3Client, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_id = "3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"
    upload_with_version_id(s3, monkeypatch, version_id)
    handler = function_for(f"s3://{BUCKET}/{KEY}?versionId={version_id}")
    reply = get(handler, "/v2/models/wine")
    assert reply.status == 200, reply.text
    assert reply.json()["versions"] == [version_id]


def upload_with_version_id(client: S3Client, monkeypatch: pytest.MonkeyPatch, vid: str) -> None:
    """Upload wine.onnx to a versioned bucket; moto hands out `vid` as its version ID
    (moto's own IDs are UUIDs, which never hold the '+' that real S3 IDs do)."""
    import moto.s3.models

    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with monkeypatch.context() as patch:
        patch.setattr(moto.s3.models.random, "uuid4", lambda: vid)
        put = client.put_object(Bucket=BUCKET, Key=KEY, Body=WINE_BYTES)
    assert put["VersionId"] == vid


# -------------------------------------------------------------------------- cache


def test_cached_model_is_reused_without_s3(
    s3: S3Client, versions: tuple[str, str], isolated_cache: Path
) -> None:
    first, second = versions
    uri = f"s3://{BUCKET}/{KEY}?versionId={first}"
    assert get(function_for(uri), "/v2/health/ready").status == 200
    (cached,) = cached_model_files(isolated_cache)
    assert cached.read_bytes() == WINE_BYTES

    delete_bucket(s3)  # a second load that asked S3 would now fail
    again = function_for(uri)
    assert get(again, "/v2/health/ready").status == 200
    features = reference_rows(3)
    reply = infer(again, features)
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(features))

    # The cache is per version: the second version was never downloaded.
    other = function_for(f"s3://{BUCKET}/{KEY}?versionId={second}")
    assert_error_reply(
        get(other, "/v2/models/wine/ready"), 503, "NoSuchBucket", local_paths=(isolated_cache,)
    )


def test_unpinned_uri_picks_up_a_new_upload(s3: S3Client, isolated_cache: Path) -> None:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=WINE_BYTES)
    uri = f"s3://{BUCKET}/{KEY}"
    before = get(function_for(uri), "/v2/models/wine").json()
    assert [o["name"] for o in before["outputs"]] == ["label", "probabilities"]

    s3.put_object(Bucket=BUCKET, Key=KEY, Body=TOTAL_BYTES)  # a new model, same key
    after = get(function_for(uri), "/v2/models/wine").json()
    assert [o["name"] for o in after["outputs"]] == ["total"]


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_cache_file_is_downloaded_again(
    versions: tuple[str, str], isolated_cache: Path
) -> None:
    uri = f"s3://{BUCKET}/{KEY}?versionId={versions[0]}"
    assert get(function_for(uri), "/v2/health/ready").status == 200
    (cached,) = cached_model_files(isolated_cache)
    tamper(cached)
    assert hashlib.sha256(cached.read_bytes()).digest() != hashlib.sha256(WINE_BYTES).digest()

    handler = function_for(uri)
    assert get(handler, "/v2/health/ready").status == 200
    assert cached.read_bytes() == WINE_BYTES
    features = reference_rows(5, start=7)
    reply = infer(handler, features)
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(features))


def test_tampered_cache_file_is_never_served(
    s3: S3Client, versions: tuple[str, str], isolated_cache: Path
) -> None:
    """With the cached copy tampered and S3 unable to supply another, the model is not
    ready: a corrupted file is not loaded in its place."""
    uri = f"s3://{BUCKET}/{KEY}?versionId={versions[0]}"
    assert get(function_for(uri), "/v2/health/ready").status == 200
    (cached,) = cached_model_files(isolated_cache)
    tamper(cached)
    delete_bucket(s3)

    handler = function_for(uri)
    assert_error_reply(get(handler, "/v2/health/ready"), 503, "not ready", "wine")
    assert_error_reply(
        get(handler, "/v2/models/wine/ready"), 503, "NoSuchBucket", local_paths=(isolated_cache,)
    )


# ------------------------------------------------------------------ load failures


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (f"s3://{BUCKET}/wine/missing.onnx", "NoSuchKey"),
        (f"s3://{BUCKET}/{KEY}?versionId=0000-not-a-version", "NoSuchVersion"),
        ("s3://acme-no-such-bucket/wine/model.onnx", "NoSuchBucket"),
    ],
    ids=["missing-object", "bad-version-id", "missing-bucket"],
)
def test_missing_model_leaves_the_function_up_but_not_ready(
    versions: tuple[str, str], isolated_cache: Path, uri: str, reason: str
) -> None:
    handler = function_for(uri)

    assert_error_reply(
        get(handler, "/v2/health/ready"), 503, "not ready", "wine", local_paths=(isolated_cache,)
    )
    assert_error_reply(
        get(handler, "/v2/models/wine/ready"), 503, reason, local_paths=(isolated_cache,)
    )
    assert_error_reply(infer(handler, reference_rows(1)), 503, "not ready", reason)
    # The function still answers what does not need the model.
    live = get(handler, "/v2/health/live")
    assert (live.status, live.json()) == (200, {"live": True})
    index = invoke(handler, http_event(REST_SAM, "POST", "/v2/repository/index"))
    assert index.status == 200
    (entry,) = index.json()
    assert (entry["name"], entry["state"]) == ("wine", "UNAVAILABLE")
    assert reason in entry["reason"]
    assert str(isolated_cache) not in index.text
    assert not cached_model_files(isolated_cache)


def test_object_that_is_not_onnx_is_not_ready_without_leaking_the_cache_path(
    s3: S3Client, isolated_cache: Path
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"this is not a protobuf" * 10)
    handler = function_for(f"s3://{BUCKET}/{KEY}")
    message = assert_error_reply(
        get(handler, "/v2/models/wine/ready"),
        503,
        "ONNX Runtime could not load the model",
        local_paths=(isolated_cache,),
    )
    assert "model file" in message
    assert get(handler, "/v2/health/live").status == 200


# ---------------------------------------------------------------- end to end (HTTP)


@pytest.fixture
def moto_server() -> Iterator[ThreadedMotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_function_downloads_over_http_then_cold_starts_from_the_cache(
    aws_credentials: None,
    isolated_cache: Path,
    moto_server: ThreadedMotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = moto_server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    # How a deployed function's boto3 finds S3 here (botocore's service endpoint setting).
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    first, _ = upload_two_versions(boto3.client("s3", endpoint_url=endpoint))
    env = {
        "INFERSTACK_MODEL_NAME": "wine",
        "INFERSTACK_MODEL_URI": f"s3://{BUCKET}/{KEY}?versionId={first}",
        "INFERSTACK_METRICS": "false",
    }
    features = reference_rows(8, start=120)
    expected = ort_reference(features)

    function = import_function_module(monkeypatch, env)
    ready = invoke(function.handler, http_event(HTTP_SAM, "GET", "/v2/health/ready"))
    assert (ready.status, ready.json()) == (200, {"ready": True})
    meta = invoke(function.handler, http_event(REST_SAM, "GET", "/v2/models/wine"))
    assert meta.json()["versions"] == [first]
    reply = infer(function.handler, features)
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), expected)

    # S3 goes away; the next cold start in this execution environment reads /tmp.
    moto_server.stop()
    again = import_function_module(monkeypatch, env)
    reply = infer(again.handler, features)
    assert reply.status == 200, reply.text
    assert json.loads(reply.body)["model_version"] == first
    assert_outputs_match(outputs_from_json(reply.json()), expected)


# -------------------------------------------------------------------- CPU sizing


@pytest.fixture
def eight_core_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that reports 8 cores, so the limits under test are what decides."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)


def cgroup(tmp_path: Path, cpu_max: str | None) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    return root


@pytest.mark.parametrize(
    ("memory_mb", "expected"),
    [("128", 1), ("1769", 1), ("3008", 2), ("5307", 3), ("10240", 6)],
)
def test_lambda_memory_sets_the_cpu_count(
    eight_core_host: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    memory_mb: str,
    expected: int,
) -> None:
    from inferstack.models.cpus import available_cpus

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    assert available_cpus(cgroup(tmp_path, None)) == expected


@pytest.mark.parametrize(
    ("cpu_max", "quota", "expected"),
    [
        ("150000 100000", 2, 2),
        ("50000 100000", 1, 1),
        ("400000 100000", 4, 4),
        ("max 100000", None, 8),
        (None, None, 8),
        ("garbage", None, 8),
    ],
)
def test_cgroup_quota_limits_the_cpu_count(
    eight_core_host: None, tmp_path: Path, cpu_max: str | None, quota: int | None, expected: int
) -> None:
    from inferstack.models.cpus import available_cpus, cgroup_cpu_quota

    root = cgroup(tmp_path, cpu_max)
    assert cgroup_cpu_quota(root) == quota
    assert available_cpus(root) == expected


def test_cgroup_v1_quota(eight_core_host: None, tmp_path: Path) -> None:
    from inferstack.models.cpus import available_cpus

    root = cgroup(tmp_path, None)
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(root) == 3
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(root) == 8


def test_smallest_limit_wins(
    eight_core_host: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferstack.models.cpus import available_cpus

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    assert available_cpus(cgroup(tmp_path, "150000 100000")) == 2


def test_a_1769_mb_function_runs_onnx_runtime_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inferstack.models import OnnxModel

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
    monkeypatch.delenv("INFERSTACK_INTRA_OP_THREADS", raising=False)
    model = OnnxModel("wine", DEMO_MODEL)
    model.load()
    try:
        options = model._session.get_session_options()  # what ORT was given
        assert options.intra_op_num_threads == 1
    finally:
        model.close()
