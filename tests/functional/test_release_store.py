"""The release store against S3: ordered ids, immutable manifests and artifacts, status
history, the live pointer's compare-and-swap, duplicate and crashed deliveries, rollback.

Real boto3 clients against moto: in-process `mock_aws` for one caller at a time, and
moto's HTTP server on 127.0.0.1 where threads race (each with its own client, as two
Lambda invocations would be).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from inferstack.release.exceptions import ReleaseConflict, ReleaseError, ReleaseNotFound
from inferstack.release.records import ArtifactRef, SourceObject, SourceOutcome
from inferstack.release.store import ReleaseStore, parse_upload_key, source_identity

from .conftest import DEMO_MODEL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

BUCKET = "acme-releases"
WINE = DEMO_MODEL.read_bytes()
WINE_SHA = hashlib.sha256(WINE).hexdigest()
CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """Time as the store sees it, moved by the test (claims go stale with time)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3(aws: None) -> Iterator[S3Client]:
    with mock_aws():
        client = boto3.client("s3", **CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(s3: S3Client, clock: Clock) -> ReleaseStore:
    return ReleaseStore(s3, BUCKET, clock=clock)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def server_clients(aws: None, endpoint: str) -> Callable[[], Any]:
    """A fresh bucket on moto's server, and a factory of independent clients for it."""
    bucket = f"race-{uuid.uuid4().hex}"
    boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=bucket)

    def new_store() -> ReleaseStore:
        return ReleaseStore(boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS), bucket)

    return new_store


def race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run the workers at once; each result is a return value or the exception raised."""
    start = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = workers[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def upload(s3: S3Client, key: str, body: bytes, bucket: str = BUCKET) -> SourceObject:
    """A user's upload, and the source an "Object Created" event would name."""
    response = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return SourceObject(bucket, key, response.get("VersionId"), response["ETag"].strip('"'))


def fields(source: SourceObject, sha: str = WINE_SHA, model: str = "wine") -> dict[str, Any]:
    """A manifest as the promoter writes it after the gate passed."""
    artifact = ArtifactRef(BUCKET, f"models/{model}/{sha}/model.onnx", None, sha, 1234)
    return {
        "artifact": artifact.to_json(),
        "files": [],
        "source": source.to_json(),
        "created_by": "alice",
        "signature": {"inputs": [], "outputs": []},
        "validation": {"passed": True, "checks": [], "p50_ms": 1.5},
        "reference": None,
        "baseline": None,
        "settings": {},
        "allow_signature_change": False,
    }


def source(n: int, model: str = "wine") -> SourceObject:
    return SourceObject(BUCKET, f"uploads/{model}/model.onnx", f"v{n}", f"etag{n}")


def make_releases(store: ReleaseStore, count: int, model: str = "wine") -> list[str]:
    return [store.create_release(model, fields(source(n, model))).release for n in range(count)]


# ---------------------------------------------------------------- upload keys and identity


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("uploads/wine/model.onnx", ("wine", "model.onnx")),
        ("uploads/wine-v2/bundle.tar.gz", ("wine-v2", "bundle.tar.gz")),
        ("uploads/wine/model.txt", None),  # not a model or bundle
        ("uploads/wine/.onnx", None),  # a suffix alone
        ("uploads/wine/sub/model.onnx", None),  # nested
        ("uploads/-wine/model.onnx", None),  # not a valid model name
        ("models/wine/model.onnx", None),  # outside the trigger prefix
        ("uploads/model.onnx", None),  # no model folder
    ],
)
def test_only_model_uploads_under_uploads_name_a_model(
    key: str, expected: tuple[str, str] | None
) -> None:
    assert parse_upload_key(key) == expected


def test_one_upload_has_one_identity_whatever_event_delivers_it() -> None:
    versioned = source_identity(BUCKET, "uploads/wine/model.onnx", "v1", '"abc"')
    assert versioned == source_identity(BUCKET, "uploads/wine/model.onnx", "v1", "other")
    assert versioned != source_identity(BUCKET, "uploads/wine/model.onnx", "v2", '"abc"')
    # No version id (unversioned bucket, or the event left it out): the ETag, quoted or not.
    by_etag = source_identity(BUCKET, "uploads/wine/model.onnx", None, '"abc"')
    assert by_etag == source_identity(BUCKET, "uploads/wine/model.onnx", None, "abc")
    assert by_etag != source_identity(BUCKET, "uploads/wine/model.onnx", None, "abd")
    with pytest.raises(ReleaseError, match="neither a version id nor an ETag"):
        source_identity(BUCKET, "uploads/wine/model.onnx", None, None)


# ---------------------------------------------------------------- releases


