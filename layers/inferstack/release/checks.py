"""The validation gate's checks that need no ONNX Runtime session: each returns the problem
it found (a sentence for the operator) or None, and never raises for a bad model."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferstack.release.bundle import external_data_locations, location_problem

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

    from inferstack.release.bundle import Upload

# ONNX Runtime only guarantees models stamped with ai.onnx opset 7 or above (its loader
# warns below that: "ONNX Runtime only *guarantees* support for models stamped with opset
# version 7 or above"; https://onnxruntime.ai/docs/reference/compatibility.html).
MIN_OPSET = 7
DEFAULT_DOMAINS = ("", "ai.onnx")

Signature = dict[str, list[dict[str, Any]]]


def size_problem(upload: Upload, max_bytes: int) -> tuple[int, str | None]:
    """The upload's total bytes (model and external data) and whether that is too many."""
    total = upload.model_path.stat().st_size + sum(f.stat().st_size for f in upload.external_files)
    if total > max_bytes:
        return total, f"{_mb(total)} is over the {_mb(max_bytes)} bound for this target"
    return total, None


def parse(path: Path) -> tuple[onnx.ModelProto | None, str | None]:
    """The model's protobuf without its external data (nothing beyond the file is read)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, or a file that is not protobuf at all
        return None, f"not an ONNX model (the file does not parse as one): {_one_line(exc)}"
    if not model.HasField("graph"):
        return None, "not an ONNX model (it has no graph)"
    return model, None


def external_data_problem(model: onnx.ModelProto, upload: Upload) -> str | None:
    """External data stays inside the model's directory, and only a bundle may have any."""
    locations = external_data_locations(model)
    if locations and upload.kind == "onnx":
        return (
            f"a single .onnx upload cannot reference external data ({', '.join(locations)}): "
            "upload a bundle (.tar.gz) that holds the model and its data files "
            "(`inferstack push` builds one)"
        )
    for location in locations:
        problem = location_problem(location)
        if problem:
            return problem
    return None


def checker_problem(path: Path) -> str | None:
    """onnx.checker's full check (with shape inference), given the path so that models over
    2 GB, whose weights sit in external data, are checked too."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, or a C++ error string
        return _one_line(exc)
    return None


@cache
def supported_opset() -> int:
    """The highest ai.onnx opset the installed ONNX Runtime supports.

    ONNX Runtime has no public call for it; its kernel registry does say it: the highest
    `since_version` among its registered ai.onnx kernels is the opset of the ONNX release it
    was built with, which is the bound its own loader enforces ("Current official support for
    domain ai.onnx is till opset N"; tests/functional/test_validation_gate.py checks the two
    agree). onnx's own `onnx_opset_version()` would be the wrong bound: the onnx package may be
    newer than the runtime that serves.
    """
    from onnxruntime.capi import _pybind_state

    kernels = _pybind_state.get_all_opkernel_def()
    return max(int(k.version_range[0]) for k in kernels if k.domain in DEFAULT_DOMAINS)


def opset_problem(model: onnx.ModelProto) -> str | None:
    """The default domain's opset against this runtime's bounds; other domains (ai.onnx.ml,
    com.microsoft) are checked by ONNX Runtime itself when it loads the model."""
    versions = [int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        return "the model imports no ai.onnx opset"
    highest = supported_opset()
    for version in versions:
        if version > highest:
            return (
                f"opset {version} of ai.onnx is newer than this ONNX Runtime supports "
                f"(up to {highest})"
            )
        if version < MIN_OPSET:
            return f"opset {version} of ai.onnx is older than ONNX Runtime supports ({MIN_OPSET}+)"
    return None


def signature_problems(candidate: Signature, live: Signature) -> list[str]:
    """What breaks clients of the live release: a live input or output that is gone or has
    another datatype, rank or fixed size, or a new input that clients do not send."""
    problems: list[str] = []
    for side in ("inputs", "outputs"):
        ours = {t["name"]: t for t in candidate.get(side, [])}
        for old in live.get(side, []):
            new = ours.get(old["name"])
            noun = side[:-1]
            if new is None:
                problems.append(f"{noun} '{old['name']}' is gone (now: {sorted(ours)})")
                continue
            problems.extend(_tensor_changes(noun, old, new))
    known = {t["name"] for t in live.get("inputs", [])}
    problems.extend(
        f"new input '{t['name']}' that clients of the live release do not send"
        for t in candidate.get("inputs", [])
        if t["name"] not in known
    )
    return problems


def _tensor_changes(noun: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    name = old["name"]
    if new["datatype"] != old["datatype"]:
        return [f"{noun} '{name}' changes datatype {old['datatype']} -> {new['datatype']}"]
    if len(new["shape"]) != len(old["shape"]):
        return [f"{noun} '{name}' changes rank {len(old['shape'])} -> {len(new['shape'])}"]
    return [
        f"{noun} '{name}' changes dimension {axis} from {was} to {now}"
        for axis, (was, now) in enumerate(zip(old["shape"], new["shape"], strict=True))
        if was >= 0 and now >= 0 and was != now
    ]


def output_problems(smoke: dict[str, Any]) -> list[str]:
    """Float outputs finite; a batched input gives every batched output as many rows."""
    problems = [
        f"output '{o['name']}' has {o['nonfinite']} of {o['size']} values that are not finite "
        "(NaN or infinity)"
        for o in smoke["outputs"]
        if o["nonfinite"]
    ]
    batch = smoke.get("input_batch")
    if batch is not None:
        problems.extend(
            f"output '{o['name']}' has {o['shape'][0]} rows for an input batch of {batch}"
            for o in smoke["outputs"]
            if o["declared"] and o["declared"][0] == -1 and o["shape"] and o["shape"][0] != batch
        )
    return problems


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB ({size} bytes)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:600] or type(exc).__name__
