"""The JSON records the release store keeps in S3, as typed values.

Formats follow the issue-7 design: a manifest per release, an append-only status history,
the live pointer with its history, an idempotency marker per upload and a record per
rejected upload. Every `to_json` writes what the matching `from_json` reads back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from inferstack.release.exceptions import ReleaseError

JSON = dict[str, Any]

State = Literal["validated", "rolling_out", "live", "failed", "rolled_back", "superseded"]
STATES: Final[tuple[State, ...]] = (
    "validated",
    "rolling_out",
    "live",
    "failed",
    "rolled_back",
    "superseded",
)
Action = Literal["promote", "rollback"]
# What became of one upload: a new release, a rejection, or nothing (same bytes as live).
OutcomeKind = Literal["release", "rejected", "unchanged", "superseded"]
OUTCOME_KINDS: Final[tuple[OutcomeKind, ...]] = ("release", "rejected", "unchanged", "superseded")


def utc_iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a 'Z': sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def source_identity(bucket: str, key: str, version_id: str | None, etag: str | None) -> str:
    """Hex id of one uploaded object version, the same for every delivery of its event.

    The version id names one upload in a versioned bucket; S3 events omit it for
    unversioned buckets (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html),
    and then the ETag stands in. Never the event `id`: S3 delivers to EventBridge at least
    once (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-delivery-level.html),
    and moto gives every event one fixed id.
    """
    if version_id and version_id != "null":
        part = f"version:{version_id}"
    elif etag:
        part = f"etag:{etag.strip(chr(34))}"
    else:
        raise ReleaseError(f"s3://{bucket}/{key}: the event names neither a version id nor an ETag")
    return hashlib.sha256(f"{bucket}\n{key}\n{part}".encode()).hexdigest()


def _field(data: JSON, name: str, where: str) -> Any:
    try:
        return data[name]
    except (KeyError, TypeError):
        raise ReleaseError(f"{where}: record has no {name!r}") from None


@dataclass(frozen=True)
class ArtifactRef:
    """One content-addressed object under models/ (the manifest's "artifact" and "files")."""

    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def to_json(self) -> JSON:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "sha256": self.sha256,
            "size": self.size,
        }

    def as_file(self) -> JSON:
        """The manifest's "files" entry for a file beside the model."""
        return {"name": self.name, "key": self.key, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, data: JSON, where: str = "artifact") -> ArtifactRef:
        return cls(
            bucket=str(_field(data, "bucket", where)),
            key=str(_field(data, "key", where)),
            version_id=data.get("version_id"),
            sha256=str(_field(data, "sha256", where)),
            size=int(_field(data, "size", where)),
        )


