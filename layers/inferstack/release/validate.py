"""The validation gate: what `inferstack validate` runs locally and the promoter runs on
every upload, check by check, stopping at the first that fails.

Checks, in order (the path checks come before anything that follows a path):
upload (a bundle unpacks safely) -> size -> format (parses as ONNX) -> external_data ->
onnx_checker (full) -> opset -> load (ONNX Runtime, in a child process, within a time and
memory bound) -> signature (compatible with the live release) -> smoke (one inference on
the reference sample, or synthetic inputs; outputs finite, batch consistent; p50 latency).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from inferstack.release import checks
from inferstack.release.bundle import Upload, open_upload
from inferstack.release.exceptions import UploadError, ValidationFailed
from inferstack.release.probe import STARTUP_TIMEOUT_S, Probe, ProbeError

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnx

    from inferstack.release.checks import Signature

T = TypeVar("T")
Status = Literal["passed", "failed", "skipped"]
CHECKS = (
    "upload",
    "size",
    "format",
    "external_data",
    "onnx_checker",
    "opset",
    "load",
    "signature",
    "smoke",
)
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ValidationLimits:
    """Bounds a model must fit to be released; `limits_for(target)` gives the defaults."""

    max_bytes: int
    max_load_seconds: float
    max_load_memory_mb: int
    smoke_runs: int = 5
    max_smoke_seconds: float = 60.0


# Lambda: a function has at most 10,240 MB of memory and 512-10,240 MB of /tmp, where the
# runtime caches the model (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html);
# the kit's default function has 2,048 MB and 1,024 MB (infra/config.py LambdaModel). The
# Init phase, where the model loads, is limited to 10 s
# (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html).
# SageMaker: models over 30 GB need a larger volume and over 40 GB a longer download timeout
# (https://docs.aws.amazon.com/sagemaker/latest/dg/large-model-inference-hosting.html); the
# GPU targets get 8 GiB, well under both, and under the kit's ECS task memory (14,336 MiB).
TARGET_LIMITS: dict[str, ValidationLimits] = {
    "lambda": ValidationLimits(max_bytes=1024 * _MIB, max_load_seconds=10, max_load_memory_mb=2048),
    "sagemaker": ValidationLimits(
        max_bytes=8192 * _MIB, max_load_seconds=120, max_load_memory_mb=8192
    ),
    "ecs": ValidationLimits(max_bytes=8192 * _MIB, max_load_seconds=120, max_load_memory_mb=8192),
}


def limits_for(target: str, **overrides: Any) -> ValidationLimits:
    """The default limits of a target ("lambda", "sagemaker", "ecs"), with any field replaced."""
    try:
        limits = TARGET_LIMITS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}: one of {sorted(TARGET_LIMITS)}") from None
    return replace(limits, **overrides)


class CheckResult(NamedTuple):
    name: str
    status: Status
    detail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class ValidationReport:
    checks: list[CheckResult] = field(default_factory=list)
    # {"inputs": [...], "outputs": [...]} as the model metadata reports it; None if not loaded.
    signature: Signature | None = None
    p50_ms: float | None = None
    # What the smoke inference ran on: never call synthetic inputs a reference sample.
    smoke_inputs: Literal["reference", "synthetic"] | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed_check(self) -> str | None:
        return next((c.name for c in self.checks if c.status == "failed"), None)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's "validation" (and the report's other findings)."""
        return {
            "passed": self.passed,
            "failed_check": self.failed_check,
            "checks": [check.to_dict() for check in self.checks],
            "signature": self.signature,
            "p50_ms": self.p50_ms,
            "smoke_inputs": self.smoke_inputs,
        }

    def raise_for_failure(self) -> None:
        failed = next((c for c in self.checks if c.status == "failed"), None)
        if failed is not None:
            raise ValidationFailed(f"check '{failed.name}' failed: {failed.detail}")


class _Failed(Exception):
    """One check's failure; the message is its detail."""


