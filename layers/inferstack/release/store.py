"""Releases in one S3 bucket: manifests, status history, the live pointer, and the
idempotency markers that make each upload one release however often its event arrives.

Writes that must not be lost to a concurrent writer are conditional (s3json.py): manifests,
status entries, artifacts and markers are created with If-None-Match "*"; the live pointer
and a stale claim are replaced with If-Match on the ETag read.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from inferstack.names import (
    RELEASES_PREFIX,
    UPLOADS_PREFIX,
    live_pointer_key,
    manifest_key,
    model_name_problem,
)
from inferstack.release.artifacts import ArtifactWriter, MiB, artifact_key
from inferstack.release.exceptions import ReleaseConflict, ReleaseError, ReleaseNotFound
from inferstack.release.records import (
    JSON,
    STATES,
    Action,
    ArtifactRef,
    Claim,
    LivePointer,
    PointerEntry,
    Rejection,
    Release,
    RolloutLock,
    SourceObject,
    SourceOutcome,
    State,
    StatusEntry,
    parse_iso,
    source_identity,
    utc_iso,
)
from inferstack.release.s3json import S3Json

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

__all__ = ["ReleaseStore", "parse_upload_key", "source_identity"]

UPLOAD_SUFFIXES: Final = (".onnx", ".tar.gz")
HISTORY_LIMIT: Final = 200  # pointer moves kept in live.json (status histories keep all)
_ATTEMPTS: Final = 64  # conditional-create retries before giving up


def parse_upload_key(key: str) -> tuple[str, str] | None:
    """(model, filename) for uploads/<model>/<file>.onnx|.tar.gz, else None."""
    parts = key.split("/")
    if len(parts) != 3 or f"{parts[0]}/" != UPLOADS_PREFIX:
        return None
    model, filename = parts[1], parts[2]
    if model_name_problem(model) is not None:
        return None
    if not any(filename.endswith(s) and len(filename) > len(s) for s in UPLOAD_SUFFIXES):
        return None
    return model, filename


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_model(model: str) -> None:
    if problem := model_name_problem(model):
        raise ReleaseError(problem)


def _sequence(sequencer: object) -> str:
    """A sequencer comparable as a string: S3's hex, left-padded to a fixed width."""
    return str(sequencer or "").lower().rjust(64, "0")


def _release_number(text: str) -> int | None:
    """The id as an int when `text` is a canonical one ("1", "2", ...), else None."""
    return int(text) if text.isdigit() and str(int(text)) == text and text != "0" else None


