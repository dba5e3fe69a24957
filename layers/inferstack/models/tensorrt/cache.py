"""The engine cache: serialized TensorRT engines (and timing caches) in the model bucket.

An engine is only valid for the TensorRT version and GPU it was built on
(https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html),
so an entry is keyed by everything that shapes it (`EngineKey`) and read back only when the
key stored with it equals ours field by field, and the plan's SHA-256 matches the record.

Layout, under `engines/<model>/`:
- `<digest>/build.json`: {key, digest, plan_key, plan_sha256, plan_bytes, build facts...};
- `<digest>/plan-<sha256>.plan`: the engine, named by its content, so two hosts building the
  same key at once never overwrite each other's plan;
- `_timing/<trt>-<cc>-<gpu>.cache`: the builder's timing cache (shared by builds on that GPU).
`build.json` is written last, with `IfNoneMatch="*"`: the first builder's record wins and a
later one keeps serving its own engine (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from inferstack.names import ENGINES_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# Bump when the engine code changes what an engine holds (I/O handling, build options).
KEY_VERSION = 1
BUILD_FILE = "build.json"
TIMING_DIR = "_timing"


class EngineKey(NamedTuple):
    model_sha256: str  # of the ONNX file actually built (the fp16 copy when that is served)
    trt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    machine: str  # platform.machine(): x86_64 | aarch64
    precision: str
    profiles: dict[str, list[list[int]]]  # Profiles.as_json()
    workspace_bytes: int
    builder_optimization_level: int
    key_version: int = KEY_VERSION

    def as_json(self) -> dict[str, Any]:
        # Through JSON once, so it compares equal to a key read back from build.json.
        loaded: dict[str, Any] = json.loads(_canonical(self._asdict()))
        return loaded

    def digest(self) -> str:
        return hashlib.sha256(_canonical(self._asdict()).encode()).hexdigest()

    def differences(self, stored: Any) -> list[str]:
        """The fields where `stored` (a build.json "key") differs from this key."""
        mine = self.as_json()
        if not isinstance(stored, dict):
            return ["key"]
        return [
            name for name in sorted(set(mine) | set(stored)) if mine.get(name) != stored.get(name)
        ]


class CacheEntry(NamedTuple):
    plan: bytes
    info: dict[str, Any]  # build.json
    etag: str  # build.json's, to replace an entry that proved unusable (IfMatch)


class EngineCache:
    """Engines of one model in `bucket`; under `local_dir` when there is no bucket (a local
    `inferstack serve` of a model file)."""

    def __init__(
        self, local_dir: str | Path, s3_client: S3Client | None, bucket: str | None, model: str
    ) -> None:
        self.local_dir = Path(local_dir) / model
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = f"{ENGINES_PREFIX}{model}/"

    # -- engines -------------------------------------------------------------------------
    def get(self, key: EngineKey) -> CacheEntry | None:
        """The cached engine for `key`, or None (absent, built for another key, or corrupt)."""
        record = self._record(key)
        if record is None:
            return None
        info, etag = record
        found = self._read(str(info["plan_key"]))
        if found is None:
            return None
        if hashlib.sha256(found[0]).hexdigest() != info["plan_sha256"]:
            logger.warning("engine cache: the plan of entry %s is corrupt: not used", key.digest())
            return None
        return CacheEntry(found[0], info, etag)

    def _record(self, key: EngineKey) -> tuple[dict[str, Any], str] | None:
        """`key`'s build.json and its ETag, when it is readable and holds this very key."""
        digest = key.digest()
        found = self._read(f"{digest}/{BUILD_FILE}")
        if found is None:
            return None
        try:
            info = json.loads(found[0])
            readable = str(info["plan_key"]).startswith(f"{digest}/") and info["plan_sha256"]
        except (ValueError, KeyError, TypeError):
            readable = False
        if not readable:
            logger.warning("engine cache: %s%s/%s is unreadable", self.prefix, digest, BUILD_FILE)
            return None
        differs = key.differences(info.get("key"))
        if differs:
            logger.warning(
                "engine cache: entry %s was built for another %s: not used",
                digest,
                ", ".join(differs),
            )
            return None
        return info, found[1]

    def put(
        self, key: EngineKey, plan: bytes, info: dict[str, Any], *, replace: str | None = None
    ) -> bool:
        """Store `plan` for `key`; False when another builder's entry is there already (it
        wins; the caller still serves its own). `replace`: the ETag of an unusable entry to
        overwrite (IfMatch), never a newer one."""
        digest = key.digest()
        plan_sha256 = hashlib.sha256(plan).hexdigest()
        plan_key = f"{digest}/plan-{plan_sha256}.plan"
        record = {
            **info,
            "key": key.as_json(),
            "digest": digest,
            "plan_key": plan_key,
            "plan_sha256": plan_sha256,
            "plan_bytes": len(plan),
        }
        self._write(plan_key, plan)
        condition = {"IfMatch": replace} if replace else {"IfNoneMatch": "*"}
        return self._write(f"{digest}/{BUILD_FILE}", _canonical(record).encode(), **condition)

    # -- timing caches -------------------------------------------------------------------
    def timing_name(self, key: EngineKey) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", key.gpu_name.lower()).strip("-")
        return f"{TIMING_DIR}/{key.trt_version}-{key.compute_capability}-{gpu}.cache"

    def get_timing(self, key: EngineKey) -> bytes | None:
        found = self._read(self.timing_name(key))
        return found[0] if found else None

    def put_timing(self, key: EngineKey, blob: bytes) -> None:
        """Last writer wins: a timing cache only speeds builds up, TensorRT checks its own."""
        self._write(self.timing_name(key), blob)

    # -- storage -------------------------------------------------------------------------
    def _read(self, name: str) -> tuple[bytes, str] | None:
        local = self.local_dir / name
        if self.s3 is None or self.bucket is None:
            return (local.read_bytes(), "") if local.is_file() else None
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code not in ("NoSuchKey", "404"):
                logger.warning("engine cache: cannot read %s%s: %s", self.prefix, name, code or exc)
            return None
        body = response["Body"].read()
        return body, str(response.get("ETag", ""))

    def _write(self, name: str, body: bytes, **condition: str) -> bool:
        local = self.local_dir / name
        if self.s3 is None or self.bucket is None:
            if condition.get("IfNoneMatch") and local.exists():
                return False
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.{os.getpid()}")
            tmp.write_bytes(body)
            os.replace(tmp, local)
            return True
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=body, **condition)  # type: ignore[arg-type]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False  # another builder's entry is there (412) or being written (409)
            raise
        return True


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
