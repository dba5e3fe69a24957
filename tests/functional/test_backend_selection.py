"""Which backend serves a model, and why: without a GPU the same configuration serves on
ONNX Runtime on the CPU and says so; a forced TensorRT that cannot run is a model that
reports UNAVAILABLE with the reason, never a crashed host."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inferstack.dataplane import DataPlane
from inferstack.models import Model, ModelRepository, OnnxModel
from inferstack.models.select import describe, make_model
from inferstack.models.tensorrt.device import gpu_identity, probe_gpu
from inferstack.models.tensorrt.model import TensorRTModel
from inferstack.server.app import create_app
from inferstack.settings import ModelConfig

if TYPE_CHECKING:
    from pathlib import Path

    import onnxruntime as ort

no_gpu = pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None,
    reason="this host has an NVIDIA GPU: the no-GPU path is tested where there is none",
)


def client_for(*models: Model) -> TestClient:
    repository = ModelRepository(models)
    repository.load_all()
    return TestClient(create_app(DataPlane(repository, max_request_bytes=1 << 20)))


@no_gpu
def test_the_probe_says_why_there_is_no_gpu() -> None:
    found = probe_gpu()
    assert found.identity is None and gpu_identity() is None
    assert found.reason.startswith("no NVIDIA GPU: ")


@no_gpu
def test_auto_without_a_gpu_serves_on_the_cpu_and_says_why(
    wine_path: Path,
    wine_rows: np.ndarray,
    wine_session: ort.InferenceSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    choice = make_model(ModelConfig("wine", str(wine_path), "1"), precision="fp16")
    assert isinstance(choice.model, OnnxModel)
    assert (choice.backend, choice.device) == ("onnxruntime", "cpu")
    assert choice.reason.startswith("no NVIDIA GPU")
    assert "inferstack: model wine -> onnxruntime on CPU (no NVIDIA GPU" in caplog.text
    assert describe([choice]) == {
        "backends": {
            "wine": {"platform": "onnxruntime_onnx", "device": "cpu", "reason": choice.reason}
        }
    }
    client = client_for(choice.model)
    assert client.get("/v2/models/wine").json()["platform"] == "onnxruntime_onnx"
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": list(wine_rows.shape),
                "datatype": "FP32",
                "data": wine_rows.ravel().tolist(),
            }
        ]
    }
    reply = client.post("/v2/models/wine/infer", json=body)
    assert reply.status_code == 200
    first = reply.json()["outputs"][0]
    want = wine_session.run([first["name"]], {"features": wine_rows})[0]
    assert np.allclose(np.asarray(first["data"]).reshape(want.shape), want)


@no_gpu
def test_forced_tensorrt_without_a_gpu_is_unavailable_with_the_reason(wine_path: Path) -> None:
    choice = make_model(ModelConfig("wine", str(wine_path), "1"), backend="tensorrt")
    assert isinstance(choice.model, TensorRTModel)
    assert choice.reason.startswith("INFERSTACK_BACKEND=tensorrt, but no NVIDIA GPU")
    client = client_for(choice.model)
    assert choice.model.state == "UNAVAILABLE"
    ready = client.get("/v2/models/wine/ready")
    assert ready.status_code == 503
    assert "INFERSTACK_BACKEND=tensorrt, but no NVIDIA GPU" in ready.json()["error"]
    assert client.get("/ping").status_code == 503  # the platform sees a failed rollout
    assert client.get("/v2/health/live").status_code == 200  # and the process is alive
    index = client.post("/v2/repository/index").json()
    assert index[0]["state"] == "UNAVAILABLE"
    assert "no NVIDIA GPU" in index[0]["reason"]


def test_forced_onnxruntime_serves_on_the_cpu(wine_path: Path) -> None:
    choice = make_model(ModelConfig("wine", str(wine_path), "1"), backend="onnxruntime")
    assert isinstance(choice.model, OnnxModel)
    assert choice.reason == "INFERSTACK_BACKEND=onnxruntime"
    assert choice.model.load_safely()


def test_an_unknown_backend_is_refused(wine_path: Path) -> None:
    with pytest.raises(ValueError, match="auto, tensorrt, onnxruntime"):
        make_model(ModelConfig("wine", str(wine_path), "1"), backend="cuda")


def test_describe_is_json_for_get_v2(wine_path: Path) -> None:
    choice = make_model(ModelConfig("wine", str(wine_path), "1"), backend="onnxruntime")
    assert json.loads(json.dumps(describe([choice])))["backends"]["wine"]["device"] == "cpu"
