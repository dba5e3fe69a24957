"""The promoter's steps: an upload becomes a release, a target serves it, the pointer moves.

    prepare(upload event) -> {"outcome": "release", "model", "release", ...}  (or rejected,
        unchanged, duplicate, ignored: nothing to roll out)
    start(step)  -> the rollout begun on the model's target ("phase": in_progress | ...)
    check(step)  -> where it stands now
    finish(step) -> live (pointer moved, previous release superseded or rolled back) or
        failed (previous release still serving and live), the model's slot freed

Each step takes and returns a JSON-serializable dict, so the same functions run inside one
invocation (`run`, for targets that finish at once) and as the steps of a longer
orchestration. Any failure leaves the previous release serving and the pointer on it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstack.names import manifest_key
from inferstack.release.bundle import load_reference, open_upload
from inferstack.release.exceptions import ReleaseConflict, ReleaseError
from inferstack.release.records import RolloutLock, SourceObject, SourceOutcome, State
from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout
from inferstack.release.smoke import smoke_body
from inferstack.release.store import ReleaseStore, parse_upload_key
from inferstack.release.validate import limits_for, validate_model

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np

    from inferstack.release.bundle import Upload

    Step = dict[str, Any]
    RolloutFactory = Callable[[str, dict[str, Any], str], Rollout]

logger = logging.getLogger(__name__)

# Object metadata `inferstack push` sets (S3 returns user metadata without x-amz-meta-).
META_PUSHED_BY = "inferstack-pushed-by"
META_ALLOW_SIGNATURE_CHANGE = "inferstack-allow-signature-change"
# A claim on an upload, or the model's rollout slot, older than these belonged to an
# invocation or orchestration that died (longer than the function's 15-minute limit, and
# than any SageMaker or ECS rollout is allowed to take).
CLAIM_STALE_S = 16 * 60.0
ROLLOUT_STALE_S = 3 * 3600.0
UNPACKED_BOUND_FACTOR = 4  # a bundle may unpack to this many times the model's size bound


class Promoter:
    def __init__(
        self,
        store: ReleaseStore,
        *,
        targets: Mapping[str, dict[str, Any]],
        rollout_for: RolloutFactory,
        on_failure: Callable[[str | None, str], None] = lambda model, reason: None,
        workdir: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`targets`: per model, its target record (INFERSTACK_TARGETS); `rollout_for(model,
        target, smoke_body)`: that target's Rollout; `on_failure(model, reason)`: the failure
        metric (model None when an upload matches no model)."""
        self.store = store
        self.targets = targets
        self.rollout_for = rollout_for
        self.on_failure = on_failure
        self.workdir = workdir
        self._clock, self._sleep = clock, sleep

    # ------------------------------------------------------------------ uploads
    def prepare(self, event: Mapping[str, Any]) -> Step:
        """An S3 "Object Created" event (via EventBridge) -> a validated release, or why not."""
        detail = event.get("detail") or {}
        obj = detail.get("object") or {}
        source = SourceObject(
            bucket=str((detail.get("bucket") or {}).get("name", "")),
            key=str(obj.get("key", "")),
            # Absent when the bucket is not versioned
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).
            version_id=obj.get("version-id"),
            etag=obj.get("etag"),
            sequencer=obj.get("sequencer"),
        )
        parsed = parse_upload_key(source.key)
        if parsed is None or parsed[0] not in self.targets:
            reason = (
                f"upload {source.key!r} names no model of this environment "
                f"({', '.join(sorted(self.targets))}); expected uploads/<model>/<file>.onnx|.tar.gz"
            )
            logger.warning(reason)
            self.on_failure(None, reason)
            return {"outcome": "ignored", "reason": reason}
        model = parsed[0]
        claimed = self.store.claim_source(model, source, stale_after_s=CLAIM_STALE_S)
        if isinstance(claimed, SourceOutcome):
            logger.info("duplicate event for %s: already %s", source.key, claimed.kind)
            return {"outcome": "duplicate", "model": model, "release": claimed.release}
        if claimed.taken_over:  # an invocation died after recording the release
            existing = self.store.release_for_source(model, source.identity)
            if existing is not None:
                self.store.settle_source(claimed, SourceOutcome("release", existing.release))
                return self._promotion(model, existing.release, source)
        if not self.store.newest_upload_of_key(model, source):
            # An older upload's event after a newer one's (S3 does not order deliveries):
            # releasing it would roll the model back to what the user replaced.
            outcome = SourceOutcome("superseded", None, "a newer upload of this key was seen")
            self.store.settle_source(claimed, outcome)
            return {"outcome": "superseded", "model": model, "reason": outcome.reason}
        with tempfile.TemporaryDirectory(prefix="inferstack-upload-", dir=self.workdir) as work:
            outcome = self._release_upload(model, source, Path(work))
        self.store.settle_source(claimed, outcome)
        if outcome.kind != "release" or outcome.release is None:
            return {"outcome": outcome.kind, "model": model, "reason": outcome.reason}
        return self._promotion(model, outcome.release, source)

    def _release_upload(self, model: str, source: SourceObject, work: Path) -> SourceOutcome:
        target = self.targets[model]
        limits = limits_for(target["target"], **_limit_overrides(target))
        local, metadata = self._download(source, work)
        try:
            upload = open_upload(
                local,
                work / "unpacked",
                max_unpacked_bytes=limits.max_bytes * UNPACKED_BOUND_FACTOR,
            )
        except ReleaseError as exc:
            return self._reject(
                model,
                source,
                {"passed": False, "failed_check": "upload", "checks": [], "detail": str(exc)},
                str(exc),
            )
        content = content_id(upload.model_path, upload.external_files)
        live = self.store.live(model)
        live_release = self.store.get_release(model, live.release) if live else None
        if live_release and live_release.manifest.get("content_sha256") == content:
            logger.info(
                "upload %s is the live release %s: nothing to do", source.key, live_release.release
            )
            return SourceOutcome(
                "unchanged", live_release.release, "same content as the live release"
            )
        report = validate_model(
            upload,
            live=live_release.manifest.get("signature") if live_release else None,
            allow_signature_change=_flag(metadata.get(META_ALLOW_SIGNATURE_CHANGE)),
            limits=limits,
        )
        if not report.passed:
            failed = report.check(report.failed_check or "")
            return self._reject(
                model, source, report.to_dict(), f"check '{failed.name}' failed: {failed.detail}"
            )
        artifact = self.store.put_artifact(model, content, "model.onnx", upload.model_path)
        files = [
            self.store.put_artifact(model, content, f.name, f).as_file()
            for f in upload.external_files
        ]
        reference = None
        if upload.reference is not None:
            stored = self.store.put_artifact(
                model, content, f"reference{upload.reference.suffix}", upload.reference
            )
            reference = {"key": stored.key, "version_id": stored.version_id}
        variants: dict[str, Any] = {}
        if target.get("precision") == "fp16":
            try:
                variants["fp16"] = self._fp16(model, content, upload, report.signature or {})
            except ReleaseError as exc:
                detail = {"passed": False, "failed_check": "fp16", "checks": [], "detail": str(exc)}
                return self._reject(model, source, detail, str(exc))
        baseline, baseline_problem = self._baseline(model, content, upload, report.signature or {})
        release = self.store.create_release(
            model,
            {
                "artifact": artifact.to_json(),
                "files": files,
                "content_sha256": content,
                "source": source.to_json(),
                "created_by": metadata.get(META_PUSHED_BY) or "s3 upload",
                "signature": report.signature,
                "validation": report.to_dict(),
                "reference": reference,
                "baseline": baseline,
                "baseline_problem": baseline_problem,
                "variants": variants,
                "settings": upload.settings,
                "allow_signature_change": _flag(metadata.get(META_ALLOW_SIGNATURE_CHANGE)),
            },
        )
        self.store.append_status(
            model, release.release, "validated", detail={"p50_ms": report.p50_ms}
        )
        logger.info("upload %s is release %s of %s", source.key, release.release, model)
        return SourceOutcome("release", release.release)

    def _baseline(
        self, model: str, content: str, upload: Upload, signature: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The drift baseline of the upload's reference sample (inferstack.release.baselines),
        or why the release has none. Never a reason to refuse the release: drift checks of it
        then say there is no baseline."""
        if upload.reference is None:
            return None, "no reference sample: drift checks have nothing to compare with"
        from inferstack.release.baselines import store_baseline

        path = upload.reference
        names = [spec["name"] for spec in signature.get("inputs", [])]
        try:
            reference = load_reference(path, names if path.suffix == ".npy" else None)
            stored = store_baseline(
                self.store.s3,
                self.store.bucket,
                model=model,
                content=content,
                model_path=upload.model_path,
                reference=reference,
            )
        except Exception as exc:  # the release stands; its drift checks say why
            logger.warning("no drift baseline for %s: %s", model, exc, exc_info=True)
            return None, f"the baseline could not be computed: {type(exc).__name__}: {exc}"
        return stored, None

    def _fp16(
        self, model: str, content: str, upload: Upload, signature: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The release's FP16 copy (inferstack.release.precision), stored beside the model:
        the manifest's `variants.fp16`. ReleaseError when the copy answers differently."""
        from inferstack.release.precision import make_fp16_copy

        reference = None
        if upload.reference is not None:
            names = [spec["name"] for spec in signature.get("inputs", [])]
            suffix = upload.reference.suffix
            reference = load_reference(upload.reference, names if suffix == ".npy" else None)
        out = upload.model_path.with_name("model.fp16.onnx")
        copy = make_fp16_copy(upload.model_path, out, signature, reference)
        stored = self.store.put_artifact(model, content, out.name, copy.path)
        logger.info("FP16 copy of %s: %s", model, copy.checked_on)
        return copy.manifest(stored.to_json())

    def _download(self, source: SourceObject, work: Path) -> tuple[Path, dict[str, str]]:
        pinned: dict[str, Any] = (
            {"VersionId": source.version_id}
            if source.version_id
            else {"IfMatch": f'"{source.etag}"'}
            if source.etag
            else {}
        )
        response = self.store.s3.get_object(Bucket=source.bucket, Key=source.key, **pinned)
        path = work / source.key.rpartition("/")[2]
        with path.open("wb") as out:
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                out.write(chunk)
        return path, dict(response.get("Metadata") or {})

    def _reject(
        self, model: str, source: SourceObject, report: dict[str, Any], reason: str
    ) -> SourceOutcome:
        logger.warning("upload %s of %s rejected: %s", source.key, model, reason)
        self.store.record_rejection(model, source, report)
        self.on_failure(model, reason)
        return SourceOutcome("rejected", None, reason)

    @staticmethod
    def _promotion(model: str, release: str, source: SourceObject) -> Step:
        return {
            "outcome": "release",
            "model": model,
            "release": release,
            "action": "promote",
            "by": "upload",
            "reason": f"upload s3://{source.bucket}/{source.key}",
        }

    # ------------------------------------------------------------------ promote / rollback
    def promotion(self, model: str, release: str, *, by: str, reason: str | None = None) -> Step:
        """A step that moves `model` to an existing validated `release` (the CLI's promote)."""
        found = self.store.get_release(model, release)
        if not found.validated:
            raise ReleaseError(f"release {release} of {model!r} did not pass validation")
        return {
            "outcome": "release",
            "model": model,
            "release": release,
            "action": "promote",
            "by": by,
            "reason": reason or f"promoted by {by}",
        }

    def rollback(self, model: str, *, to: str | None, by: str, reason: str | None = None) -> Step:
        """A step that moves `model` back (to `to`, or to the release live before)."""
        target = self.store.rollback_target(model, to)
        return {
            "outcome": "release",
            "model": model,
            "release": target.release,
            "action": "rollback",
            "by": by,
            "reason": reason or f"rolled back by {by}",
        }

    # ------------------------------------------------------------------ rollout
    def start(self, step: Step, *, owner: str | None = None) -> Step:
        """`owner`: who starts it (the orchestration's execution id): the same owner
        starting again (a retry) gets the slot it already holds."""
        model, release = step["model"], step["release"]
        lock = self.store.begin_rollout(
            model, release, step["action"], stale_after_s=ROLLOUT_STALE_S, owner=owner
        )
        live = self.store.live(model)
        self.store.append_status(model, release, "rolling_out", step.get("reason"))
        # A canary compares the release with a live one: a rollback restores a known release
        # at once, and a first release has nothing to compare with.
        canary = step["action"] != "rollback" and live is not None and live.release != release
        try:
            rollout = self._rollout(model, release, canary=canary)
            progress = rollout.start(ReleaseRef(model, release, self._manifest_uri(model, release)))
        except Exception as exc:  # a bug or an AWS error outside the target's own handling
            logger.exception("rollout of %s release %s could not start", model, release)
            progress = Progress("failed", f"{type(exc).__name__}: {exc}")
        self._note_stage(model, release, None, progress)
        return {
            **step,
            **_progress(progress),
            "previous": live.release if live else None,
            "lock": {"key": lock.key, "etag": lock.etag},
        }

    def check(self, step: Step) -> Step:
        if step["phase"] != "in_progress":
            return step
        progress = Progress(step["phase"], step.get("phase_reason"), step.get("state"))
        now = self._rollout(step["model"], step["release"]).check(progress)
        self._note_stage(step["model"], step["release"], progress, now)
        return {**step, **_progress(now)}

    def _note_stage(self, model: str, release: str, before: Progress | None, now: Progress) -> None:
        """Each stage a rollout enters (its state's "stage": a canary, waiting for provisioned
        concurrency) goes into the release's history with its reason, so `inferstack
        releases`/`push --wait` show why a release is still rolling out."""
        stage = (now.state or {}).get("stage")
        if now.phase != "in_progress" or not stage or not now.reason:
            return
        if before is not None and (before.state or {}).get("stage") == stage:
            return
        self.store.append_status(model, release, "rolling_out", now.reason, detail=now.state)

    def finish(self, step: Step) -> Step:
        model, release = step["model"], step["release"]
        lock = RolloutLock(model, release, step["lock"]["key"], step["lock"]["etag"])
        try:
            if step["phase"] != "succeeded":
                reason = step.get("phase_reason") or "the rollout did not finish"
                undone = self._abandon(step)
                if undone:
                    reason = f"{reason}; {undone}"
                self.store.append_status(model, release, "failed", reason, detail=step.get("state"))
                self.on_failure(model, reason)
                return {**step, "result": "failed", "reason": reason}
            self._move_pointer(step)
            self.store.append_status(
                model, release, "live", step.get("reason"), detail=step.get("state")
            )
            previous = step.get("previous")
            if previous and previous != release:
                left: State = "rolled_back" if step["action"] == "rollback" else "superseded"
                self.store.append_status(model, previous, left, f"release {release} is live")
            return {**step, "result": "live"}
        finally:
            self.store.end_rollout(lock, step["phase"])

    def _abandon(self, step: Step) -> str | None:
        """A rollout that ended without its target's own verdict (the orchestration's checks
        failed): the target undoes what it still holds (a Lambda canary's weight), and says
        so."""
        if not step.get("state"):
            return None
        try:
            rollout = self._rollout(step["model"], step["release"])
            return rollout.abandon(Progress("failed", step.get("phase_reason"), step["state"]))
        except Exception as exc:  # the failure is recorded all the same
            logger.exception("could not undo the rollout of %s", step["model"])
            return f"could not undo the rollout: {type(exc).__name__}: {exc}"

    def _move_pointer(self, step: Step) -> None:
        for _ in range(3):  # only the holder of the rollout slot moves it; retry a stale read
            live = self.store.live(step["model"])
            try:
                self.store.set_live(
                    step["model"],
                    step["release"],
                    by=step["by"],
                    action=step["action"],
                    reason=step.get("reason"),
                    expected=live,
                )
                return
            except ReleaseConflict:
                continue
        raise ReleaseConflict(f"could not move the live pointer of {step['model']!r}")

    def run(self, step: Step, *, deadline_s: float, poll_s: float = 15.0) -> Step:
        """start -> check until done or `deadline_s` -> finish; in one invocation."""
        if step.get("outcome") != "release":
            return step
        step = self.start(step)
        ends = self._clock() + deadline_s
        while step["phase"] == "in_progress" and self._clock() < ends:
            self._sleep(poll_s)
            step = self.check(step)
        if step["phase"] == "in_progress":
            return step  # the orchestration checks again later; the slot stays held
        return self.finish(step)

    # ------------------------------------------------------------------ helpers
    def _rollout(self, model: str, release: str, *, canary: bool = True) -> Rollout:
        """`canary` False: the target's canary (if any) is left out. A started rollout's own
        state says whether it runs one, so checks get the target as configured."""
        manifest = self.store.get_release(model, release).manifest
        body = smoke_body(manifest.get("signature") or {"inputs": []}, self._reference(manifest))
        target = dict(self.targets[model])
        if not canary:
            target.pop("canary", None)
        return self.rollout_for(model, target, body)

    def _reference(self, manifest: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        stored = manifest.get("reference")
        if not stored:
            return None
        with tempfile.TemporaryDirectory(prefix="inferstack-ref-", dir=self.workdir) as work:
            path = Path(work) / stored["key"].rpartition("/")[2]
            extra = {"VersionId": stored["version_id"]} if stored.get("version_id") else {}
            body = self.store.s3.get_object(Bucket=self.store.bucket, Key=stored["key"], **extra)
            path.write_bytes(body["Body"].read())
            names = [spec["name"] for spec in (manifest.get("signature") or {}).get("inputs", [])]
            return load_reference(path, names if path.suffix == ".npy" else None)

    def _manifest_uri(self, model: str, release: str) -> str:
        return f"s3://{self.store.bucket}/{manifest_key(model, release)}"


def content_id(model: Path, external: list[Path]) -> str:
    """The address of a release's files: the model's SHA-256, or for a bundle with external
    data one over every file's name and digest (same model, other weights: another id)."""
    from inferstack.sources import file_sha256

    model_digest = file_sha256(model)
    if not external:
        return model_digest
    parts = [f"model.onnx={model_digest}", *sorted(f"{p.name}={file_sha256(p)}" for p in external)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _progress(progress: Progress) -> Step:
    return {
        "phase": progress.phase,
        "phase_reason": progress.reason,
        "state": progress.state or {},
    }


def _limit_overrides(target: Mapping[str, Any]) -> dict[str, Any]:
    bound = target.get("max_model_bytes")
    return {"max_bytes": int(bound)} if bound else {}


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