def test_release_ids_count_up_per_model_in_numeric_order(store: ReleaseStore) -> None:
    assert make_releases(store, 11) == [str(n) for n in range(1, 12)]
    assert make_releases(store, 2, model="iris") == ["1", "2"]
    store.record_rejection("beer", source(0, "beer"), {"failed": "onnx.checker"})

    listed = store.releases("wine")
    assert [r.release for r in listed] == [str(n) for n in range(1, 12)]  # 10 after 9
    assert listed[9].source == source(9)
    assert listed[0].created_at == "2026-01-01T12:00:00.000Z"
    assert store.models() == ["beer", "iris", "wine"]
    assert store.releases("beer") == []


def test_concurrent_creators_get_distinct_ids_and_keep_their_manifests(
    server_clients: Callable[[], ReleaseStore],
) -> None:
    stores = [server_clients() for _ in range(6)]
    results = race(
        [lambda s=s, n=n: s.create_release("wine", fields(source(n))) for n, s in enumerate(stores)]
    )

    ids = sorted(int(r.release) for r in results)
    assert ids == [1, 2, 3, 4, 5, 6]
    # Nobody's manifest was overwritten by a creator that chose the same id.
    for n, created in enumerate(results):
        assert stores[0].get_release("wine", created.release).source == source(n)


def test_a_release_is_found_or_named_missing(store: ReleaseStore) -> None:
    make_releases(store, 1)
    assert store.get_release("wine", "1").artifact.sha256 == WINE_SHA
    with pytest.raises(ReleaseNotFound, match="no release 2"):
        store.get_release("wine", "2")
    with pytest.raises(ReleaseNotFound, match="not a release id"):
        store.get_release("wine", "01")
    with pytest.raises(ReleaseError, match="model name"):
        store.create_release("../wine", fields(source(0)))


# ---------------------------------------------------------------- duplicate deliveries


def test_a_duplicate_event_gets_the_first_outcome_and_makes_no_release(
    store: ReleaseStore, s3: S3Client
) -> None:
    uploaded = upload(s3, "uploads/wine/model.onnx", WINE)
    claim = store.claim_source("wine", uploaded, stale_after_s=900)
    assert not isinstance(claim, SourceOutcome)
    release = store.create_release("wine", fields(uploaded))
    store.settle_source(claim, SourceOutcome("release", release.release))

    again = store.claim_source("wine", uploaded, stale_after_s=900)
    assert again == SourceOutcome("release", "1")
    assert [r.release for r in store.releases("wine")] == ["1"]

    # The same key uploaded again is another upload (another version): a new claim.
    second = upload(s3, "uploads/wine/model.onnx", WINE + b"\0")
    assert not isinstance(store.claim_source("wine", second, stale_after_s=900), SourceOutcome)


def test_a_claim_in_progress_is_left_alone_until_stale_then_taken_over(
    store: ReleaseStore, clock: Clock
) -> None:
    uploaded = source(1)
    first = store.claim_source("wine", uploaded, stale_after_s=900)
    assert not isinstance(first, SourceOutcome)
    made = store.create_release("wine", fields(uploaded))  # ...and then the invocation died

    clock.now = T0 + timedelta(seconds=60)
    with pytest.raises(ReleaseConflict, match="another invocation"):
        store.claim_source("wine", uploaded, stale_after_s=900)

    clock.now = T0 + timedelta(seconds=901)
    second = store.claim_source("wine", uploaded, stale_after_s=900)
    assert not isinstance(second, SourceOutcome)
    assert second.taken_over
    assert store.release_for_source("wine", uploaded.identity) == made  # resume, not redo
    # The slow first invocation can no longer record an outcome over the new owner's.
    with pytest.raises(ReleaseConflict, match="taken over"):
        store.settle_source(first, SourceOutcome("release", "1"))
    store.settle_source(second, SourceOutcome("release", made.release))
    assert store.claim_source("wine", uploaded, stale_after_s=900) == SourceOutcome("release", "1")


