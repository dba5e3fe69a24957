"""The validation gate on real files: every bad model of the corpus is rejected by its own
check with its own reason, and sound models (the demo model with its reference sample,
light_resnet50, a bundle with external data) pass. Real onnx checker, real ONNX Runtime in
the gate's child process; nothing of ours is replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from inferstack.release.bundle import Upload, build_bundle
from inferstack.release.checks import supported_opset
from inferstack.release.exceptions import ValidationFailed
from inferstack.release.validate import CHECKS, limits_for, validate_model

from . import bad_models as bad
from .conftest import DEMO_DIR, DEMO_MODEL

REFERENCE = DEMO_DIR / "reference_sample.npy"
RESNET50 = Path(bad.RESNET50)


def rejected(report, check: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    """The report failed at `check` with `fragment` in its detail, and skipped the rest."""
    assert not report.passed
    assert report.failed_check == check, [c.to_dict() for c in report.checks]
    assert fragment in report.check(check).detail
    assert [c.name for c in report.checks] == list(CHECKS)
    later = report.checks[CHECKS.index(check) + 1 :]
    assert all(c.status == "skipped" for c in later)
    with pytest.raises(ValidationFailed, match=f"check '{check}' failed"):
        report.raise_for_failure()


# --------------------------------------------------------------------------- the corpus


def test_a_truncated_file_is_not_an_onnx_model(tmp_path: Path) -> None:
    report = validate_model(bad.truncated(tmp_path / "cut.onnx"))
    rejected(report, "format", "not an ONNX model")


@pytest.mark.parametrize("writer", [bad.random_bytes, bad.text_file], ids=["random", "text"])
def test_a_file_that_is_not_onnx_is_rejected(tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    rejected(validate_model(writer(tmp_path / "model.onnx")), "format", "does not parse")


def test_a_file_without_the_onnx_suffix_is_not_an_upload(tmp_path: Path) -> None:
    report = validate_model(bad.text_file(tmp_path / "model.csv"))
    rejected(report, "upload", "neither a .onnx model nor a .tar.gz bundle")


def test_an_opset_newer_than_onnx_runtime_is_rejected(tmp_path: Path) -> None:
    report = validate_model(bad.tiny(tmp_path / "m.onnx", opset=99))
    rejected(report, "opset", "opset 99 of ai.onnx is newer than this ONNX Runtime supports")


def test_the_opset_bound_is_the_one_onnx_runtime_enforces(tmp_path: Path) -> None:
    """The gate's bound is exact: ORT loads a model at the bound and refuses one above it."""
    highest = supported_opset()
    ort.InferenceSession(str(bad.tiny(tmp_path / "ok.onnx", opset=highest)))
    with pytest.raises(Exception, match=f"support for domain ai.onnx is till opset {highest}"):
        ort.InferenceSession(str(bad.tiny(tmp_path / "over.onnx", opset=highest + 1)))
    report = validate_model(tmp_path / "over.onnx")
    rejected(report, "opset", f"(up to {highest})")


@pytest.mark.parametrize(
    ("location", "fragment"),
    [
        ("../../etc/passwd", "leaves the model's directory ('..')"),
        ("/etc/passwd", "is absolute"),
    ],
)
def test_external_data_outside_the_model_directory_is_rejected(
    tmp_path: Path, location: str, fragment: str
) -> None:
    model = bad.external_data_at(tmp_path / "model.onnx", location)
    # As a single file it is refused for referencing external data at all; opened as a
    # bundle's model (a hand-made bundle: build_bundle and open_upload refuse it earlier),
    # for where its data points.
    rejected(validate_model(model), "external_data", "cannot reference external data")
    as_bundle = Upload(model, [], None, {}, "bundle")
    rejected(validate_model(as_bundle), "external_data", fragment)


def test_a_single_file_upload_may_not_reference_external_data(tmp_path: Path) -> None:
    model = bad.with_external_data(tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").is_file()  # the data is right there, still refused
    report = validate_model(model)
    rejected(report, "external_data", "upload a bundle (.tar.gz)")


@pytest.mark.parametrize(
    ("changed", "fragment"),
    [
        ({"input_name": "features"}, "input 'x' is gone"),
        ({"dtype": TensorProto.DOUBLE}, "input 'x' changes datatype FP32 -> FP64"),
        ({"shape": ("n", 4, 1)}, "input 'x' changes rank 2 -> 3"),
        ({"shape": ("n", 5)}, "input 'x' changes dimension 1 from 4 to 5"),
    ],
    ids=["renamed", "dtype", "rank", "fixed-dim"],
)
def test_an_incompatible_signature_is_rejected_unless_allowed(
    tmp_path: Path, changed: dict, fragment: str
) -> None:
    live = bad.tiny(tmp_path / "live.onnx")
    candidate = bad.tiny(tmp_path / "candidate.onnx", **changed)
    report = validate_model(candidate, live=live)
    rejected(report, "signature", fragment)
    assert "--allow-signature-change" in report.check("signature").detail

    allowed = validate_model(candidate, live=live, allow_signature_change=True)
    assert allowed.passed
    assert "breaking change allowed" in allowed.check("signature").detail


def test_a_dynamic_dimension_stays_compatible_with_a_fixed_one(tmp_path: Path) -> None:
    live = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [8, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [8, 4]}],
    }
    report = validate_model(bad.tiny(tmp_path / "m.onnx"), live=live)
    assert report.passed, report.to_dict()
    assert report.check("signature").detail == "compatible with the live release"


