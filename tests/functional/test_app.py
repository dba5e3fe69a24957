"""The FastAPI app through TestClient: every route, every client error, real ONNX Runtime."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from inferstack.bootstrap import server_app
from inferstack.dataplane import DataPlane
from inferstack.models import Model, ModelRepository
from inferstack.server.app import create_app
from inferstack.settings import ModelConfig

JSON = {"content-type": "application/json"}

# Protocol datatype -> ONNX element type, for a model that passes every type through.
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def identity_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Identity per datatype: in_<TYPE> -> out_<TYPE>, shape [-1, 2]."""
    nodes, inputs, outputs = [], [], []
    for name, elem in IDENTITY_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["batch", 2]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save(model, tmp_path_factory.mktemp("models") / "identity.onnx")


@pytest.fixture(scope="module")
def broken_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("broken") / "broken.onnx"
    path.write_bytes(b"definitely not a protobuf")
    return path


@pytest.fixture(scope="module")
def client(wine_path: Path, identity_path: Path) -> TestClient:
    models = [
        ModelConfig("wine", str(wine_path), "1"),
        ModelConfig("identity", str(identity_path), "3"),
    ]
    app = server_app(models, max_request_bytes=64 * 1024, load_in_background=False)
    return TestClient(app)


def infer_body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.tolist(),
            }
        ],
        **extra,
    }


def assert_client_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    for word in words:
        assert word in body["error"]
    assert "Traceback" not in body["error"] and "/tmp" not in body["error"]


def parse(response: Any) -> Any:
    """tritonclient's own parser over a (binary or JSON) infer response."""
    length = response.headers.get("inference-header-content-length")
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=None if length is None else int(length)
    )


