"""How a serving host finds the release it loads: the model's live pointer, or one release.

The CDK app points every target at `s3://<bucket>/releases/<model>/live.json`, so a host
that starts (a new Lambda execution environment, a replaced task, a `cdk deploy`) loads
whatever release is live then: a deploy never undoes a promotion. A rollout pins a target
to one release with `s3://<bucket>/releases/<model>/<id>/manifest.json`, so a Lambda
version or a task definition keeps serving the release it was made for.

Either record is JSON written by inferstack.release; this module reads only its "release"
id and its "artifact" (and "files": a bundle's external-data files), downloads them through
the checksummed cache and checks the SHA-256 the release recorded. The GPU backend also
reads the manifest's "variants" (the FP16 copy made at release time), "reference" (the
sample its load check runs) and "settings" (the bundle's settings.json) through
`fetch_release_files`. It must not import inferstack.release (the inference image does not
ship it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from inferstack.exceptions import ModelLoadError, NoReleaseYet
from inferstack.names import LIVE_POINTER_FILE, MANIFEST_FILE, RELEASES_PREFIX, manifest_key
from inferstack.sources import S3Location, S3ModelCache, download_error, parse_s3_uri

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client


class ReleasedModel(NamedTuple):
    path: Path
    release: str


class ReleaseFiles(NamedTuple):
    """What the GPU backend loads: the variant it serves, the FP32 original (the CPU
    reference), the release's reference sample and its settings."""

    path: Path
    release: str
    fp32_path: Path
    reference: Path | None
    settings: dict[str, Any]
    precision: str = "fp32"  # what `path` holds
    note: str = ""  # why that is not the precision asked for


def is_release_uri(uri: str) -> bool:
    """`s3://b/releases/<model>/live.json` or `s3://b/releases/<model>/<id>/manifest.json`."""
    if not uri.startswith("s3://"):
        return False
    key = uri[5:].partition("/")[2].partition("?")[0]
    return key.startswith(RELEASES_PREFIX) and key.rpartition("/")[2] in (
        LIVE_POINTER_FILE,
        MANIFEST_FILE,
    )


def fetch_release(
    uri: str, *, cache_dir: str | Path | None = None, s3_client: S3Client | None = None
) -> ReleasedModel:
    """Download the release `uri` names (once per environment) and return its model file."""
    location = parse_s3_uri(uri)
    cache = S3ModelCache(cache_dir, s3_client)
    return _fetch_model(cache, location, _read_record(cache.client, location))


def fetch_release_files(
    uri: str,
    *,
    variant: str = "fp32",
    cache_dir: str | Path | None = None,
    s3_client: S3Client | None = None,
) -> ReleaseFiles:
    """`fetch_release` plus the manifest's `variant` copy, reference sample and settings
    (the live pointer names the release; its manifest holds the rest)."""
    location = parse_s3_uri(uri)
    cache = S3ModelCache(cache_dir, s3_client)
    record = _read_record(cache.client, location)
    if location.key.endswith("/" + LIVE_POINTER_FILE) and "release" in record:
        model = location.key.removeprefix(RELEASES_PREFIX).partition("/")[0]
        location = S3Location(location.bucket, manifest_key(model, str(record["release"])))
        record = _read_record(cache.client, location)
    original = _fetch_model(cache, location, record)
    path, precision, note = original.path, "fp32", ""
    entry = (record.get("variants") or {}).get(variant) if variant != "fp32" else None
    artifact = entry.get("artifact", entry) if isinstance(entry, dict) else None
    if isinstance(artifact, dict):
        try:
            path = cache.fetch(_artifact_location(location, artifact))
        except KeyError as exc:
            raise ModelLoadError(f"{location.uri}: its {variant} copy has no {exc}") from exc
        _check_sha256(cache, path, artifact, location)
        precision = variant
    elif variant != "fp32":
        # Released before the model's precision was set: serve what the release has rather
        # than fail a deploy (the promoter makes the copy for the next release).
        note = (
            f"release {original.release} has no {variant} copy: serving fp32 until a release "
            "has one (push the model again to make it)"
        )
    reference = None
    sample = record.get("reference")
    if isinstance(sample, dict) and sample.get("key"):
        reference = cache.fetch(_artifact_location(location, sample))
    settings = record.get("settings")
    return ReleaseFiles(
        path,
        original.release,
        original.path,
        reference,
        settings if isinstance(settings, dict) else {},
        precision,
        note,
    )


def _fetch_model(
    cache: S3ModelCache, location: S3Location, record: dict[str, Any]
) -> ReleasedModel:
    try:
        release = str(record["release"])
        artifact: dict[str, Any] = record["artifact"]
        model = _artifact_location(location, artifact)
        files = [_artifact_location(location, item) for item in record.get("files") or ()]
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"{location.uri} is not a release record (missing {exc})") from exc
    path = cache.fetch(model)
    _check_sha256(cache, path, artifact, location)
    for item, file_location in zip(record.get("files") or (), files, strict=True):
        # External data sits beside the model file, under the name the model gives it.
        name = str(item["name"])
        if "/" in name or name in ("", ".", ".."):
            raise ModelLoadError(f"{location.uri}: file name {name!r} is not allowed")
        extra = cache.fetch(file_location, target=path.with_name(name))
        _check_sha256(cache, extra, item, location)
    return ReleasedModel(path, release)


def _read_record(client: S3Client, location: S3Location) -> dict[str, Any]:
    try:
        body = client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code == "NoSuchKey" and location.key.endswith("/" + LIVE_POINTER_FILE):
            model = location.key.removeprefix(RELEASES_PREFIX).partition("/")[0]
            raise NoReleaseYet(f"model '{model}' has no release yet") from exc
        raise download_error(location, exc) from exc
    try:
        record = json.loads(body)
    except ValueError as exc:
        raise ModelLoadError(f"{location.uri} is not a release record (not JSON)") from exc
    if not isinstance(record, dict):
        raise ModelLoadError(f"{location.uri} is not a release record (not an object)")
    return record


def _artifact_location(record: S3Location, artifact: dict[str, Any]) -> S3Location:
    version = artifact.get("version_id")
    return S3Location(str(artifact.get("bucket") or record.bucket), str(artifact["key"]), version)


def _check_sha256(
    cache: S3ModelCache, path: Path, artifact: dict[str, Any], record: S3Location
) -> None:
    expected = artifact.get("sha256")
    if expected and cache.recorded_sha256(path) != expected:
        raise ModelLoadError(f"{record.uri}: the downloaded artifact's SHA-256 does not match")
