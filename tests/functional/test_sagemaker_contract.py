"""SageMaker's /ping and /invocations through the app (TestClient), real ONNX Runtime.

What SageMaker's InvokeEndpoint hands the container: the body, Content-Type, Accept and
X-Amzn-SageMaker-Custom-Attributes (free-form; the API Gateway integration puts the
protocol route there as route=<path>,method=<method>). Every answer is compared with
what the protocol route itself answers for the same request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient

from inferstack.bootstrap import server_app
from inferstack.sagemaker import parse_custom_attributes
from inferstack.settings import ModelConfig

from .conftest import DEMO_MODEL, EXAMPLE_REQUEST

ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TRITON_BINARY = "application/vnd.sagemaker-triton.binary+json"


@pytest.fixture(scope="module")
def one_model() -> TestClient:
    """A SageMaker endpoint's container: one model."""
    app = server_app(
        [ModelConfig("wine", str(DEMO_MODEL), "1")], max_request_bytes=1 << 20,
        load_in_background=False,
    )  # fmt: skip
    return TestClient(app)


@pytest.fixture(scope="module")
def two_models() -> TestClient:
    models = [ModelConfig("wine", str(DEMO_MODEL), "1"), ModelConfig("other", str(DEMO_MODEL), "2")]
    return TestClient(server_app(models, max_request_bytes=1 << 20, load_in_background=False))


@pytest.fixture(scope="module")
def example() -> bytes:
    """The demo's request with an id (without one, each answer gets a fresh id)."""
    return json.dumps({**json.loads(EXAMPLE_REQUEST.read_text()), "id": "req-1"}).encode()


def invoke(
    client: TestClient, body: bytes = b"", attributes: str | None = None, **headers: str
) -> Any:
    if attributes is not None:
        headers[ATTRIBUTES] = attributes
    return client.post("/invocations", content=body, headers=headers)


def assert_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    for word in words:
        assert word in body["error"], body


# --------------------------------------------------------------------------- /ping


def test_ping_is_200_with_an_empty_body_once_the_model_serves(one_model: TestClient) -> None:
    response = one_model.get("/ping")
    assert response.status_code == 200
    assert response.content == b""


