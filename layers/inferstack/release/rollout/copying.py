"""Copying a described AWS resource into the request that creates its next revision.

SageMaker and ECS rollouts copy the live model, endpoint config or task definition and
change one environment variable. What a Describe* call answers is a superset of what the
matching Create*/Register* call accepts (ARNs, times, statuses, revisions are read-only),
and both grow with the API. The botocore service model says exactly which fields the
request takes, so the copy keeps those, at every nesting level, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Tag keys starting with "aws:" (any case) are reserved for AWS, which sets them itself
# (CloudFormation: aws:cloudformation:*); a caller cannot set them
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html,
# https://docs.aws.amazon.com/general/latest/gr/aws_tagging.html).
_RESERVED_TAG_PREFIX = "aws:"


def request_fields(
    client: Any, operation: str, described: Mapping[str, Any], *, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The parts of `described` that `operation` accepts (its botocore input shape),
    without the top-level fields named in `drop` (the caller sets those itself)."""
    shape = client.meta.service_model.operation_model(operation).input_shape
    fitted: dict[str, Any] = _fit(described, shape)
    return {key: value for key, value in fitted.items() if key not in drop}


def _fit(value: Any, shape: Any) -> Any:
    if shape.type_name == "structure" and isinstance(value, Mapping):
        members = shape.members
        return {
            name: _fit(item, members[name])
            for name, item in value.items()
            if name in members and item is not None
        }
    if shape.type_name == "list" and isinstance(value, list):
        return [_fit(item, shape.member) for item in value]
    return value


def user_tags(tags: list[dict[str, str]] | None) -> list[dict[str, str]]:
    """The tags a caller may set again (SageMaker spells the keys Key/Value, ECS key/value)."""
    return [
        tag
        for tag in tags or []
        if not str(tag.get("Key", tag.get("key", ""))).lower().startswith(_RESERVED_TAG_PREFIX)
    ]