def test_unversioned_bucket_uploads_are_told_apart_by_etag(aws: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", **CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        store = ReleaseStore(s3, BUCKET)
        first = upload(s3, "uploads/wine/model.onnx", WINE)
        assert first.version_id is None
        claim = store.claim_source("wine", first, stale_after_s=900)
        assert not isinstance(claim, SourceOutcome)
        store.settle_source(claim, SourceOutcome("unchanged", "1", "same bytes as live"))

        # The same bytes again: the same ETag, so a duplicate; other bytes: a new upload.
        same = upload(s3, "uploads/wine/model.onnx", WINE)
        assert store.claim_source("wine", same, stale_after_s=900) == SourceOutcome(
            "unchanged", "1", "same bytes as live"
        )
        other = upload(s3, "uploads/wine/model.onnx", WINE + b"\0")
        assert not isinstance(store.claim_source("wine", other, stale_after_s=900), SourceOutcome)

        ref = store.put_artifact("wine", WINE_SHA, "model.onnx", DEMO_MODEL)
        assert ref.version_id is None
        assert store.put_artifact("wine", WINE_SHA, "model.onnx", DEMO_MODEL) == ref


def test_a_rejection_is_recorded_once(store: ReleaseStore, clock: Clock) -> None:
    store.record_rejection("wine", source(1), {"check": "opset", "detail": "opset 99"})
    clock.now = T0 + timedelta(seconds=5)
    store.record_rejection("wine", source(1), {"check": "opset", "detail": "retried"})
    store.record_rejection("wine", source(2), {"check": "size", "detail": "too big"})

    found = store.rejections("wine")
    assert [(r.source, r.report["detail"]) for r in found] == [
        (source(1), "opset 99"),
        (source(2), "too big"),
    ]


# ---------------------------------------------------------------- artifacts


def test_artifacts_are_content_addressed_checksummed_and_reused(
    store: ReleaseStore, s3: S3Client, tmp_path: Path
) -> None:
    ref = store.put_artifact("wine", WINE_SHA, "model.onnx", DEMO_MODEL)
    assert ref.key == f"models/wine/{WINE_SHA}/model.onnx"
    assert (ref.sha256, ref.size) == (WINE_SHA, len(WINE))
    head = s3.head_object(Bucket=BUCKET, Key=ref.key, ChecksumMode="ENABLED")
    assert head["VersionId"] == ref.version_id
    assert "ChecksumSHA256" in head

    assert store.put_artifact("wine", WINE_SHA, "model.onnx", DEMO_MODEL) == ref
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=ref.key)["Versions"]
    assert len(versions) == 1  # reused, not rewritten

    # Other bytes at an address already taken: refused, and the artifact is unchanged.
    impostor = tmp_path / "model.onnx"
    impostor.write_bytes(WINE + b"\0")
    with pytest.raises(ReleaseConflict, match="other bytes"):
        store.put_artifact("wine", WINE_SHA, "model.onnx", impostor)
    body = s3.get_object(Bucket=BUCKET, Key=ref.key)["Body"].read()
    assert body == WINE
    with pytest.raises(ReleaseError, match="relative path"):
        store.put_artifact("wine", WINE_SHA, "../model.onnx", DEMO_MODEL)


def test_large_artifacts_go_up_in_parts(s3: S3Client, tmp_path: Path) -> None:
    store = ReleaseStore(s3, BUCKET, multipart_threshold=5 * 2**20, part_size=5 * 2**20)
    big = tmp_path / "model.onnx.data"
    payload = bytes(range(256)) * (11 * 2**20 // 256)  # 11 MiB: three parts
    big.write_bytes(payload)

    ref = store.put_artifact("wine", WINE_SHA, big.name, big)
    assert ref.sha256 == hashlib.sha256(payload).hexdigest()
    assert s3.head_object(Bucket=BUCKET, Key=ref.key, PartNumber=1)["PartsCount"] == 3
    assert s3.get_object(Bucket=BUCKET, Key=ref.key)["Body"].read() == payload
    assert store.put_artifact("wine", WINE_SHA, big.name, big) == ref
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


# ---------------------------------------------------------------- status history


def test_status_history_keeps_every_entry_in_order(store: ReleaseStore, s3: S3Client) -> None:
    make_releases(store, 1)
    assert store.state("wine", "1") is None
    for state in ("validated", "rolling_out", "failed"):
        store.append_status("wine", "1", state, reason=f"now {state}", detail={"target": "lambda"})

    history = store.history("wine", "1")
    assert [(e.seq, e.state, e.reason) for e in history] == [
        (1, "validated", "now validated"),
        (2, "rolling_out", "now rolling_out"),
        (3, "failed", "now failed"),
    ]
    assert store.state("wine", "1") == history[-1]
    assert store.releases("wine")[0].state == history[-1]
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="releases/wine/1/status/")["Contents"]
    ]
    assert keys == [f"releases/wine/1/status/000{n}.json" for n in (1, 2, 3)]

    with pytest.raises(ReleaseNotFound):
        store.append_status("wine", "2", "validated")
    with pytest.raises(ReleaseError, match="unknown state"):
        store.append_status("wine", "1", "deployed")  # type: ignore[arg-type]


