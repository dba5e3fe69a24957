"""One exception root for the model lifecycle; each subclass is a name and a docstring."""

from __future__ import annotations


class ReleaseError(Exception):
    """A lifecycle step could not be done; the message says why, for the operator."""


class UploadError(ReleaseError):
    """The uploaded object is not a model or bundle this kit can release."""


class ValidationFailed(ReleaseError):
    """The validation gate rejected a model (the report names the failed check)."""


class ReleaseConflict(ReleaseError):
    """A conditional write lost to a concurrent one (retry with what is there now)."""


class ReleaseNotFound(ReleaseError):
    """No such release, or the model has no release yet."""


class RolloutFailed(ReleaseError):
    """A target did not reach the release; the previous release keeps serving."""