def wait_until_loaded(client: TestClient, timeout: float = 30.0) -> None:
    """Models load in the background after start-up; wait until none is LOADING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {m["state"] for m in client.post("/v2/repository/index").json()}
        if "LOADING" not in states:
            return
        time.sleep(0.02)
    raise AssertionError(f"models still loading after {timeout} s")


def test_non_utf8_text_for_a_string_model_is_a_client_error(client: TestClient) -> None:
    tensors = []
    for datatype in IDENTITY_TYPES:
        tensor = triton.InferInput(f"in_{datatype}", [1, 2], datatype)
        kind = triton.triton_to_np_dtype(datatype)
        array = (
            np.array([[b"ok", b"\xff\xfe"]], dtype=object)
            if datatype == "BYTES"
            else np.zeros((1, 2), dtype=kind)
        )
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    body, length = triton.InferenceServerClient.generate_request_body(tensors)
    response = client.post(
        "/v2/models/identity/infer",
        content=body,
        headers={"inference-header-content-length": str(length)},
    )
    assert_client_error(response, 400, "in_BYTES", "UTF-8")


# ------------------------------------------------------------------ health and metadata


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "inferstack"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_reports_the_signature(client: TestClient) -> None:
    meta = client.get("/v2/models/wine").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert meta["platform"] == "onnxruntime_onnx"
    assert client.get("/v2/models/identity/versions/3").json()["versions"] == ["3"]


def test_model_ready_and_versions(client: TestClient) -> None:
    assert client.get("/v2/models/wine/ready").json() == {"name": "wine", "ready": True}
    assert client.get("/v2/models/identity/versions/3/ready").status_code == 200
    assert_client_error(client.get("/v2/models/identity/versions/4/ready"), 404, "version '4'")
    assert_client_error(client.get("/v2/models/nope"), 404, "'nope'")


def test_repository_index_lists_models(client: TestClient) -> None:
    index = client.post("/v2/repository/index").json()
    assert {(m["name"], m["state"]) for m in index} == {("wine", "READY"), ("identity", "READY")}


def test_openapi_document_describes_the_infer_body(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"]
    assert "400" in infer["responses"] and "503" in infer["responses"]
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ inference


def test_json_infer_matches_onnx_runtime(
    client: TestClient, wine_session: ort.InferenceSession, wine_rows: np.ndarray
) -> None:
    response = client.post("/v2/models/wine/infer", json=infer_body(wine_rows, id="r-1"))
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("r-1", "wine", "1")
    outputs = {o["name"]: o for o in body["outputs"]}
    labels, probabilities = wine_session.run(None, {"features": wine_rows})
    assert outputs["label"]["data"] == labels.tolist()
    np.testing.assert_array_equal(
        np.asarray(outputs["probabilities"]["data"], dtype=np.float32).reshape(2, 3), probabilities
    )
    assert outputs["probabilities"]["shape"] == [2, 3]


def test_requested_output_subset(client: TestClient, wine_rows: np.ndarray) -> None:
    body = infer_body(wine_rows, outputs=[{"name": "probabilities"}])
    outputs = client.post("/v2/models/wine/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_passes_through_a_served_model(
    client: TestClient, identity_path: Path, binary: bool
) -> None:
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {}
    inputs = []
    for datatype in IDENTITY_TYPES:
        if datatype == "BYTES":
            array = np.array([[b"a", "caf\u00e9".encode()], [b"", b"long" * 50]], dtype=object)
        elif datatype == "BOOL":
            array = np.array([[True, False], [False, True]])
        else:
            array = rng.integers(0, 100, size=(2, 2)).astype(triton.triton_to_np_dtype(datatype))
        arrays[datatype] = array
        tensor = triton.InferInput(f"in_{datatype}", [2, 2], datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(f"out_{t}", binary_data=True) for t in IDENTITY_TYPES]
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs)

    headers = (
        {} if header_length is None else {"inference-header-content-length": str(header_length)}
    )
    response = client.post("/v2/models/identity/infer", content=body, headers=headers)

    assert response.status_code == 200, response.text
    result = parse(response)
    for datatype, array in arrays.items():
        np.testing.assert_array_equal(result.as_numpy(f"out_{datatype}"), array, err_msg=datatype)


def test_binary_infer_with_binary_outputs(
    client: TestClient, wine_session: ort.InferenceSession, wine_rows: np.ndarray
) -> None:
    tensor = triton.InferInput("features", list(wine_rows.shape), "FP32")
    tensor.set_data_from_numpy(wine_rows, binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tensor], parameters=None)
    header = json.loads(body[:length])
    header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header).encode()
    response = client.post(
        "/v2/models/wine/infer",
        content=head + body[length:],
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )
    assert response.headers["content-type"] == "application/octet-stream"
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"])
    )
    labels, probabilities = wine_session.run(None, {"features": wine_rows})
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)


def test_raw_binary_request_without_a_json_header(
    client: TestClient, wine_session: ort.InferenceSession, wine_rows: np.ndarray
) -> None:
    response = client.post(
        "/v2/models/wine/infer",
        content=wine_rows.tobytes(),
        headers={"inference-header-content-length": "0"},
    )
    assert response.status_code == 200
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(
        result.as_numpy("label"), wine_session.run(None, {"features": wine_rows})[0]
    )


def test_gzip_request_body(client: TestClient, wine_rows: np.ndarray) -> None:
    raw = gzip.compress(json.dumps(infer_body(wine_rows)).encode())
    response = client.post(
        "/v2/models/wine/infer", content=raw, headers={**JSON, "content-encoding": "gzip"}
    )
    assert response.status_code == 200


def test_v1_predict_matches_onnx_runtime(
    client: TestClient, wine_session: ort.InferenceSession, wine_rows: np.ndarray
) -> None:
    response = client.post("/v1/models/wine:predict", json={"instances": wine_rows.tolist()})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    labels, probabilities = wine_session.run(None, {"features": wine_rows})
    assert [p["label"] for p in predictions] == labels.tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], probabilities, rtol=1e-6)


# ------------------------------------------------------------------ client errors


def features(shape: list[int], data: Any, datatype: str = "FP32", name: str = "features") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": [features([1, 12], [0.0] * 12)]}, 400, ("shape [1, 12]", "[-1, 13]")),
        ({"inputs": [features([1, 13], [0] * 13, "FP64")]}, 400, ("FP64", "expects FP32")),
        ({"inputs": [features([1, 13], [0.0] * 12)]}, 400, ("needs 13 elements",)),
        (
            {"inputs": [features([1, 13], [0.0] * 13), features([1], [1.0], name="extra")]},
            400,
            ("no input 'extra'",),
        ),
        (
            {"inputs": [features([1, 13], [0.0] * 13), features([1, 13], [0.0] * 13)]},
            400,
            ("given twice",),
        ),
        (
            {"inputs": [features([1, 13], [0.0] * 13)], "outputs": [{"name": "nope"}]},
            400,
            ("no outputs ['nope']",),
        ),
    ],
)
def test_inputs_that_do_not_fit_the_model(
    client: TestClient, body: dict, status: int, words: tuple[str, ...]
) -> None:
    assert_client_error(client.post("/v2/models/wine/infer", json=body), status, *words)


def test_missing_input_is_named(client: TestClient) -> None:
    body = {"inputs": [{"name": "in_BOOL", "shape": [1, 2], "datatype": "BOOL", "data": [1, 0]}]}
    assert_client_error(client.post("/v2/models/identity/infer", json=body), 400, "BOOL")
    body["inputs"][0]["data"] = [True, False]
    assert_client_error(client.post("/v2/models/identity/infer", json=body), 400, "missing")


def test_transport_errors(client: TestClient, wine_rows: np.ndarray) -> None:
    url = "/v2/models/wine/infer"
    assert_client_error(client.post(url, content=b"{oops", headers=JSON), 400, "not valid JSON")
    assert_client_error(client.post(url, content=b"x" * 70_000, headers=JSON), 413, "over 65536")
    bomb = gzip.compress(b" " * 1_000_000)
    assert_client_error(
        client.post(url, content=bomb, headers={**JSON, "content-encoding": "gzip"}),
        413,
        "decompressed",
    )
    assert_client_error(
        client.post(url, content=b"x", headers={**JSON, "content-encoding": "br"}), 415, "br"
    )
    assert_client_error(
        client.post(url, content=b"{}", headers={"content-type": "text/plain"}), 415, "text/plain"
    )
    assert_client_error(
        client.post(url, content=b"{}", headers={"inference-header-content-length": "x"}),
        400,
        "whole number",
    )
    assert_client_error(client.post("/v2/models/nope/infer", json={}), 404, "'nope'")
    assert_client_error(client.get(url), 405, "GET")
    assert_client_error(client.get("/v3/anything"), 404, "/v3/anything")
    assert_client_error(
        client.post("/v1/models/identity:predict", json={"instances": [1]}), 400, "single-input"
    )
    assert_client_error(client.post("/v1/models/wine:predict", json={"rows": []}), 400, "instances")
    # After all of that the server still answers.
    assert client.post(url, json=infer_body(wine_rows)).status_code == 200


# ------------------------------------------------------------------ failures on the server side


class ExplodingModel(Model):
    """A backend with a bug: it raises a plain exception from predict."""

    platform = "test"

    def load(self) -> None:
        from inferstack.protocol.types import TensorSpec

        self.inputs = [TensorSpec("x", "FP32", (-1,))]
        self.outputs = [TensorSpec("y", "FP32", (-1,))]

    def predict(self, inputs: Any, output_names: Any = None) -> Any:
        raise RuntimeError("secret internal detail at /opt/app/model.py")


def test_a_backend_bug_is_a_500_without_details() -> None:
    model = ExplodingModel("boom")
    repository = ModelRepository([model])
    repository.load_all()
    client = TestClient(create_app(DataPlane(repository)))
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    response = client.post("/v2/models/boom/infer", json=body)
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert client.get("/v2/health/live").status_code == 200


def test_a_model_that_fails_to_load_is_not_ready_and_others_serve(
    wine_path: Path, broken_path: Path, wine_rows: np.ndarray
) -> None:
    models = [
        ModelConfig("wine", str(wine_path), "1"),
        ModelConfig("broken", str(broken_path), "1"),
    ]
    with TestClient(server_app(models, max_request_bytes=1 << 20)) as client:
        wait_until_loaded(client)
        assert client.post("/v2/models/wine/infer", json=infer_body(wine_rows)).status_code == 200
        assert_client_error(client.get("/v2/models/broken/ready"), 503, "not ready")
        assert_client_error(client.get("/v2/health/ready"), 503, "broken")
        (entry,) = [m for m in client.post("/v2/repository/index").json() if m["name"] == "broken"]
        assert entry["state"] == "UNAVAILABLE"
        assert "ONNX Runtime could not load" in entry["reason"]
        assert str(broken_path.parent) not in entry["reason"]


@pytest.fixture(scope="module")
def bf16_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A model that doubles a BF16 vector (ONNX Runtime takes BF16 only as OrtValues)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["wide"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["wide", "two"], ["doubled"]),
            helper.make_node("Cast", ["doubled"], ["y"], to=TensorProto.BFLOAT16),
        ],
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [None])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [None])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = save(model, tmp_path_factory.mktemp("bf16") / "b.onnx")
    app = server_app([ModelConfig("b", str(path), "1")], max_request_bytes=1 << 20)
    with TestClient(app) as client:
        wait_until_loaded(client)
        yield client


def test_bf16_model_json_round_trip(bf16_client: TestClient) -> None:
    body = {"inputs": [{"name": "x", "shape": [3], "datatype": "BF16", "data": [1.5, -2.0, 0.25]}]}
    response = bf16_client.post("/v2/models/b/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0] == {
        "name": "y",
        "datatype": "BF16",
        "shape": [3],
        "data": [3.0, -4.0, 0.5],
    }


def test_bf16_model_binary_round_trip(bf16_client: TestClient) -> None:
    values = np.array([1.5, -2.0, 0.25, 7.0], dtype=ml_dtypes.bfloat16)
    tensor = triton.InferInput("x", [4], "BF16")
    tensor.set_data_from_numpy(values, binary_data=True)
    output = triton.InferRequestedOutput("y", binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tensor], [output])
    response = bf16_client.post(
        "/v2/models/b/infer", content=body, headers={"inference-header-content-length": str(length)}
    )
    assert response.status_code == 200, response.text
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"])
    )
    np.testing.assert_array_equal(result.as_numpy("y"), values * 2)