def test_concurrent_status_entries_are_all_kept(
    server_clients: Callable[[], ReleaseStore],
) -> None:
    stores = [server_clients() for _ in range(4)]
    stores[0].create_release("wine", fields(source(0)))
    race(
        [
            lambda s=s, n=n: s.append_status("wine", "1", "rolling_out", reason=f"w{n}")
            for n, s in enumerate(stores)
        ]
    )

    history = stores[0].history("wine", "1")
    assert [e.seq for e in history] == [1, 2, 3, 4]
    assert sorted(e.reason or "" for e in history) == ["w0", "w1", "w2", "w3"]


# ---------------------------------------------------------------- the live pointer


def test_the_pointer_moves_only_from_what_was_read(store: ReleaseStore) -> None:
    make_releases(store, 3)
    assert store.live("wine") is None
    first = store.set_live("wine", "1", by="alice", action="promote", reason=None, expected=None)
    assert store.live("wine") == first
    assert first.artifact == store.get_release("wine", "1").artifact

    second = store.set_live("wine", "2", by="bob", action="promote", reason="v2", expected=first)
    # A writer still holding the first pointer (or none at all) loses, and changes nothing.
    with pytest.raises(ReleaseConflict, match="changed while moving it to 3"):
        store.set_live("wine", "3", by="carol", action="promote", reason=None, expected=first)
    with pytest.raises(ReleaseConflict):
        store.set_live("wine", "3", by="carol", action="promote", reason=None, expected=None)
    assert store.live("wine") == second
    assert [(e.release, e.by, e.action) for e in second.history] == [
        ("1", "alice", "promote"),
        ("2", "bob", "promote"),
    ]
    with pytest.raises(ReleaseNotFound):
        store.set_live("wine", "9", by="x", action="promote", reason=None, expected=second)


@pytest.mark.parametrize("existing", [False, True], ids=["first-pointer", "moving-pointer"])
def test_two_concurrent_promotions_cannot_both_win(
    server_clients: Callable[[], ReleaseStore], existing: bool
) -> None:
    stores = [server_clients() for _ in range(2)]
    make_releases(stores[0], 3)
    if existing:
        stores[0].set_live("wine", "1", by="ops", action="promote", reason=None, expected=None)
    read = [s.live("wine") for s in stores]  # both read the same pointer, then both write
    results = race(
        [
            lambda: stores[0].set_live(
                "wine", "2", by="a", action="promote", reason=None, expected=read[0]
            ),
            lambda: stores[1].set_live(
                "wine", "3", by="b", action="promote", reason=None, expected=read[1]
            ),
        ]
    )

    losers = [r for r in results if isinstance(r, ReleaseConflict)]
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert len(losers) == 1, results
    assert stores[0].live("wine") == winners[0]


def test_uploading_the_live_bytes_again_changes_nothing(store: ReleaseStore) -> None:
    ref = store.put_artifact("wine", WINE_SHA, "model.onnx", DEMO_MODEL)
    assert not store.is_live_content("wine", WINE_SHA)
    made = store.create_release("wine", {**fields(source(1)), "artifact": ref.to_json()})
    store.set_live("wine", made.release, by="a", action="promote", reason=None, expected=None)
    assert store.is_live_content("wine", WINE_SHA)
    assert not store.is_live_content("wine", "0" * 64)


# ---------------------------------------------------------------- rollback


def promote(store: ReleaseStore, release: str, action: str = "promote") -> None:
    store.set_live(
        "wine",
        release,
        by="ops",
        action=action,
        reason=None,  # type: ignore[arg-type]
        expected=store.live("wine"),
    )


def test_rollback_goes_to_the_release_live_before(store: ReleaseStore) -> None:
    make_releases(store, 4)
    with pytest.raises(ReleaseNotFound, match="no live release"):
        store.rollback_target("wine")
    promote(store, "1")
    with pytest.raises(ReleaseNotFound, match="--to"):
        store.rollback_target("wine")
    promote(store, "2")
    promote(store, "3")  # 4 was never live
    assert store.rollback_target("wine").release == "2"

    # Roll back to 2 and mark 3: the next rollback skips 3 and goes to 1.
    store.append_status("wine", "3", "rolled_back", reason="errors")
    promote(store, "2", action="rollback")
    assert store.rollback_target("wine").release == "1"


def test_rollback_to_a_named_release(store: ReleaseStore) -> None:
    make_releases(store, 2)
    unvalidated = {**fields(source(9)), "validation": {"passed": False, "checks": []}}
    store.create_release("wine", unvalidated)
    promote(store, "2")

    assert store.rollback_target("wine", to="1").release == "1"
    with pytest.raises(ReleaseNotFound, match="no release 7"):
        store.rollback_target("wine", to="7")
    with pytest.raises(ReleaseNotFound, match="never passed validation"):
        store.rollback_target("wine", to="3")
    with pytest.raises(ReleaseNotFound, match="live already"):
        store.rollback_target("wine", to="2")