class _Gate:
    """Runs checks in order; after a failure every later check is recorded as skipped."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.failed: str | None = None

    def run(self, name: str, step: Callable[[], tuple[str, T]]) -> T | None:
        if self.failed is not None:
            reason = f"skipped: check '{self.failed}' failed"
            self.report.checks.append(CheckResult(name, "skipped", reason, 0.0))
            return None
        start = time.perf_counter()
        try:
            detail, value = step()
        except (_Failed, UploadError) as exc:
            self.failed = name
            self.report.checks.append(CheckResult(name, "failed", str(exc), _since(start)))
            return None
        self.report.checks.append(CheckResult(name, "passed", detail, _since(start)))
        return value


def validate_model(
    upload_or_model_path: Upload | Path | str,
    *,
    reference: Path | str | None = None,
    live: Path | str | Signature | None = None,
    allow_signature_change: bool = False,
    limits: ValidationLimits | None = None,
) -> ValidationReport:
    """Run every check on an upload (a .onnx file, a .tar.gz bundle, or an opened Upload).

    `reference` overrides the bundle's reference sample; `live` is the live release's model
    file or its signature; `limits` defaults to Lambda's.
    """
    limits = limits or TARGET_LIMITS["lambda"]
    with tempfile.TemporaryDirectory(prefix="inferstack-validate-") as workdir:
        return _validate(
            upload_or_model_path,
            workdir=Path(workdir),
            reference=reference,
            live=live,
            allow_change=allow_signature_change,
            limits=limits,
        )


def _validate(
    source: Upload | Path | str,
    *,
    workdir: Path,
    reference: Path | str | None,
    live: Path | str | Signature | None,
    allow_change: bool,
    limits: ValidationLimits,
) -> ValidationReport:
    report = ValidationReport()
    gate = _Gate(report)
    upload = gate.run("upload", lambda: _open(source, workdir, limits))
    gate.run("size", lambda: _size(upload, limits))
    model = gate.run("format", lambda: _format(upload))
    gate.run("external_data", lambda: _external_data(model, upload))
    gate.run("onnx_checker", lambda: _checked(checks.checker_problem(_path(upload)), "passed"))
    gate.run("opset", lambda: _opset(model))
    sample = Path(reference) if reference is not None else None
    if sample is None and upload is not None:
        sample = upload.reference
    probe: Probe | None = None
    try:
        if gate.failed is None and upload is not None:
            probe = Probe(
                upload.model_path,
                max_rss_mb=limits.max_load_memory_mb,
                reference=sample,
                runs=limits.smoke_runs,
            )
        gate.run("load", lambda: _load(_probe(probe), limits, report))
        gate.run("signature", lambda: _signature(report.signature, live, allow_change, limits))
        gate.run("smoke", lambda: _smoke(_probe(probe), limits, report, sample is not None))
    finally:
        if probe is not None:
            probe.close()
    return report


# --------------------------------------------------------------------------- the steps


def _open(
    source: Upload | Path | str, workdir: Path, limits: ValidationLimits
) -> tuple[str, Upload]:
    # A bundle unpacks under the size bound; a single .onnx is used where it is.
    upload = (
        source
        if isinstance(source, Upload)
        else open_upload(Path(source), workdir, max_unpacked_bytes=limits.max_bytes)
    )
    parts = [upload.model_path.name, *(f.name for f in upload.external_files)]
    if upload.reference is not None:
        parts.append(upload.reference.name)
    if upload.settings:
        parts.append("settings.json")
    return f"{upload.kind}: {', '.join(parts)}", upload


def _size(upload: Upload | None, limits: ValidationLimits) -> tuple[str, bool]:
    total, problem = checks.size_problem(_need(upload), limits.max_bytes)
    if problem:
        raise _Failed(problem)
    return f"{total} bytes (bound {limits.max_bytes})", True


def _format(upload: Upload | None) -> tuple[str, onnx.ModelProto]:
    model, problem = checks.parse(_need(upload).model_path)
    if model is None:
        raise _Failed(problem)
    return f"ONNX IR version {model.ir_version}, {len(model.graph.node)} nodes", model


def _external_data(model: onnx.ModelProto | None, upload: Upload | None) -> tuple[str, None]:
    problem = checks.external_data_problem(_need(model), _need(upload))
    if problem:
        raise _Failed(problem)
    count = len(_need(upload).external_files)
    return (f"{count} external data file(s) beside the model" if count else "none"), None


def _opset(model: onnx.ModelProto | None) -> tuple[str, None]:
    proto = _need(model)
    problem = checks.opset_problem(proto)
    if problem:
        raise _Failed(problem)
    imports = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    return f"{imports} (this ONNX Runtime: ai.onnx up to {checks.supported_opset()})", None


def _load(probe: Probe, limits: ValidationLimits, report: ValidationReport) -> tuple[str, None]:
    try:
        probe.expect("started", STARTUP_TIMEOUT_S)
        loaded = probe.expect("load", limits.max_load_seconds + 0.5)
    except ProbeError as exc:
        raise _Failed(
            f"did not load within the load time bound of {limits.max_load_seconds:g} s "
            f"or the memory bound: {exc}"
        ) from exc
    if not loaded["ok"]:
        raise _Failed(f"ONNX Runtime could not load the model: {loaded['error']}")
    seconds, peak = float(loaded["seconds"]), max(loaded["peak_rss_mb"], probe.peak_rss_mb)
    if seconds > limits.max_load_seconds:
        raise _Failed(
            f"loaded in {seconds:.3f} s, over the load time bound of {limits.max_load_seconds:g} s"
        )
    if peak > limits.max_load_memory_mb:
        raise _Failed(
            f"used {peak:.0f} MB while loading, over the {limits.max_load_memory_mb} MB bound"
        )
    report.signature = {"inputs": loaded["inputs"], "outputs": loaded["outputs"]}
    return f"loaded in {seconds:.3f} s, peak resident memory {peak:.0f} MB", None


def _signature(
    candidate: Signature | None,
    live: Path | str | Signature | None,
    allow_change: bool,
    limits: ValidationLimits,
) -> tuple[str, None]:
    if live is None:
        return "no live release to compare with", None
    current = live if isinstance(live, dict) else _live_signature(Path(live), limits)
    problems = checks.signature_problems(_need(candidate), current)
    if not problems:
        return "compatible with the live release", None
    if allow_change:
        return f"breaking change allowed by the upload: {'; '.join(problems)}", None
    raise _Failed(
        f"incompatible with the live release: {'; '.join(problems)} "
        "(a breaking change needs --allow-signature-change)"
    )


def _live_signature(path: Path, limits: ValidationLimits) -> Signature:
    with Probe(path, max_rss_mb=limits.max_load_memory_mb) as probe:
        try:
            probe.expect("started", STARTUP_TIMEOUT_S)
            loaded = probe.expect("load", limits.max_load_seconds + 0.5)
        except ProbeError as exc:
            raise _Failed(f"the live model could not be read: {exc}") from exc
    if not loaded["ok"]:
        raise _Failed(f"the live model could not be read: {loaded['error']}")
    return {"inputs": loaded["inputs"], "outputs": loaded["outputs"]}


def _smoke(
    probe: Probe, limits: ValidationLimits, report: ValidationReport, has_reference: bool
) -> tuple[str, None]:
    try:
        result = probe.smoke(limits.max_smoke_seconds)
    except ProbeError as exc:
        raise _Failed(f"the smoke inference did not finish: {exc}") from exc
    report.smoke_inputs = result.get("source") or ("reference" if has_reference else "synthetic")
    if not result["ok"]:
        raise _Failed(f"inference on {report.smoke_inputs} inputs failed: {result['error']}")
    problems = checks.output_problems(result)
    if problems:
        raise _Failed(f"on {report.smoke_inputs} inputs: {'; '.join(problems)}")
    report.p50_ms = round(statistics.median(result["latencies_ms"]), 3)
    shapes = ", ".join(f"{o['name']} {o['shape']}" for o in result["outputs"])
    return f"{report.smoke_inputs} inputs -> {shapes}; p50 {report.p50_ms} ms", None


# --------------------------------------------------------------------------- helpers


def _checked(problem: str | None, detail: str) -> tuple[str, None]:
    if problem:
        raise _Failed(problem)
    return detail, None


def _need(value: T | None) -> T:
    # Steps run only after the ones they depend on passed: None here is a bug, not a model.
    assert value is not None
    return value


def _path(upload: Upload | None) -> Path:
    return _need(upload).model_path


def _probe(probe: Probe | None) -> Probe:
    return _need(probe)


def _since(start: float) -> float:
    return time.perf_counter() - start