def test_ping_is_503_while_a_model_cannot_serve(tmp_path: Path) -> None:
    """A container whose model failed to load must not pass SageMaker's health check."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    app = server_app([ModelConfig("m", str(broken), "1")], max_request_bytes=1024,
                     load_in_background=False)  # fmt: skip
    response = TestClient(app).get("/ping")
    assert_error(response, 503, "not ready")


# --------------------------------------------------------------------------- no route


def test_invocations_without_attributes_infers_on_the_only_model(
    one_model: TestClient, example: bytes
) -> None:
    """boto3's invoke_endpoint(Body=<v2 request>, ContentType="application/json")."""
    direct = one_model.post(
        "/v2/models/wine/infer", content=example, headers={"content-type": "application/json"}
    )
    response = invoke(one_model, example, **{"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == direct.json()
    assert response.json()["model_name"] == "wine"


def test_invocations_without_attributes_and_two_models_asks_for_a_route(
    two_models: TestClient, example: bytes
) -> None:
    assert_error(invoke(two_models, example), 400, "route=")


def test_binary_request_and_response_in_the_triton_sagemaker_content_type(
    one_model: TestClient,
) -> None:
    """InvokeEndpoint drops Inference-Header-Content-Length: the JSON length travels in
    the Content-Type both ways, as SageMaker's Triton containers do."""
    rows = np.asarray(json.loads(EXAMPLE_REQUEST.read_text())["inputs"][0]["data"], np.float32)
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
    body, length = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    response = invoke(
        one_model, body, **{"content-type": f"{TRITON_BINARY};json-header-size={length}"}
    )
    assert response.status_code == 200, response.text
    media, _, size = response.headers["content-type"].partition(";json-header-size=")
    assert media == TRITON_BINARY
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(size)
    )
    direct = one_model.post("/v2/models/wine/infer", content=EXAMPLE_REQUEST.read_bytes()).json()
    by_name = {o["name"]: o for o in direct["outputs"]}
    np.testing.assert_array_equal(result.as_numpy("label").ravel(), by_name["label"]["data"])
    np.testing.assert_allclose(
        result.as_numpy("probabilities").ravel(), by_name["probabilities"]["data"], rtol=1e-6
    )


def test_tritonclient_binary_through_api_gateway_loses_nothing(one_model: TestClient) -> None:
    """Through API Gateway, tritonclient's binary request reaches the container as plain
    octet-stream without Inference-Header-Content-Length (InvokeEndpoint strips it): the
    header length is read off the body, and the answer's length comes back in the custom
    attributes, which the API maps onto Inference-Header-Content-Length again."""
    rows = np.asarray(json.loads(EXAMPLE_REQUEST.read_text())["inputs"][0]["data"], np.float32)
    tensor = triton.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    body, _ = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=[triton.InferRequestedOutput("probabilities", binary_data=True)]
    )
    response = invoke(
        one_model,
        body,
        "route=/v2/models/wine/infer,method=POST",
        **{"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers[ATTRIBUTES])
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=length
    )
    direct = one_model.post("/v2/models/wine/infer", content=EXAMPLE_REQUEST.read_bytes()).json()
    (expected,) = [o for o in direct["outputs"] if o["name"] == "probabilities"]
    np.testing.assert_allclose(
        result.as_numpy("probabilities").ravel(), expected["data"], rtol=1e-6
    )
    # A JSON answer carries no length in the attributes.
    plain = invoke(
        one_model, EXAMPLE_REQUEST.read_bytes(), "route=/v2/models/wine/infer,method=POST"
    )
    assert plain.status_code == 200 and ATTRIBUTES.lower() not in plain.headers


def test_a_binary_body_without_a_json_header_is_a_client_error(one_model: TestClient) -> None:
    response = invoke(one_model, b"\x00\x01garbage", **{"content-type": "application/octet-stream"})
    assert_error(response, 400)


def test_triton_content_type_without_its_size_is_a_client_error(one_model: TestClient) -> None:
    assert_error(
        invoke(one_model, b"{}", **{"content-type": TRITON_BINARY}), 400, "json-header-size"
    )


# --------------------------------------------------------------------------- named routes


@pytest.mark.parametrize(
    ("attributes", "method", "path", "body"),
    [
        ("route=/v2/models/wine/infer,method=POST", "POST", "/v2/models/wine/infer", "example"),
        ("route=/v2/models/wine,method=GET", "GET", "/v2/models/wine", ""),
        ("route=/v2/models/wine/ready,method=GET", "GET", "/v2/models/wine/ready", ""),
        ("route=/v2,method=GET", "GET", "/v2", ""),
        ("route=/v2/health/ready,method=GET", "GET", "/v2/health/ready", ""),
        ("route=/v2/repository/index,method=POST", "POST", "/v2/repository/index", ""),
        ("route=/v1/models/wine:predict,method=POST", "POST", "/v1/models/wine:predict", "v1"),
        # Free-form attributes: other keys, spaces, case, order; a missing method is implied.
        (
            "trace=abc, Method=post ,ROUTE=/v2/models/wine/infer,x",
            "POST",
            "/v2/models/wine/infer",
            "example",
        ),
        ("route=/v2/models/wine/ready", "GET", "/v2/models/wine/ready", ""),
        (
            "route=/v2/models/wine/versions/1/infer,method=POST",
            "POST",
            "/v2/models/wine/versions/1/infer",
            "example",
        ),
    ],
)
def test_invocations_serve_the_route_named_in_the_attributes(
    two_models: TestClient, example: bytes, attributes: str, method: str, path: str, body: str
) -> None:
    content = {"example": example, "v1": json.dumps({"instances": [[0.5] * 13]}).encode(), "": b""}[
        body
    ]
    direct = two_models.request(method, path, content=content or None)
    response = invoke(two_models, content, attributes)
    assert direct.status_code == 200, direct.text
    assert response.status_code == direct.status_code, response.text
    assert response.content == direct.content


@pytest.mark.parametrize(
    ("attributes", "status", "word"),
    [
        ("route=/ping,method=GET", 400, "not a protocol route"),
        ("route=/invocations,method=POST", 400, "not a protocol route"),
        ("route=/docs,method=GET", 404, "no endpoint"),
        ("route=/openapi.json,method=GET", 404, "no endpoint"),
        ("route=v2/models/wine/infer,method=POST", 400, "not a protocol route"),
        ("route=/v2/models/wine/infer,method=DELETE", 400, "not a protocol method"),
        ("route=/v2/models/wine/infer,method=GET", 405, "not allowed"),
        ("route=/v2/models/nope/infer,method=POST", 404, "nope"),
        ("route=/v2/models/wine/versions/9/infer,method=POST", 404, "9"),
    ],
)
def test_a_route_that_is_not_a_protocol_route_is_a_client_error(
    two_models: TestClient, example: bytes, attributes: str, status: int, word: str
) -> None:
    assert_error(invoke(two_models, example, attributes), status, word)


def test_client_mistakes_keep_the_protocol_status_and_error_body(two_models: TestClient) -> None:
    route = "route=/v2/models/wine/infer,method=POST"
    assert_error(invoke(two_models, b"{not json", route), 400)
    wrong = {
        "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
    }
    assert_error(invoke(two_models, json.dumps(wrong).encode(), route), 400, "shape")
    assert_error(invoke(two_models, b"{}", route, **{"content-type": "text/csv"}), 415)
    assert_error(invoke(two_models, b"x" * (2 << 20), route), 413)


def test_custom_attributes_parse_key_value_pairs_only() -> None:
    assert parse_custom_attributes("route=/v2,method=GET") == {"route": "/v2", "method": "GET"}
    assert parse_custom_attributes(" a = 1 ,, junk, =x, b=2=3,a=9") == {"a": "1", "b": "2=3"}
    assert parse_custom_attributes("") == {}


def test_a_synchronous_host_gets_the_same_answers(one_model: TestClient, example: bytes) -> None:
    """`SageMakerHost.invoke` (no event loop) answers as the app's /invocations does."""
    from inferstack.dataplane import DataPlane
    from inferstack.models import ModelRepository, OnnxModel
    from inferstack.protocol.types import HttpRequest
    from inferstack.sagemaker import SageMakerHost

    repository = ModelRepository([OnnxModel("wine", DEMO_MODEL, "1")])
    repository.load_all()
    host = SageMakerHost(DataPlane(repository))
    for attributes in ("", "route=/v2/models/wine/infer", "route=/v2/models/wine,method=GET"):
        headers = {"content-type": "application/json", ATTRIBUTES.lower(): attributes}
        answer = host.invoke(HttpRequest("POST", "/invocations", headers, example))
        served = invoke(one_model, example, attributes)
        assert (answer.status, answer.body) == (served.status_code, served.content)
    assert (
        host.invoke(HttpRequest("POST", "/invocations", {ATTRIBUTES.lower(): "route=/x"})).status
        == 404
    )
