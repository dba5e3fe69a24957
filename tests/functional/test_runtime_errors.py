"""Inputs that pass the signature check but fail inside ONNX Runtime, through the real app.

The rule: a failure that a different, valid request would not hit is the client's (400,
with ONNX Runtime's reason and no source paths); a model that cannot run at all is the
server's (500). The errors here are ONNX Runtime's own, raised by tiny real graphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferstack.bootstrap import server_app
from inferstack.settings import ModelConfig
from tests.functional.protocol_models import (
    write_add_broadcast,
    write_add_shared,
    write_always_fails,
    write_lookup,
)

# What ONNX Runtime's messages carry that a client must never see.
INTERNALS = ("onnxruntime_src", "[ONNXRuntimeError]", "onnxruntime::", "Traceback", ".cc:", ".h:")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("runtime-error-models")
    models = [
        ModelConfig("shared", str(write_add_shared(directory / "shared.onnx")), "1"),
        ModelConfig("broadcast", str(write_add_broadcast(directory / "broadcast.onnx")), "1"),
        ModelConfig("lookup", str(write_lookup(directory / "lookup.onnx")), "1"),
        ModelConfig("always_fails", str(write_always_fails(directory / "fails.onnx")), "1"),
    ]
    app = server_app(models, max_request_bytes=1 << 20, load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


def pair(a_rows: int, b_rows: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [a_rows, 2], "datatype": "FP32", "data": [1.0] * a_rows * 2},
            {"name": "b", "shape": [b_rows, 2], "datatype": "FP32", "data": [2.0] * b_rows * 2},
        ]
    }


def client_error(response: Any, *words: str) -> str:
    assert response.status_code == 400, response.text
    doc = response.json()
    assert list(doc) == ["error"]
    message: str = doc["error"]
    for word in words:
        assert word in message, message
    for marker in INTERNALS:
        assert marker not in message, message
    return message


def test_inputs_sharing_a_named_dimension_must_agree(client: TestClient) -> None:
    assert client.post("/v2/models/shared/infer", json=pair(3, 3)).status_code == 200
    client_error(
        client.post("/v2/models/shared/infer", json=pair(2, 3)),
        "dimension 'N'",
        "input 'a' has 2",
        "input 'b' has 3",
    )


def test_a_broadcast_mismatch_is_the_clients_with_onnx_runtimes_reason(
    client: TestClient,
) -> None:
    # ONNX Runtime raises its generic Fail status here, with its source path in the message.
    assert client.post("/v2/models/broadcast/infer", json=pair(2, 1)).status_code == 200
    client_error(
        client.post("/v2/models/broadcast/infer", json=pair(2, 3)),
        "model 'broadcast' cannot run on this input",
        "Add node 'add'",
        "Attempting to broadcast an axis by a dimension other than 1. 2 by 3",
    )


def test_an_index_out_of_range_is_the_clients(client: TestClient) -> None:
    # ONNX Runtime's InvalidArgument status.
    good = {"inputs": [{"name": "i", "shape": [2], "datatype": "INT64", "data": [0, 3]}]}
    response = client.post("/v2/models/lookup/infer", json=good)
    assert response.json()["outputs"][0]["data"] == [0.0, 1.0, 2.0, 9.0, 10.0, 11.0]
    bad = {"inputs": [{"name": "i", "shape": [2], "datatype": "INT64", "data": [0, 7]}]}
    client_error(
        client.post("/v2/models/lookup/infer", json=bad),
        "Gather node",
        "indices element out of data bounds, idx=7 must be within the inclusive range [-4,3]",
    )


def test_the_same_mistake_through_v1_is_a_400(client: TestClient) -> None:
    client_error(
        client.post("/v1/models/lookup:predict", json={"instances": [1, 4]}),
        "idx=4",
    )


def test_a_model_that_fails_for_every_input_is_a_server_error(client: TestClient) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    for _ in range(2):
        response = client.post("/v2/models/always_fails/infer", json=body)
        assert response.status_code == 500
        assert response.json() == {"error": "model 'always_fails' failed during inference"}
    assert client.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("route", ["/v2/models/lookup/infer", "/v1/models/lookup:predict"])
@pytest.mark.parametrize("depth", [1025, 5000])
def test_json_nested_deeper_than_the_parser_allows_is_a_400(
    client: TestClient, route: str, depth: int
) -> None:
    body = "[" * depth + "]" * depth
    client_error(
        client.post(route, content=body, headers={"content-type": "application/json"}),
        "not valid JSON",
        "depth limit exceeded",
    )
