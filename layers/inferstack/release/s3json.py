"""JSON records in one S3 bucket, written conditionally.

If-None-Match "*" creates a key only when it does not exist; If-Match on the ETag read
replaces it only when nobody changed it since
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html). S3 answers
a lost race with 412 PreconditionFailed, or 409 ConditionalRequestConflict while another
conditional write to the key is in flight; both mean "someone else got there first"
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from inferstack.release.exceptions import ReleaseConflict, ReleaseError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client

    from inferstack.release.records import JSON

CONFLICT_CODES: Final = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
)
MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Json:
    """Read, conditionally write and list the JSON records of one bucket."""

    def __init__(self, s3_client: S3Client, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    def failed(self, verb: str, key: str, exc: ClientError) -> ReleaseError:
        return ReleaseError(f"cannot {verb} s3://{self.bucket}/{key}: {error_code(exc)}")

    def get(self, key: str) -> tuple[JSON, str] | None:
        """The record at `key` and its ETag, or None when there is none."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise self.failed("read", key, exc) from exc
        try:
            data = json.loads(response["Body"].read())
        except ValueError as exc:
            raise ReleaseError(f"s3://{self.bucket}/{key} is not JSON") from exc
        if not isinstance(data, dict):
            raise ReleaseError(f"s3://{self.bucket}/{key} is not a JSON object")
        return data, response["ETag"]

    def put(self, key: str, body: JSON, *, if_match: str | None = None) -> str:
        """Create `key` (If-None-Match "*"), or replace it if its ETag is still `if_match`.

        Returns the new ETag; a lost race raises ReleaseConflict and writes nothing.
        """
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(body, indent=1, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            code = error_code(exc)
            # If-Match on a key deleted meanwhile answers 404: a lost race as well.
            if code in CONFLICT_CODES or (if_match and code in MISSING_CODES):
                raise ReleaseConflict(f"s3://{self.bucket}/{key} changed meanwhile") from exc
            raise self.failed("write", key, exc) from exc
        return response["ETag"]

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, in S3's (UTF-8 binary) order."""
        for page in self._pages(prefix, {}):
            for item in page.get("Contents", []):
                yield item["Key"]

    def folders(self, prefix: str) -> Iterator[str]:
        """The names of the 'folders' directly under `prefix` (Delimiter "/")."""
        for page in self._pages(prefix, {"Delimiter": "/"}):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(prefix) :].rstrip("/")

    def _pages(self, prefix: str, extra: dict[str, str]) -> Iterator[Any]:
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, **extra)  # type: ignore[arg-type]
        except ClientError as exc:
            raise self.failed("list", prefix, exc) from exc
