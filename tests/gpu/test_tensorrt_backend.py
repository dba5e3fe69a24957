"""TensorRT end to end (needs TensorRT: has not run on our machines). Models built with
onnx.helper or normalised from the onnx package's light models (random weights, so the
comparison with ONNX Runtime is not vacuous); engines cached in a local directory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from inferstack.models.tensorrt.model import TensorRTModel
from tests.batch_models import mlp, normalised_light

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.gpu


def cpu_outputs(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)  # type: ignore[no-any-return]


def loaded(path: Path, cache: Path, **options: object) -> TensorRTModel:
    model = TensorRTModel("m", str(path), "1", cache_dir=str(cache), **options)  # type: ignore[arg-type]
    assert model.load_safely(), model.error
    return model


def test_a_dynamic_batch_mlp_builds_serves_and_is_a_cache_hit_next_time(
    tensorrt: None, tmp_path: Path
) -> None:
    path = mlp(tmp_path / "mlp.onnx", width=256, layers=4)
    began = time.monotonic()
    first = loaded(path, tmp_path / "cache", max_batch_size=32)
    build_s = time.monotonic() - began
    assert first.batchable and first.max_rows == 32
    x = np.random.default_rng(1).standard_normal((7, 256)).astype(np.float32)
    got = first.predict({"x": x})["y"]
    assert np.allclose(got, cpu_outputs(path, {"x": x})[0], rtol=1e-3, atol=1e-3)
    built = dict(first.build_info)
    first.close()
    began = time.monotonic()
    second = loaded(path, tmp_path / "cache", max_batch_size=32)
    assert first.build_info["source"] == "built"
    assert second.build_info["source"] == "cache"
    assert second.build_info["built_at"] == built["built_at"]  # the same entry, not rebuilt
    assert time.monotonic() - began < 0.5 * build_s + 1.0
    second.close()


def test_light_resnet50_equals_onnx_runtime(tensorrt: None, tmp_path: Path) -> None:
    path = normalised_light("light_resnet50", tmp_path / "resnet50.onnx")
    model = loaded(path, tmp_path / "cache", max_batch_size=8)
    x = np.random.default_rng(2).standard_normal((4, 3, 224, 224)).astype(np.float32)
    name = model.outputs[0].name
    want = cpu_outputs(path, {model.inputs[0].name: x})[0]
    assert np.allclose(model.predict({model.inputs[0].name: x})[name], want, rtol=1e-3, atol=1e-3)
    model.close()


def test_a_model_tensorrt_cannot_parse_is_unavailable_with_the_parsers_words(
    tensorrt: None, tmp_path: Path
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.acme")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    path = tmp_path / "custom.onnx"
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)]
    )
    model.ir_version = 8
    import onnx

    onnx.save(model, path)
    served = TensorRTModel("custom", str(path), "1", cache_dir=str(tmp_path / "cache"))
    assert not served.load_safely()
    assert served.state == "UNAVAILABLE"
    assert served.error  # ONNX Runtime or TensorRT refuses it, in words


def test_an_entry_keyed_for_another_gpu_is_ignored(tensorrt: None, tmp_path: Path) -> None:
    from inferstack.models.tensorrt.cache import EngineCache

    path = mlp(tmp_path / "mlp.onnx")
    first = loaded(path, tmp_path / "cache", max_batch_size=4)
    first.close()
    cache = EngineCache(tmp_path / "cache" / "engines", None, None, "m")
    digest_dirs = [p for p in cache.local_dir.iterdir() if p.name != "_timing"]
    assert len(digest_dirs) == 1
    record = digest_dirs[0] / "build.json"
    import json

    info = json.loads(record.read_text())
    info["key"]["gpu_name"] = "Another GPU"
    record.write_text(json.dumps(info))
    second = loaded(path, tmp_path / "cache", max_batch_size=4)
    assert second.build_info["source"] == "built"  # the entry for another GPU was not used
    second.close()