def test_nan_outputs_are_rejected(tmp_path: Path) -> None:
    report = validate_model(bad.nan_outputs(tmp_path / "m.onnx"))
    rejected(report, "smoke", "output 'y' has 8 of 8 values that are not finite")
    assert report.smoke_inputs == "synthetic"


def test_outputs_with_another_batch_size_than_the_input_are_rejected(tmp_path: Path) -> None:
    report = validate_model(bad.batch_mismatch(tmp_path / "m.onnx"))
    rejected(report, "smoke", "output 'z' has 1 rows for an input batch of 2")


def test_an_oversized_model_is_rejected(tmp_path: Path) -> None:
    report = validate_model(DEMO_MODEL, limits=limits_for("lambda", max_bytes=1000))
    rejected(report, "size", "is over the 0.0 MiB (1000 bytes) bound for this target")


def test_a_model_too_slow_to_load_is_rejected(tmp_path: Path) -> None:
    limits = limits_for("lambda", max_load_seconds=0.15)
    # The one-node model loads well within the bound the 12,000-node one cannot meet.
    assert validate_model(bad.tiny(tmp_path / "quick.onnx"), limits=limits).passed
    report = validate_model(bad.slow_to_load(tmp_path / "slow.onnx"), limits=limits)
    rejected(report, "load", "load time bound of 0.15 s")


def test_a_load_past_the_memory_bound_is_rejected(tmp_path: Path) -> None:
    # Python and ONNX Runtime alone take more than 20 MB: the bound is measured, not assumed.
    report = validate_model(DEMO_MODEL, limits=limits_for("lambda", max_load_memory_mb=20))
    rejected(report, "load", "20 MB bound")


def test_a_model_onnx_runtime_cannot_load_is_rejected_at_load(tmp_path: Path) -> None:
    # A bf16 + string model passes onnx's checks; the runtime's backend refuses it.
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["c"]), helper.make_node("Identity", ["s"], ["t"])],
        "mixed",
        [
            helper.make_tensor_value_info("b", TensorProto.BFLOAT16, [1]),
            helper.make_tensor_value_info("s", TensorProto.STRING, [1]),
        ],
        [
            helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [1]),
            helper.make_tensor_value_info("t", TensorProto.STRING, [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    rejected(validate_model(tmp_path / "m.onnx"), "load", "BF16 and string tensors")


# --------------------------------------------------------------------------- good models


def test_the_demo_model_passes_on_its_reference_sample() -> None:
    report = validate_model(DEMO_MODEL, reference=REFERENCE, live=DEMO_MODEL)
    assert report.passed, report.to_dict()
    assert report.failed_check is None
    assert report.smoke_inputs == "reference"
    assert "reference inputs -> label [133], probabilities [133, 3]" in report.check("smoke").detail
    assert report.signature == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    assert report.p50_ms is not None and report.p50_ms > 0
    report.raise_for_failure()
    manifest = report.to_dict()
    assert manifest["passed"] is True and manifest["p50_ms"] == report.p50_ms
    assert [c["name"] for c in manifest["checks"]] == list(CHECKS)
    assert all(set(c) >= {"name", "passed", "detail", "seconds"} for c in manifest["checks"])


def test_without_a_reference_the_smoke_inputs_are_called_synthetic() -> None:
    report = validate_model(DEMO_MODEL)
    assert report.passed
    assert report.smoke_inputs == "synthetic"
    assert report.check("smoke").detail.startswith("synthetic inputs -> label [2]")


def test_a_reference_that_does_not_fit_the_model_fails_the_smoke_check(tmp_path: Path) -> None:
    np.save(tmp_path / "ref.npy", np.zeros((3, 12), dtype=np.float32))
    report = validate_model(DEMO_MODEL, reference=tmp_path / "ref.npy")
    rejected(report, "smoke", "input 'features' has shape [3, 12]")
    assert report.smoke_inputs == "reference"


def test_light_resnet50_passes() -> None:
    report = validate_model(RESNET50, limits=limits_for("sagemaker"))
    assert report.passed, report.to_dict()
    assert report.signature is not None
    assert report.signature["inputs"] == [
        {"name": "gpu_0/data_0", "datatype": "FP32", "shape": [1, 3, 224, 224]}
    ]
    assert report.check("smoke").detail.startswith("synthetic inputs -> gpu_0/softmax_1 [1, 1000]")


def test_a_bundle_with_external_data_passes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    model = bad.with_external_data(source / "weighted.onnx", location="weights.bin")
    np.savez(tmp_path / "ref.npz", x=np.ones((3, 4), dtype=np.float32))
    bundle = build_bundle(model, tmp_path / "w.tar.gz", reference=tmp_path / "ref.npz")
    report = validate_model(bundle)
    assert report.passed, report.to_dict()
    assert report.check("upload").detail == "bundle: model.onnx, weights.bin, reference.npz"
    assert report.check("external_data").detail == "1 external data file(s) beside the model"
    assert report.smoke_inputs == "reference"
    assert "y [3, 4]" in report.check("smoke").detail


def test_limits_per_target() -> None:
    lam = limits_for("lambda")
    assert lam.max_bytes < 10_240 * 1024 * 1024 and lam.max_load_memory_mb <= 10_240
    assert limits_for("sagemaker").max_bytes > lam.max_bytes
    assert limits_for("ecs", smoke_runs=1).smoke_runs == 1
    with pytest.raises(ValueError, match="unknown target 'k8s'"):
        limits_for("k8s")
