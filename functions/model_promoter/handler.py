"""Model promoter Lambda: S3 "Object Created" events (via EventBridge) for uploads/.

PLACEHOLDER. This version only parses and logs the upload event and answers
{"status": "not-implemented"}; it validates nothing, records no release and rolls no
target forward. The real promoter (validate in ONNX Runtime, release, roll out) is a
later issue; see README.md next to this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

UPLOADS_PREFIX = "uploads/"

logger = Logger()


def model_of(key: str) -> str | None:
    """The model an upload belongs to: uploads/<model>/<file> -> <model>."""
    model, sep, file = key.removeprefix(UPLOADS_PREFIX).partition("/")
    return model if key.startswith(UPLOADS_PREFIX) and sep and file else None


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    upload = S3EventBridgeNotificationEvent(event)
    obj = upload.detail.object
    received = {
        "bucket": upload.detail.bucket.name,
        "key": obj.key,
        # Absent when versioning is off; Powertools' accessor raises KeyError then.
        "version_id": obj.raw_event.get("version-id"),
        "size": obj.size,
        "model": model_of(obj.key),
    }
    logger.info("upload received; promotion is not implemented yet", extra=received)
    return {"status": "not-implemented", **received}
