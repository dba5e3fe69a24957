"""The FP16 copy a GPU target's release gets when its configuration asks for FP16.

Real parts: onnxconverter-common converts, ONNX Runtime runs both copies on the CPU, the
promoter stores the copy on moto's S3 and names it in the release manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from moto import mock_aws
from onnx import TensorProto, helper, numpy_helper

from inferstack.release.exceptions import ReleaseError
from inferstack.release.precision import make_fp16_copy
from inferstack.release.promote import Promoter
from inferstack.release.store import ReleaseStore

from .deployed import upload_event, use_fake_aws, versioned_bucket

if TYPE_CHECKING:
    from collections.abc import Iterator

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]}
BUCKET = "acme-models"


def mlp(path: Path, *, scale: float = 1.0, layers: int = 3) -> Path:
    """A seeded MLP, [batch, 64] -> [batch, 64]; `scale` multiplies one weight matrix and
    divides the next (the same function, larger intermediate values)."""
    rng = np.random.default_rng(7)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        factor = scale if i == 0 else (1 / scale if i == 1 else 1.0)
        weight = (rng.standard_normal((64, 64)) / 8 * factor).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        nodes.append(
            helper.make_node("Relu" if i < layers - 1 else "Identity", [f"h{i}"], [f"a{i}"])
        )
        current = f"a{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_the_copy_keeps_the_signature_halves_the_weights_and_answers_alike(tmp_path: Path) -> None:
    source = mlp(tmp_path / "model.onnx")
    reference = {"x": np.random.default_rng(1).standard_normal((100, 64)).astype(np.float32)}
    copy = make_fp16_copy(source, tmp_path / "model.fp16.onnx", SIGNATURE, reference)

    assert copy.checked_on == "reference"
    assert copy.max_abs_error is not None and 0 < copy.max_abs_error < 0.05
    session = ort.InferenceSession(str(copy.path), providers=["CPUExecutionProvider"])
    [x], [y] = session.get_inputs(), session.get_outputs()
    assert (x.type, y.type) == ("tensor(float)", "tensor(float)")  # clients see no change
    weights = [t for t in onnx.load(str(copy.path)).graph.initializer if t.name.startswith("w")]
    assert {t.data_type for t in weights} == {TensorProto.FLOAT16}
    assert copy.path.stat().st_size < 0.6 * source.stat().st_size


def test_without_a_reference_sample_it_is_checked_on_seeded_inputs(tmp_path: Path) -> None:
    copy = make_fp16_copy(mlp(tmp_path / "m.onnx"), tmp_path / "m16.onnx", SIGNATURE, None)
    assert copy.checked_on == "synthetic" and copy.max_abs_error is not None


def test_values_past_fp16s_range_refuse_the_copy_with_the_numbers(tmp_path: Path) -> None:
    # Intermediate values near 1e5 overflow FP16 (largest finite 65504): the copy answers inf.
    source = mlp(tmp_path / "big.onnx", scale=4e5)
    with pytest.raises(ReleaseError, match=r"answers differently: output 'y' differs by") as err:
        make_fp16_copy(source, tmp_path / "big16.onnx", SIGNATURE, None)
    assert "constants clamped" in str(err.value) and "keep precision fp32" in str(err.value)


def test_a_copy_the_converter_leaves_inconsistent_is_refused_not_stored(tmp_path: Path) -> None:
    """The onnx package's light_squeezenet makes its weights with ConstantOfShape: the
    converter turns the graph's types to FP16 but not those FP32 constants, a copy that no
    runtime loads (TensorRT would fail the rollout at the engine build)."""
    source = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    signature = {"inputs": [{"name": "data_0", "datatype": "FP32", "shape": [1, 3, 224, 224]}]}
    with pytest.raises(ReleaseError, match=r"the FP16 copy is not a valid model \(") as err:
        make_fp16_copy(source, tmp_path / "squeezenet16.onnx", signature, None)
    assert "elem type differs" in str(err.value) and "keep precision fp32" in str(err.value)


# ------------------------------------------------------------------ through the promoter


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseStore]:
    use_fake_aws(monkeypatch)
    with mock_aws():
        s3 = boto3.client("s3")
        versioned_bucket(s3, BUCKET)
        yield ReleaseStore(s3, BUCKET)


def prepare(store: ReleaseStore, model_file: Path, precision: str) -> dict[str, Any]:
    target = {"target": "sagemaker", "endpoint": "inferstack-dev-mlp", "precision": precision}

    def no_rollout(*_: Any) -> Any:
        raise AssertionError("prepare makes the release; it rolls nothing out")

    promoter = Promoter(store, targets={"mlp": target}, rollout_for=no_rollout)
    event = upload_event(store.s3, BUCKET, "uploads/mlp/model.onnx", model_file.read_bytes())
    return promoter.prepare(event)


def test_an_fp16_target_gets_a_release_that_names_its_checked_copy(
    store: ReleaseStore, tmp_path: Path
) -> None:
    step = prepare(store, mlp(tmp_path / "model.onnx"), "fp16")
    assert step["outcome"] == "release", step
    manifest = store.get_release("mlp", step["release"]).manifest
    variant = manifest["variants"]["fp16"]
    assert variant["checked_on"] == "synthetic" and variant["max_abs_error"] < 0.05
    stored = store.s3.get_object(
        Bucket=BUCKET, Key=variant["artifact"]["key"], VersionId=variant["artifact"]["version_id"]
    )["Body"].read()
    fp16 = onnx.load_from_string(stored)
    assert any(t.data_type == TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_an_fp32_target_gets_no_copy(store: ReleaseStore, tmp_path: Path) -> None:
    step = prepare(store, mlp(tmp_path / "model.onnx"), "fp32")
    assert store.get_release("mlp", step["release"]).manifest["variants"] == {}


def test_a_copy_that_answers_differently_rejects_the_release(
    store: ReleaseStore, tmp_path: Path
) -> None:
    step = prepare(store, mlp(tmp_path / "model.onnx", scale=4e5), "fp16")
    assert step["outcome"] == "rejected", step
    assert "FP16 copy answers differently" in step["reason"]
    assert store.live("mlp") is None
