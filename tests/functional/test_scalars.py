"""0-d tensors (shape []) through the real app: metadata, v2 JSON, binary and raw, v1.

A scalar output (a sum, a loss, a scale) answered with shape [1] before; scalar inputs
must be accepted as shape [] in every encoding the protocol has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from onnx import TensorProto

from inferstack.bootstrap import server_app
from inferstack.settings import ModelConfig
from tests.functional.protocol_models import write_echo, write_scale, write_total

# Protocol datatype -> (ONNX element type, a client-side 0-d value)
ECHO_TYPES: dict[str, tuple[int, np.ndarray]] = {
    "FP32": (TensorProto.FLOAT, np.array(-2.5, dtype=np.float32)),
    "FP64": (TensorProto.DOUBLE, np.array(1e300, dtype=np.float64)),
    "INT64": (TensorProto.INT64, np.array(-(2**62), dtype=np.int64)),
    "UINT8": (TensorProto.UINT8, np.array(255, dtype=np.uint8)),
    "BOOL": (TensorProto.BOOL, np.array(True)),
    "FP16": (TensorProto.FLOAT16, np.array(0.5, dtype=np.float16)),
    "BYTES": (TensorProto.STRING, np.array("café", dtype=object)),
    "BF16": (TensorProto.BFLOAT16, np.array(3.5, dtype=ml_dtypes.bfloat16)),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("scalar-models")
    models = [
        ModelConfig("total", str(write_total(directory / "total.onnx")), "1"),
        ModelConfig("scale", str(write_scale(directory / "scale.onnx")), "1"),
    ]
    for datatype, (elem, _) in ECHO_TYPES.items():
        path = write_echo(directory / f"echo_{datatype}.onnx", elem)
        models.append(ModelConfig(f"echo_{datatype.lower()}", str(path), "1"))
    app = server_app(models, max_request_bytes=1 << 20, load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


def infer(client: TestClient, model: str, body: bytes, length: int | None = None) -> Any:
    headers = {} if length is None else {"inference-header-content-length": str(length)}
    return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def parsed(response: Any) -> triton.InferResult:
    """tritonclient's own parser over a JSON or binary answer."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=None if length is None else int(length)
    )


ROWS = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]], dtype=np.float32)


def test_metadata_says_shape_empty_for_scalar_tensors(client: TestClient) -> None:
    total = client.get("/v2/models/total").json()
    assert total["outputs"] == [
        {"name": "total", "datatype": "FP32", "shape": []},
        {"name": "rows", "datatype": "FP32", "shape": [-1]},
    ]
    scale = client.get("/v2/models/scale").json()
    assert scale["inputs"] == [{"name": "s", "datatype": "FP32", "shape": []}]


def test_scalar_output_answers_shape_empty_in_json(client: TestClient) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": ROWS.tolist()}]}
    response = client.post("/v2/models/total/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["total"] == {"name": "total", "datatype": "FP32", "shape": [], "data": [21.5]}
    assert outputs["rows"]["shape"] == [2]
    result = parsed(response)
    assert result.as_numpy("total").shape == ()
    assert result.as_numpy("total") == np.float32(21.5)


def test_scalar_output_answers_shape_empty_in_binary(client: TestClient) -> None:
    tensor = triton.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=True)
    body, length = triton.InferenceServerClient.generate_request_body([tensor])
    response = infer(client, "total", body, length)
    header = json.loads(
        response.content[: int(response.headers["inference-header-content-length"])]
    )
    outputs = {o["name"]: o for o in header["outputs"]}
    assert outputs["total"]["shape"] == []
    assert outputs["total"]["parameters"] == {"binary_data_size": 4}
    total = parsed(response).as_numpy("total")
    assert total.shape == () and total == np.float32(21.5)


@pytest.mark.parametrize("data", [[3.5], 3.5], ids=["flat-list", "bare-number"])
def test_scalar_input_from_json(client: TestClient, data: Any) -> None:
    body = {"inputs": [{"name": "s", "shape": [], "datatype": "FP32", "data": data}]}
    response = client.post("/v2/models/scale/infer", json=body)
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["y"] == {"name": "y", "datatype": "FP32", "shape": [], "data": [7.0]}
    assert outputs["grid"]["data"] == [3.5, 4.5]


def test_scalar_input_needs_exactly_one_value(client: TestClient) -> None:
    body = {"inputs": [{"name": "s", "shape": [], "datatype": "FP32", "data": [1.0, 2.0]}]}
    response = client.post("/v2/models/scale/infer", json=body)
    assert response.status_code == 400
    assert "shape [] needs 1 elements; data has 2" in response.json()["error"]
    wrong_rank = {"inputs": [{"name": "s", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    response = client.post("/v2/models/scale/infer", json=wrong_rank)
    assert response.status_code == 400
    assert "expects []" in response.json()["error"]


def test_raw_binary_scalar_input(client: TestClient) -> None:
    body = np.array(1.25, dtype="<f4").tobytes()
    result = parsed(infer(client, "scale", body, 0))
    assert result.as_numpy("y").shape == ()
    assert result.as_numpy("y") == np.float32(2.5)


# tritonclient sends BF16 only as binary data.
ROUND_TRIPS = [(t, b) for t in ECHO_TYPES for b in (False, True) if (t, b) != ("BF16", False)]


@pytest.mark.parametrize(("datatype", "binary"), ROUND_TRIPS)
def test_every_datatype_round_trips_as_a_scalar(
    client: TestClient, datatype: str, binary: bool
) -> None:
    value = ECHO_TYPES[datatype][1]
    tensor = triton.InferInput("x", [], datatype)
    tensor.set_data_from_numpy(value, binary_data=binary)
    output = triton.InferRequestedOutput("y", binary_data=binary or datatype == "BF16")
    body, length = triton.InferenceServerClient.generate_request_body([tensor], [output])
    response = infer(client, f"echo_{datatype.lower()}", body, length if binary else None)
    got = parsed(response).as_numpy("y")
    assert got.shape == ()
    if datatype == "BYTES":
        # tritonclient gives JSON strings as str and binary ones as bytes
        text = got.item()
        assert (text.decode() if isinstance(text, bytes) else text) == "café"
    else:
        np.testing.assert_array_equal(got, value)


def test_v1_scalar_input_takes_one_instance(client: TestClient) -> None:
    response = client.post("/v1/models/scale:predict", json={"instances": [3.5]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [{"y": 7.0, "grid": [3.5, 4.5]}]}


def test_v1_single_scalar_output_is_one_prediction(client: TestClient) -> None:
    response = client.post("/v1/models/echo_int64:predict", json={"instances": [-7]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [-7]}
    response = client.post("/v1/models/echo_bytes:predict", json={"instances": ["naïve"]})
    assert response.json() == {"predictions": ["naïve"]}


@pytest.mark.parametrize(
    ("instances", "words"),
    [
        ([1.0, 2.0], "takes one instance per request; got 2"),
        ([[1.0, 2.0]], "the instance must be one value"),
    ],
)
def test_v1_scalar_input_refuses_what_is_not_one_scalar(
    client: TestClient, instances: list[Any], words: str
) -> None:
    response = client.post("/v1/models/scale:predict", json={"instances": instances})
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_v1_scalar_output_of_a_batch_is_refused_with_the_v2_route(client: TestClient) -> None:
    response = client.post("/v1/models/total:predict", json={"instances": ROWS.tolist()})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "output 'total'" in message and "shape []" in message
    assert "/v2/models/total/infer" in message
