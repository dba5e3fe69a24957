"""What every target's rollout offers, and the records it passes around."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, NamedTuple

Phase = Literal["in_progress", "succeeded", "failed"]


class ReleaseRef(NamedTuple):
    """The release a target moves to: its model, id and the URI that pins it."""

    model: str
    release: str
    uri: str  # s3://<bucket>/releases/<model>/<id>/manifest.json


class Progress(NamedTuple):
    """Where a rollout stands; `state` is the target's own (JSON-serializable) record."""

    phase: Phase
    reason: str | None = None
    state: dict[str, Any] | None = None


class Rollout(ABC):
    """One target's rollout."""

    target: str

    @abstractmethod
    def start(self, release: ReleaseRef) -> Progress:
        """Begin moving the target to `release`; on failure the previous release serves."""

    def check(self, progress: Progress) -> Progress:
        """Where a started rollout stands now (targets that finish in `start` return it)."""
        return progress

    def abandon(self, progress: Progress) -> str | None:
        """The rollout ended without this target's verdict (its checks failed): undo what the
        target still holds (a Lambda canary's weight) and say what became of it; None when
        there is nothing to undo."""
        return None


def aws_reason(exc: Exception) -> str:
    """An AWS error as "Code: message" (botocore), else the exception's type and text."""
    error = getattr(exc, "response", {}).get("Error", {})
    code, message = error.get("Code"), error.get("Message")
    if code:
        return f"{code}: {message}" if message else str(code)
    return f"{type(exc).__name__}: {exc}"
