"""Where a model file comes from: a local path, or `s3://bucket/key[?versionId=...]`.

An S3 model is downloaded once per execution environment into a cache under /tmp,
keyed by bucket, key and version. The download goes to a temporary file that is
renamed into place only after its SHA-256 is recorded (and checked against the
object's stored checksum when S3 has one), so a cut-off download never serves and
a later cold start in the same environment reuses a verified file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from inferstack.constants import DEFAULT_CACHE_DIR
from inferstack.exceptions import ModelLoadError
from inferstack.names import ENV_AWS_DEFAULT_REGION, ENV_AWS_REGION, ENV_CACHE_DIR

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# hashlib, tempfile and urllib are imported where used: a model baked into the image
# (a local path) never needs them, and they cost milliseconds of cold start.

_CHUNK = 1024 * 1024


class S3Location(NamedTuple):
    bucket: str
    key: str
    version_id: str | None = None
    # Identifies an unversioned object's content for the cache (never sent to S3).
    etag: str | None = None

    @property
    def uri(self) -> str:
        suffix = f"?versionId={self.version_id}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{suffix}"


def parse_s3_uri(uri: str) -> S3Location:
    """Split `s3://bucket/key?versionId=v` (the version is optional)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise ModelLoadError(f"not an S3 model URI: {uri!r} (expected s3://bucket/key)")
    # Not parse_qs: it reads "+" as a space, and real version IDs contain "+".
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    version = unquote(query["versionId"]) if query.get("versionId") else None
    return S3Location(parts.netloc, key, version)


def resolve_model_file(
    uri: str, *, cache_dir: str | Path | None = None, s3_client: S3Client | None = None
) -> Path:
    """A local file for `uri`, downloading (once) when it is on S3."""
    if uri.startswith("s3://"):
        return S3ModelCache(cache_dir, s3_client).fetch(parse_s3_uri(uri))
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_file():
        # The operator needs the URI to fix the configuration; clients (who see the
        # load error) must not learn the host's paths, so only the log names it. On Lambda
        # the logging module's records reach CloudWatch Logs:
        # https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html
        logger.error("model file not found: %s", uri)
        raise ModelLoadError("model file not found")
    return path


class S3ModelCache:
    """A checksummed download cache for model files, safe to share between processes."""

    def __init__(
        self, cache_dir: str | Path | None = None, s3_client: S3Client | None = None
    ) -> None:
        self.root = Path(cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR)
        self._client = s3_client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = _default_s3_client()
        return self._client

    def fetch(self, location: S3Location, target: Path | None = None) -> Path:
        """The object's local copy; `target` places it (a bundle's files sit side by side)."""
        import base64
        import hashlib
        import tempfile

        if location.version_id is None:
            # An unpinned key can change under us: key the cache on what is there now.
            location = self._pin(self.client, location)
        target = target or self._path_for(location)
        if self._verified(target):
            return target
        client = self.client
        extra: dict[str, Any] = {"VersionId": location.version_id} if location.version_id else {}
        if location.etag:
            extra["IfMatch"] = f'"{location.etag}"'  # what was pinned, or fail: no mix-ups
        try:
            response = client.get_object(
                Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED", **extra
            )
        except Exception as exc:  # botocore's ClientError and connection errors alike
            raise download_error(location, exc) from exc
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

    @staticmethod
    def _pin(client: S3Client, location: S3Location) -> S3Location:
        """The object's current version (or, in an unversioned bucket, its ETag)."""
        try:
            head = client.head_object(Bucket=location.bucket, Key=location.key)
        except Exception:
            # HEAD errors carry no code ("404"); the GET that follows names the problem.
            return location
        version = head.get("VersionId")
        if version and version != "null":
            return S3Location(location.bucket, location.key, version)
        etag = str(head.get("ETag", "")).strip('"')
        return S3Location(location.bucket, location.key, None, etag=etag or None)

    def _path_for(self, location: S3Location) -> Path:
        import hashlib

        identity = f"{location.uri}#{location.etag or ''}"
        name = hashlib.sha256(identity.encode()).hexdigest()[:32]
        suffix = Path(location.key).suffix or ".bin"
        return self.root / name / f"model{suffix}"

    @staticmethod
    def recorded_sha256(path: Path) -> str | None:
        """The SHA-256 (hex) recorded when `path` was downloaded, if it was."""
        sidecar = _sidecar(path)
        return sidecar.read_text().strip() if sidecar.is_file() else None

    @staticmethod
    def _verified(path: Path) -> bool:
        sidecar = _sidecar(path)
        if not (path.is_file() and sidecar.is_file()):
            return False
        return file_sha256(path) == sidecar.read_text().strip()


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _default_s3_client() -> S3Client:
    import boto3  # imported here: only S3-hosted models pay for it at cold start

    # AWS_REGION is the SDKs' standard region variable
    # (https://docs.aws.amazon.com/sdkref/latest/guide/feature-region.html) and the only one
    # the CDK sets on ECS-on-EC2 containers, but boto3 reads AWS_DEFAULT_REGION alone
    # (https://boto3.amazonaws.com/v1/documentation/api/latest/guide/configuration.html);
    # without a region it calls the us-east-1 endpoint, which a private subnet's S3
    # gateway endpoint does not serve.
    region = os.environ.get(ENV_AWS_DEFAULT_REGION) or os.environ.get(ENV_AWS_REGION) or None
    return boto3.client("s3", region_name=region)


def forget_aws_clients() -> None:
    """Drop boto3's default session, which init used for the model download: it keeps the
    credentials it resolved then. After a SnapStart restore the next client (a release
    re-check) then resolves credentials and opens connections of its own rather than the
    snapshot's (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-custom.html).
    No client outlives its download here (S3ModelCache is made per fetch)."""
    if "boto3" in sys.modules:  # never imported for a model baked into the image
        import boto3

        boto3.DEFAULT_SESSION = None


def download_error(location: S3Location, exc: Exception) -> ModelLoadError:
    return ModelLoadError(f"could not download the model from {location.uri}: {_aws_reason(exc)}")


def _aws_reason(exc: Exception) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error.get("Code") or type(exc).__name__)