class ReleaseStore:
    """The release records of one bucket. Pass a boto3 S3 client; `clock` is for tests."""

    def __init__(
        self,
        s3_client: S3Client,
        bucket: str,
        *,
        clock: Callable[[], datetime] = _utc_now,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
    ) -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self._json = S3Json(s3_client, bucket)
        self._artifacts = ArtifactWriter(
            s3_client, bucket, multipart_threshold=multipart_threshold, part_size=part_size
        )
        self._clock = clock

    def _now(self) -> str:
        return utc_iso(self._clock())

    # ------------------------------------------------------------------ keys
    @staticmethod
    def _model_prefix(model: str) -> str:
        return f"{RELEASES_PREFIX}{model}/"

    def _status_prefix(self, model: str, release: str) -> str:
        return f"{self._model_prefix(model)}{release}/status/"

    def _source_key(self, model: str, identity: str) -> str:
        return f"{self._model_prefix(model)}sources/{identity}.json"

    def _rejection_key(self, model: str, identity: str) -> str:
        return f"{self._model_prefix(model)}rejected/{identity}.json"

    # ------------------------------------------------------------------ uploads (idempotency)
    def claim_source(
        self, model: str, source: SourceObject, *, stale_after_s: float
    ) -> Claim | SourceOutcome:
        """Own this upload, or learn what became of it.

        Returns a Claim for the first delivery of an upload's event, and the recorded
        SourceOutcome for a duplicate. A claim older than `stale_after_s` (the promoter's
        time limit) that was never settled belonged to an invocation that died: it is taken
        over. A fresh unsettled claim raises ReleaseConflict (another invocation is on it).
        """
        _check_model(model)
        key = self._source_key(model, source.identity)
        for _ in range(_ATTEMPTS):
            now = self._clock()
            claimed_at = utc_iso(now)
            marker = {
                "identity": source.identity,
                "source": source.to_json(),
                "claimed_at": claimed_at,
                "outcome": None,
                "settled_at": None,
            }
            try:
                etag = self._json.put(key, marker)
                return Claim(model, source, claimed_at, etag)
            except ReleaseConflict:
                pass
            found = self._json.get(key)
            if found is None:
                continue  # removed meanwhile: try to create it again
            data, etag = found
            if data.get("outcome"):
                return SourceOutcome.from_json(data["outcome"], key)
            held_since = str(data.get("claimed_at", ""))
            age = (now - parse_iso(held_since)).total_seconds()
            if age < stale_after_s:
                raise ReleaseConflict(
                    f"upload s3://{source.bucket}/{source.key} is being released by another "
                    f"invocation since {held_since}; it is taken over after {stale_after_s:g} s"
                )
            try:
                etag = self._json.put(key, marker, if_match=etag)
            except ReleaseConflict:
                continue  # settled or taken over meanwhile: look again
            return Claim(model, source, claimed_at, etag, taken_over=True)
        raise ReleaseConflict(f"could not claim s3://{source.bucket}/{source.key}")

    def settle_source(self, claim: Claim, outcome: SourceOutcome) -> SourceOutcome:
        """Record what the claimed upload became; later duplicates get this outcome."""
        marker = {
            "identity": claim.identity,
            "source": claim.source.to_json(),
            "claimed_at": claim.claimed_at,
            "outcome": outcome.to_json(),
            "settled_at": self._now(),
        }
        key = self._source_key(claim.model, claim.identity)
        try:
            self._json.put(key, marker, if_match=claim.etag)
        except ReleaseConflict as exc:
            raise ReleaseConflict(
                f"the claim on s3://{claim.source.bucket}/{claim.source.key} was taken over "
                "by another invocation (this one ran past the stale bound)"
            ) from exc
        return outcome

    def source_outcome(self, model: str, identity: str) -> SourceOutcome | None:
        """What became of an upload (None while nobody has settled it yet): read-only."""
        found = self._json.get(self._source_key(model, identity))
        if found is None or not found[0].get("outcome"):
            return None
        return SourceOutcome.from_json(found[0]["outcome"], self._source_key(model, identity))

    def rollout_in_progress(self, model: str) -> JSON | None:
        """The model's held rollout slot ({"release", "action", "since"}), or None."""
        found = self._json.get(f"{self._model_prefix(model)}rollout.json")
        return None if found is None or found[0].get("done") else found[0]

    def newest_upload_of_key(self, model: str, source: SourceObject) -> bool:
        """Record `source` as its key's newest upload; False when a newer one was seen.

        S3 events may arrive out of order; for one key, the event's `sequencer` orders them:
        compare the hex strings after padding the shorter with leading zeros
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
        An event without a sequencer is taken as the newest.
        """
        if not source.sequencer:
            return True
        digest = hashlib.sha256(f"{source.bucket}/{source.key}".encode()).hexdigest()[:32]
        key = f"{self._model_prefix(model)}keys/{digest}.json"
        for _ in range(_ATTEMPTS):
            found = self._json.get(key)
            if found is not None and _sequence(found[0].get("sequencer")) > _sequence(
                source.sequencer
            ):
                return False
            body = {"key": source.key, "sequencer": source.sequencer, "at": self._now()}
            try:
                self._json.put(key, body, if_match=found[1] if found else None)
                return True
            except ReleaseConflict:
                continue  # another event of this key got there first: compare again
        raise ReleaseConflict(f"could not order the events of s3://{source.bucket}/{source.key}")

    def release_for_source(self, model: str, identity: str) -> Release | None:
        """The release already made from this upload (after taking over a stale claim)."""
        for release in self._release_ids(model):
            found = self.get_release(model, release)
            if found.source is not None and found.source.identity == identity:
                return found
        return None

    def record_rejection(self, model: str, source: SourceObject, report: JSON) -> Rejection:
        """Keep why an upload was refused; a duplicate keeps the first record."""
        _check_model(model)
        rejection = Rejection(source.identity, source, report, self._now())
        key = self._rejection_key(model, source.identity)
        try:
            self._json.put(key, rejection.to_json())
        except ReleaseConflict:
            found = self._json.get(key)
            if found is not None:
                return Rejection.from_json(found[0], key)
        return rejection

    def rejections(self, model: str) -> list[Rejection]:
        """Refused uploads, oldest first."""
        found = []
        for key in self._json.keys(f"{self._model_prefix(model)}rejected/"):
            record = self._json.get(key)
            if record is not None:
                found.append(Rejection.from_json(record[0], key))
        return sorted(found, key=lambda r: r.at)

    # ------------------------------------------------------------------ artifacts
    def put_artifact(self, model: str, sha256: str, name: str, path: Path) -> ArtifactRef:
        """Store `path` at models/<model>/<sha256>/<name>, once.

        An object already at that address is reused when it holds the same bytes; other
        bytes there raise ReleaseConflict (the address promised them to another upload).
        """
        _check_model(model)
        return self._artifacts.put(artifact_key(model, sha256, name), path)

    # ------------------------------------------------------------------ releases
    def _release_ids(self, model: str) -> list[str]:
        """The model's release ids in order ("1", "2", ...)."""
        numbers = (_release_number(p) for p in self._json.folders(self._model_prefix(model)))
        return [str(n) for n in sorted(n for n in numbers if n is not None)]

    def create_release(self, model: str, manifest_fields: JSON) -> Release:
        """Write the next release's manifest; a concurrent creator makes us take the next id."""
        _check_model(model)
        artifact = manifest_fields.get("artifact")
        if not isinstance(artifact, dict) or not {"key", "sha256"} <= artifact.keys():
            raise ReleaseError("a release needs its artifact (key and sha256)")
        existing = self._release_ids(model)
        number = int(existing[-1]) + 1 if existing else 1
        for _ in range(_ATTEMPTS):
            release = str(number)
            manifest = {
                **manifest_fields,
                "model": model,
                "release": release,
                "created_at": self._now(),
            }
            try:
                self._json.put(manifest_key(model, release), manifest)
            except ReleaseConflict:
                number += 1  # another creator took this id
                continue
            return Release(model, release, manifest)
        raise ReleaseConflict(f"could not allocate a release id for {model!r}")

    def get_release(self, model: str, release: str) -> Release:
        _check_model(model)
        if _release_number(release) is None:
            raise ReleaseNotFound(f"{release!r} is not a release id (1, 2, ...)")
        found = self._json.get(manifest_key(model, release))
        if found is None:
            raise ReleaseNotFound(f"model {model!r} has no release {release}")
        return Release(model, release, found[0])

    def releases(self, model: str) -> list[Release]:
        """Every release of `model`, oldest first, each with its latest status."""
        _check_model(model)
        return [
            Release(model, r, self.get_release(model, r).manifest, self.state(model, r))
            for r in self._release_ids(model)
        ]

    def models(self) -> list[str]:
        """Models with any release record (releases, rejections or markers)."""
        return sorted(
            m for m in self._json.folders(RELEASES_PREFIX) if model_name_problem(m) is None
        )

    # ------------------------------------------------------------------ status history
    def _status_seqs(self, model: str, release: str) -> list[tuple[int, str]]:
        prefix = self._status_prefix(model, release)
        seqs = []
        for key in self._json.keys(prefix):
            stem = key[len(prefix) :].removesuffix(".json")
            if stem.isdigit():
                seqs.append((int(stem), key))
        return sorted(seqs)

    def append_status(
        self,
        model: str,
        release: str,
        state: State,
        reason: str | None = None,
        detail: JSON | None = None,
    ) -> StatusEntry:
        """Add the next entry to the release's history; never rewrites an earlier one."""
        if state not in STATES:
            raise ReleaseError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        self.get_release(model, release)  # no history for a release that does not exist
        seqs = self._status_seqs(model, release)
        seq = seqs[-1][0] + 1 if seqs else 1
        for _ in range(_ATTEMPTS):
            entry = StatusEntry(seq, state, self._now(), reason, detail or {})
            try:
                self._json.put(
                    f"{self._status_prefix(model, release)}{seq:04d}.json", entry.to_json()
                )
            except ReleaseConflict:
                seq += 1
                continue
            return entry
        raise ReleaseConflict(f"could not append to release {release}'s history")

    def history(self, model: str, release: str) -> list[StatusEntry]:
        """The release's status entries, oldest first."""
        entries = []
        for seq, key in self._status_seqs(model, release):
            found = self._json.get(key)
            if found is not None:
                entries.append(StatusEntry.from_json(seq, found[0], key))
        return entries

    def state(self, model: str, release: str) -> StatusEntry | None:
        """The latest status entry, or None before the first."""
        for seq, key in reversed(self._status_seqs(model, release)):
            found = self._json.get(key)
            if found is not None:
                return StatusEntry.from_json(seq, found[0], key)
        return None

    # ------------------------------------------------------------------ live pointer
    def live(self, model: str) -> LivePointer | None:
        _check_model(model)
        key = live_pointer_key(model)
        found = self._json.get(key)
        return None if found is None else LivePointer.from_json(found[0], found[1], key)

    def set_live(
        self,
        model: str,
        release: str,
        *,
        by: str,
        action: Action,
        reason: str | None,
        expected: LivePointer | None,
    ) -> LivePointer:
        """Point `model` at `release`, if the pointer is still `expected` (compare-and-swap).

        `expected` is what `live()` returned (None: there was no pointer). A concurrent
        move in between raises ReleaseConflict and changes nothing: read again and decide.
        """
        target = self.get_release(model, release)
        now = self._now()
        history = (
            *(expected.history if expected else ()),
            PointerEntry(release, now, by, action, reason),
        )
        pointer = LivePointer(model, release, target.artifact, now, history[-HISTORY_LIMIT:], "")
        key = live_pointer_key(model)
        try:
            etag = self._json.put(
                key, pointer.to_json(), if_match=expected.etag if expected else None
            )
        except ReleaseConflict as exc:
            raise ReleaseConflict(
                f"the live release of {model!r} changed while moving it to {release}; "
                "read it again and retry"
            ) from exc
        return LivePointer(model, release, target.artifact, now, pointer.history, etag)

    def begin_rollout(
        self,
        model: str,
        release: str,
        action: Action,
        *,
        stale_after_s: float,
        owner: str | None = None,
    ) -> RolloutLock:
        """Hold the model's one rollout slot (releases/<model>/rollout.json) for `release`.

        One rollout per model at a time: a second promotion while one is under way raises
        ReleaseConflict naming it. A slot held longer than `stale_after_s` (longer than any
        rollout may take) belonged to one that died and is taken over.
        """
        key = f"{self._model_prefix(model)}rollout.json"
        now = self._clock()
        held = {
            "release": release,
            "action": action,
            "since": utc_iso(now),
            "done": False,
            "owner": owner,
        }
        found = self._json.get(key)
        if found is not None:
            current, etag = found
            if owner and not current.get("done") and current.get("owner") == owner:
                return RolloutLock(model, release, key, etag)  # a retry of the same start
            age = (now - parse_iso(str(current.get("since")))).total_seconds()
            if not current.get("done") and age < stale_after_s:
                raise ReleaseConflict(
                    f"a {current.get('action')} of {model!r} to release "
                    f"{current.get('release')} is under way since {current.get('since')}"
                )
        etag = self._json.put(key, held, if_match=found[1] if found else None)
        return RolloutLock(model, release, key, etag)

    def end_rollout(self, lock: RolloutLock, outcome: str) -> None:
        """Free the slot (if this rollout still holds it), saying how it ended."""
        found = self._json.get(lock.key)
        if found is None or found[0].get("release") != lock.release or found[0].get("done"):
            return
        body = {**found[0], "done": True, "outcome": outcome, "ended": self._now()}
        # A conflict: taken over meanwhile, the slot is someone else's now.
        with contextlib.suppress(ReleaseConflict):
            self._json.put(lock.key, body, if_match=found[1])

    def is_live_content(self, model: str, sha256: str) -> bool:
        """An upload with these model bytes would change nothing: they are live already."""
        pointer = self.live(model)
        return pointer is not None and pointer.artifact.sha256 == sha256

    def rollback_target(self, model: str, to: str | None = None) -> Release:
        """The release a rollback moves to.

        With `to`: that release, which must exist and have passed validation. Without: the
        release that was live before the current one, per the pointer's history, skipping
        the current release and releases since marked failed or rolled back.
        """
        pointer = self.live(model)
        if to is not None:
            target = self.get_release(model, to)
            if not target.validated:
                raise ReleaseNotFound(f"release {to} of {model!r} never passed validation")
            if pointer is not None and pointer.release == to:
                raise ReleaseNotFound(f"release {to} of {model!r} is live already")
            return target
        if pointer is None:
            raise ReleaseNotFound(f"model {model!r} has no live release to roll back from")
        seen = {pointer.release}
        for entry in reversed(pointer.history):
            if entry.release in seen:
                continue
            seen.add(entry.release)
            state = self.state(model, entry.release)
            if state is not None and state.state in ("failed", "rolled_back"):
                continue
            return self.get_release(model, entry.release)
        raise ReleaseNotFound(
            f"model {model!r} has no earlier live release to roll back to "
            f"(release {pointer.release} is the only one that served); use --to RELEASE"
        )