@dataclass(frozen=True)
class SourceObject:
    """The uploaded object an event names (the manifest's "source")."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    sequencer: str | None = None

    @property
    def identity(self) -> str:
        return source_identity(self.bucket, self.key, self.version_id, self.etag)

    def to_json(self) -> JSON:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "sequencer": self.sequencer,
        }

    @classmethod
    def from_json(cls, data: JSON, where: str = "source") -> SourceObject:
        return cls(
            bucket=str(_field(data, "bucket", where)),
            key=str(_field(data, "key", where)),
            version_id=data.get("version_id"),
            etag=data.get("etag"),
            sequencer=data.get("sequencer"),
        )


@dataclass(frozen=True)
class StatusEntry:
    """One entry of a release's status history; `seq` is its place (from the key)."""

    seq: int
    state: State
    at: str
    reason: str | None = None
    detail: JSON | None = None

    def to_json(self) -> JSON:
        return {"state": self.state, "at": self.at, "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_json(cls, seq: int, data: JSON, where: str) -> StatusEntry:
        state = _field(data, "state", where)
        if state not in STATES:
            raise ReleaseError(f"{where}: unknown state {state!r}")
        return cls(
            seq=seq,
            state=cast("State", state),
            at=str(_field(data, "at", where)),
            reason=data.get("reason"),
            detail=data.get("detail") or {},
        )


@dataclass(frozen=True)
class Release:
    """One immutable release: its manifest, and (when read with it) its latest status."""

    model: str
    release: str
    manifest: JSON
    state: StatusEntry | None = None

    @property
    def number(self) -> int:
        return int(self.release)

    @property
    def artifact(self) -> ArtifactRef:
        where = f"release {self.release}"
        return ArtifactRef.from_json(_field(self.manifest, "artifact", where), where)

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    @property
    def source(self) -> SourceObject | None:
        source = self.manifest.get("source")
        return SourceObject.from_json(source) if isinstance(source, dict) else None

    @property
    def validated(self) -> bool:
        """The gate passed it: the manifest says so (releases exist only for passed uploads)."""
        validation = self.manifest.get("validation")
        return isinstance(validation, dict) and validation.get("passed") is True


@dataclass(frozen=True)
class PointerEntry:
    """One move of the live pointer."""

    release: str
    at: str
    by: str
    action: Action
    reason: str | None

    def to_json(self) -> JSON:
        return {
            "release": self.release,
            "at": self.at,
            "by": self.by,
            "action": self.action,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: JSON, where: str) -> PointerEntry:
        return cls(
            release=str(_field(data, "release", where)),
            at=str(_field(data, "at", where)),
            by=str(data.get("by") or ""),
            action=cast("Action", data.get("action") or "promote"),
            reason=data.get("reason"),
        )


@dataclass(frozen=True)
class LivePointer:
    """releases/<model>/live.json as read, with the ETag a compare-and-swap needs.

    `history` lists every move, oldest first; its last entry is the move that made
    `release` live.
    """

    model: str
    release: str
    artifact: ArtifactRef
    updated_at: str
    history: tuple[PointerEntry, ...]
    etag: str

    def to_json(self) -> JSON:
        return {
            "model": self.model,
            "release": self.release,
            "artifact": self.artifact.to_json(),
            "updated_at": self.updated_at,
            "history": [entry.to_json() for entry in self.history],
        }

    @classmethod
    def from_json(cls, data: JSON, etag: str, where: str) -> LivePointer:
        return cls(
            model=str(_field(data, "model", where)),
            release=str(_field(data, "release", where)),
            artifact=ArtifactRef.from_json(_field(data, "artifact", where), where),
            updated_at=str(data.get("updated_at", "")),
            history=tuple(PointerEntry.from_json(e, where) for e in data.get("history") or []),
            etag=etag,
        )


@dataclass(frozen=True)
class SourceOutcome:
    """What one upload led to, recorded on its idempotency marker."""

    kind: OutcomeKind
    release: str | None = None
    reason: str | None = None

    def to_json(self) -> JSON:
        return {"kind": self.kind, "release": self.release, "reason": self.reason}

    @classmethod
    def from_json(cls, data: JSON, where: str) -> SourceOutcome:
        kind = _field(data, "kind", where)
        if kind not in OUTCOME_KINDS:
            raise ReleaseError(f"{where}: unknown outcome {kind!r}")
        return cls(
            kind=cast("OutcomeKind", kind), release=data.get("release"), reason=data.get("reason")
        )


@dataclass(frozen=True)
class Claim:
    """This invocation owns the upload until it settles the claim (or the claim goes stale).

    `taken_over` says a previous invocation claimed it and never settled: it may have
    created a release already (see ReleaseStore.release_for_source).
    """

    model: str
    source: SourceObject
    claimed_at: str
    etag: str
    taken_over: bool = False

    @property
    def identity(self) -> str:
        return self.source.identity


@dataclass(frozen=True)
class Rejection:
    """releases/<model>/rejected/<hex>.json: an upload the gate refused, and why."""

    identity: str
    source: SourceObject
    report: JSON
    at: str

    def to_json(self) -> JSON:
        return {
            "identity": self.identity,
            "source": self.source.to_json(),
            "report": self.report,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: JSON, where: str) -> Rejection:
        return cls(
            identity=str(_field(data, "identity", where)),
            source=SourceObject.from_json(_field(data, "source", where), where),
            report=data.get("report") or {},
            at=str(_field(data, "at", where)),
        )


@dataclass(frozen=True)
class RolloutLock:
    """The model's rollout slot, held by one release's rollout."""

    model: str
    release: str
    key: str
    etag: str
