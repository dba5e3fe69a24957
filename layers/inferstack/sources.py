"""Where a model file comes from: a local path, or `s3://bucket/key[?versionId=...]`.

An S3 model is downloaded once per execution environment into a cache under /tmp,
keyed by bucket, key and version. The download goes to a temporary file that is
renamed into place only after its SHA-256 is recorded (and checked against the
object's stored checksum when S3 has one), so a cut-off download never serves and
a later cold start in the same environment reuses a verified file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from inferstack.constants import DEFAULT_CACHE_DIR, ENV_CACHE_DIR
from inferstack.exceptions import ModelLoadError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        suffix = f"?versionId={self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{suffix}"


def parse_s3_uri(uri: str) -> S3Location:
    """Split `s3://bucket/key?versionId=v` (the version is optional)."""
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ModelLoadError(f"not an S3 model URI: {uri!r} (expected s3://bucket/key)")
    versions = parse_qs(parts.query).get("versionId")
    return S3Location(parts.netloc, key, versions[0] if versions else None)


def resolve_model_file(
    uri: str, *, cache_dir: str | Path | None = None, s3_client: S3Client | None = None
) -> Path:
    """A local file for `uri`, downloading (once) when it is on S3."""
    if uri.startswith("s3://"):
        return S3ModelCache(cache_dir, s3_client).fetch(parse_s3_uri(uri))
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_file():
        # The path is the operator's own configuration, but clients only see "not ready".
        raise ModelLoadError("model file not found")
    return path


class S3ModelCache:
    """A checksummed download cache for model files, safe to share between processes."""

    def __init__(
        self, cache_dir: str | Path | None = None, s3_client: S3Client | None = None
    ) -> None:
        self.root = Path(cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR)
        self._client = s3_client

    def fetch(self, location: S3Location) -> Path:
        target = self._path_for(location)
        if self._verified(target):
            return target
        client = self._client or _default_s3_client()
        extra: dict[str, Any] = {"VersionId": location.version_id} if location.version_id else {}
        try:
            response = client.get_object(
                Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED", **extra
            )
        except Exception as exc:  # botocore's ClientError and connection errors alike
            raise ModelLoadError(
                f"could not download the model from {location.uri}: {_aws_reason(exc)}"
            ) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            expected = response.get("ChecksumSHA256")
            # A multipart upload's checksum ("...-N") is of its parts: not comparable.
            actual = base64.b64encode(digest.digest()).decode()
            if expected and "-" not in expected and actual != expected:
                raise ModelLoadError(f"checksum mismatch downloading {location.uri}")
            os.replace(tmp_name, target)
            _sidecar(target).write_text(digest.hexdigest())
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return target

    def _path_for(self, location: S3Location) -> Path:
        name = hashlib.sha256(location.uri.encode()).hexdigest()[:32]
        suffix = Path(location.key).suffix or ".bin"
        return self.root / name / f"model{suffix}"

    @staticmethod
    def _verified(path: Path) -> bool:
        sidecar = _sidecar(path)
        if not (path.is_file() and sidecar.is_file()):
            return False
        return file_sha256(path) == sidecar.read_text().strip()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _default_s3_client() -> S3Client:
    import boto3  # imported here: only S3-hosted models pay for it at cold start

    return boto3.client("s3")


def _aws_reason(exc: Exception) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code") or type(exc).__name__)
