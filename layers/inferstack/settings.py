"""Runtime settings resolved explicit argument > environment variable > default.

Read when a host starts (never at import), so tests can set the environment first.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from inferstack.constants import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MODEL_VERSION,
    ENV_BASE_PATH,
    ENV_MAX_REQUEST_BYTES,
    ENV_METRICS,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
)
from inferstack.exceptions import InferStackError
from inferstack.sources import parse_s3_uri

if TYPE_CHECKING:
    from collections.abc import Mapping


class ConfigurationError(InferStackError):
    """A required setting is missing or malformed (fails the host at start)."""


class ModelConfig(NamedTuple):
    name: str
    uri: str
    version: str


class FunctionSettings(NamedTuple):
    """What the Lambda inference function serves, from its environment."""

    model: ModelConfig
    max_request_bytes: int
    base_path: str
    metrics: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FunctionSettings:
        env = os.environ if environ is None else environ
        name, uri = env.get(ENV_MODEL_NAME, "").strip(), env.get(ENV_MODEL_URI, "").strip()
        missing = [
            key for key, value in ((ENV_MODEL_NAME, name), (ENV_MODEL_URI, uri)) if not value
        ]
        if missing:
            raise ConfigurationError(f"set {' and '.join(missing)} in the function's environment")
        return cls(
            model=ModelConfig(name, uri, model_version(uri, env.get(ENV_MODEL_VERSION))),
            max_request_bytes=_positive_int(env, ENV_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES),
            base_path=env.get(ENV_BASE_PATH, "").rstrip("/"),
            metrics=env.get(ENV_METRICS, "true").lower() not in ("0", "false", "no"),
        )


def model_version(uri: str, explicit: str | None = None) -> str:
    """The version clients see: explicit, else the S3 versionId, else "1"."""
    if explicit:
        return explicit
    if uri.startswith("s3://"):
        return parse_s3_uri(uri).version_id or DEFAULT_MODEL_VERSION
    return DEFAULT_MODEL_VERSION


def _positive_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigurationError(f"{key} must be a positive whole number of bytes, not {raw!r}")
    return int(raw)
