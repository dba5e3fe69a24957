"""Content-addressed artifacts: models/<model>/<sha256>/<name>, each written once.

Written with If-None-Match "*" (single PUT, or CompleteMultipartUpload for large files)
and a SHA-256 checksum S3 verifies on arrival
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity-upload.html).
Each object carries its own digest as metadata, so an address found taken is reused only
when it holds the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from inferstack.names import MODELS_PREFIX
from inferstack.release.exceptions import ReleaseConflict, ReleaseError
from inferstack.release.records import ArtifactRef
from inferstack.release.s3json import CONFLICT_CODES, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB: Final = 1024 * 1024
# S3 parts are 5 MiB to 5 GiB, at most 10,000 of them
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
MIN_PART_SIZE: Final = 5 * MiB
MAX_PARTS: Final = 10_000
SHA256_METADATA: Final = "inferstack-sha256"  # the file's own hex digest


def file_digest(path: Path) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def artifact_key(model: str, sha256: str, name: str) -> str:
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts or "\\" in name:
        raise ReleaseError(f"artifact name {name!r} must be a relative path inside its folder")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ReleaseError(f"{sha256!r} is not a lower-case hex SHA-256")
    return f"{MODELS_PREFIX}{model}/{sha256}/{relative}"


class ArtifactWriter:
    """Puts files at their content address; large ones in parts."""

    def __init__(
        self,
        s3_client: S3Client,
        bucket: str,
        *,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.s3 = s3_client
        self.bucket = bucket
        self.threshold = multipart_threshold
        self.part_size = part_size

    def put(self, key: str, path: Path) -> ArtifactRef:
        digest, size = file_digest(path)
        try:
            if size <= self.threshold:
                version_id = self._put_single(key, path, digest)
            else:
                version_id = self._put_multipart(key, path, digest, size)
        except ReleaseConflict:
            version_id = self._existing(key, digest, size)
        return ArtifactRef(self.bucket, key, version_id, digest, size)

    def _error(self, key: str, exc: ClientError) -> Exception:
        if error_code(exc) in CONFLICT_CODES:
            return ReleaseConflict(f"s3://{self.bucket}/{key} exists")
        return ReleaseError(f"cannot write s3://{self.bucket}/{key}: {error_code(exc)}")

    def _put_single(self, key: str, path: Path, digest: str) -> str | None:
        try:
            with path.open("rb") as body:
                response = self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_b64(bytes.fromhex(digest)),
                    Metadata={SHA256_METADATA: digest},
                    IfNoneMatch="*",
                )
        except ClientError as exc:
            raise self._error(key, exc) from exc
        return response.get("VersionId")

    def _put_multipart(self, key: str, path: Path, digest: str, size: int) -> str | None:
        # boto3's upload_file cannot send If-None-Match (s3transfer's ALLOWED_UPLOAD_ARGS),
        # so the parts go up here and CompleteMultipartUpload carries the condition.
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        upload_id = self.s3.create_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={SHA256_METADATA: digest},
        )["UploadId"]
        parts: list[Any] = []
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(part_size):
                    number = len(parts) + 1
                    checksum = _b64(hashlib.sha256(chunk).digest())
                    etag = self.s3.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
            done = self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException as exc:
            # An abandoned upload keeps its parts (and their cost) until aborted.
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, ClientError):
                raise self._error(key, exc) from exc
            raise
        return done.get("VersionId")

    def _existing(self, key: str, digest: str, size: int) -> str | None:
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        stored = head.get("Metadata", {}).get(SHA256_METADATA)
        if stored != digest or head["ContentLength"] != size:
            raise ReleaseConflict(
                f"s3://{self.bucket}/{key} already holds other bytes (sha256 {stored}); "
                "artifacts are immutable"
            )
        return head.get("VersionId")
