"""Request handling at its edges: the cases a mutation run showed no test would notice.

Each test pins a behaviour a client relies on (issue 6, item 20): versions in the URL,
base64 strictness, stage and base-path prefixes, v1 bodies and answers, the size limit
to the byte, bounded decompression, percent-encoded names, integral floats for integers.
"""

from __future__ import annotations

import base64
import gzip
import tracemalloc
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from inferstack.bootstrap import lambda_entry_from_env, server_app
from inferstack.settings import ModelConfig

from .conftest import (
    FUNCTION_URL,
    HTTP,
    HTTP_SAM,
    REST,
    REST_SAM,
    assert_error_reply,
    demo_env,
    http_event,
    invoke,
    json_infer_body,
    ort_reference,
    outputs_from_json,
    reference_rows,
)
from .protocol_models import write_scale

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INFER = "/v2/models/wine/infer"
JSON_HEADERS = {"Content-Type": "application/json"}


def identity_model(path: Path, elem: int, shape: list[Any], outputs: int = 1) -> Path:
    """x -> y (and y2, ...): Identity of one input, `outputs` copies."""
    names = ["y"] + [f"y{i}" for i in range(2, outputs + 1)]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [name]) for name in names],
        "identity",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info(name, elem, shape) for name in names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def ragged_model(path: Path) -> Path:
    """x FP32 [n, 2] -> y = x ([n, 2]) and t = x transposed ([2, n])."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Transpose", ["x"], ["t"])],
        "ragged",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, "n"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# --------------------------------------------------------------------- versions in the URL


@pytest.mark.parametrize("source", [REST, HTTP])
def test_versioned_routes_serve_only_the_served_version(demo_handler: Any, source: str) -> None:
    body = json_infer_body(reference_rows(2))
    ok = invoke(
        demo_handler,
        http_event(
            source, "POST", "/v2/models/wine/versions/1/infer", body=body, headers=JSON_HEADERS
        ),
    )
    assert ok.status == 200, ok.text
    assert ok.json()["model_version"] == "1"
    for method, path in (
        ("POST", "/v2/models/wine/versions/2/infer"),
        ("GET", "/v2/models/wine/versions/2"),
        ("GET", "/v2/models/wine/versions/2/ready"),
    ):
        event = http_event(source, method, path, body=body, headers=JSON_HEADERS)
        assert_error_reply(invoke(demo_handler, event), 404, "version")


# --------------------------------------------------------------------- base64 and prefixes


def test_base64_bodies_are_decoded_strictly(demo_handler: Any) -> None:
    """A body marked base64 with characters outside the alphabet is refused, not repaired:
    a lenient decoder would drop the '!' and run the model on whatever remains."""
    encoded = base64.b64encode(json_infer_body(reference_rows(1)).encode()).decode()
    event = http_event(HTTP, "POST", INFER, headers=JSON_HEADERS)
    event["body"], event["isBase64Encoded"] = encoded[:8] + "!" + encoded[8:], True
    message = assert_error_reply(invoke(demo_handler, event), 400)
    assert message == "body is marked base64 but is not valid base64"
    event["body"] = encoded
    assert invoke(demo_handler, event).status == 200


def test_a_named_stage_is_stripped_only_as_a_whole_path_segment(demo_handler: Any) -> None:
    event = http_event(HTTP, "GET", "/v2/models/wine/ready", stage="prod")
    assert event["rawPath"] == "/prod/v2/models/wine/ready"
    assert invoke(demo_handler, event).status == 200
    # "/production/..." does not start with the stage "prod" as a segment: no route there.
    event["rawPath"] = "/production/v2/models/wine/ready"
    assert_error_reply(invoke(demo_handler, event), 404, "/production")
    # On the $default stage nothing is stripped.
    event = http_event(HTTP, "GET", "/v2/models/wine/ready", stage="$default")
    assert invoke(demo_handler, event).status == 200


@pytest.mark.parametrize("source", [REST_SAM, HTTP_SAM, FUNCTION_URL])
def test_base_path_is_stripped_only_as_a_whole_path_segment(source: str) -> None:
    handler = lambda_entry_from_env(demo_env(INFERSTACK_BASE_PATH="/api/", INFERSTACK_METRICS="0"))
    ok = invoke(handler, http_event(source, "GET", "/api/v2/models/wine/ready"))
    assert ok.status == 200, ok.text
    assert ok.json() == {"name": "wine", "ready": True}
    # Without the prefix the route is still reached (direct calls, health checks)...
    assert invoke(handler, http_event(source, "GET", "/v2/models/wine/ready")).status == 200
    # ...but a longer first segment is not the base path.
    missed = invoke(handler, http_event(source, "GET", "/apiv2/models/wine/ready"))
    assert_error_reply(missed, 404, "no endpoint at /apiv2/models/wine/ready")


# --------------------------------------------------------------------- v1


@pytest.mark.parametrize("body", ["[[1, 2, 3]]", '"instances"', '{"instances": []}', "{}"])
def test_v1_bodies_that_are_not_an_instances_object(demo_handler: Any, body: str) -> None:
    event = http_event(REST, "POST", "/v1/models/wine:predict", body=body, headers=JSON_HEADERS)
    message = assert_error_reply(invoke(demo_handler, event), 400)
    # The whole message: it is the only description of the v1 body a client gets.
    assert message == 'v1 predict needs {"instances": [...]} with at least one instance'


def test_v1_data_errors_name_the_input(demo_handler: Any) -> None:
    body = '{"instances": [["not", "numbers"]]}'
    event = http_event(REST, "POST", "/v1/models/wine:predict", body=body, headers=JSON_HEADERS)
    assert_error_reply(invoke(demo_handler, event), 400, "input 'features'", "FP32")


@pytest.fixture(scope="module")
def v1_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("v1")
    models = [
        ModelConfig(
            "single", str(identity_model(folder / "s.onnx", TensorProto.FLOAT, ["n", 2])), "1"
        ),
        ModelConfig(
            "pair", str(identity_model(folder / "p.onnx", TensorProto.INT64, ["n", 2], 2)), "1"
        ),
        ModelConfig("text", str(identity_model(folder / "t.onnx", TensorProto.STRING, ["n"])), "1"),
        ModelConfig(
            "bf16", str(identity_model(folder / "b.onnx", TensorProto.BFLOAT16, ["n", 2])), "1"
        ),
        ModelConfig(
            "pairs", str(identity_model(folder / "t2.onnx", TensorProto.STRING, ["n", 2])), "1"
        ),
        ModelConfig("ragged", str(ragged_model(folder / "r.onnx")), "1"),
        ModelConfig("scale", str(write_scale(folder / "scale.onnx")), "1"),
    ]
    app = server_app(models, max_request_bytes=1 << 20, load_in_background=False)
    with TestClient(app) as client:
        yield client


def test_v1_single_output_answers_one_row_per_instance(v1_client: TestClient) -> None:
    response = v1_client.post("/v1/models/single:predict", json={"instances": [[1, 2], [3.5, 4]]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[1.0, 2.0], [3.5, 4.0]]}


def test_v1_several_outputs_answer_an_object_per_instance(v1_client: TestClient) -> None:
    response = v1_client.post("/v1/models/pair:predict", json={"instances": [[1, 2], [3, 4]]})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "predictions": [{"y": [1, 2], "y2": [1, 2]}, {"y": [3, 4], "y2": [3, 4]}]
    }


def test_v1_strings_and_bf16(v1_client: TestClient) -> None:
    # Text comes back as sent, a trailing NUL included (numpy's fixed-width strings drop it).
    words = ["héllo", "wörld", "padded\x00"]
    text = v1_client.post("/v1/models/text:predict", json={"instances": words})
    assert text.status_code == 200, text.text
    assert text.json() == {"predictions": words}
    bf16 = v1_client.post("/v1/models/bf16:predict", json={"instances": [[1.5, -2.0]]})
    assert bf16.status_code == 200, bf16.text
    assert bf16.json() == {"predictions": [[1.5, -2.0]]}


def test_v1_rows_of_two_strings_keep_their_rows(v1_client: TestClient) -> None:
    instances = [["a", "b"], ["c", "d"], ["e", "f"]]
    response = v1_client.post("/v1/models/pairs:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": instances}


def test_v1_outputs_with_other_row_counts_are_refused_with_the_v2_route(
    v1_client: TestClient,
) -> None:
    """`ragged` answers x and its transpose: as many rows as instances only for two."""
    two = v1_client.post("/v1/models/ragged:predict", json={"instances": [[1, 2], [3, 4]]})
    assert two.status_code == 200, two.text
    assert two.json() == {
        "predictions": [{"y": [1.0, 2.0], "t": [1.0, 3.0]}, {"y": [3.0, 4.0], "t": [2.0, 4.0]}]
    }
    three = v1_client.post("/v1/models/ragged:predict", json={"instances": [[1, 2]] * 3})
    assert three.status_code == 400, three.text
    message = three.json()["error"]
    assert "one row per instance" in message and "/v2/models/ragged/infer" in message


@pytest.mark.parametrize(
    "instances", [[1.0, 2.0], [[1.0, 2.0]], ["three"]], ids=["two", "a-row", "text"]
)
def test_v1_errors_for_a_scalar_input_name_the_input(
    v1_client: TestClient, instances: list[Any]
) -> None:
    response = v1_client.post("/v1/models/scale:predict", json={"instances": instances})
    assert response.status_code == 400, response.text
    assert "input 's'" in response.json()["error"]


# --------------------------------------------------------------------- sizes


def test_a_body_exactly_at_the_limit_is_served_one_byte_more_is_413() -> None:
    body = json_infer_body(reference_rows(3)).encode()
    at_limit = lambda_entry_from_env(
        demo_env(INFERSTACK_MAX_REQUEST_BYTES=str(len(body)), INFERSTACK_METRICS="0")
    )
    assert (
        invoke(at_limit, http_event(HTTP, "POST", INFER, body=body, headers=JSON_HEADERS)).status
        == 200
    )
    padded = body + b" "
    reply = invoke(at_limit, http_event(HTTP, "POST", INFER, body=padded, headers=JSON_HEADERS))
    assert_error_reply(reply, 413, str(len(body)))


def test_decompression_stops_at_the_limit_without_inflating_the_rest() -> None:
    """A 64 MiB gzip bomb (64 KiB on the wire) against a 1 MiB limit: 413, and the
    process never holds more than a few MiB of it."""
    limit = 1 << 20
    handler = lambda_entry_from_env(
        demo_env(INFERSTACK_MAX_REQUEST_BYTES=str(limit), INFERSTACK_METRICS="0")
    )
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    assert len(bomb) < limit
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    event = http_event(HTTP, "POST", INFER, body=bomb, headers=headers, base64_body=True)
    tracemalloc.start()
    try:
        reply = invoke(handler, event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error_reply(reply, 413, "decompressed")
    assert peak < 8 * limit, f"peak {peak / 2**20:.1f} MiB while refusing a bomb"


def test_large_bodies_on_the_server_path_are_decoded_and_served(wine_path: Path) -> None:
    """Bodies over 256 KiB are decoded off the event loop: same answer as small ones."""
    rows = np.tile(reference_rows(50), (60, 1))  # 3,000 rows: ~500 KB of JSON
    body = json_infer_body(rows)
    assert len(body) > 256 * 1024
    app = server_app(
        [ModelConfig("wine", str(wine_path), "1")],
        max_request_bytes=1 << 22,
        load_in_background=False,
    )
    with TestClient(app) as client:
        response = client.post(INFER, content=body, headers=JSON_HEADERS)
    assert response.status_code == 200, response.text
    outputs = outputs_from_json(response.json())
    expected = ort_reference(rows)
    np.testing.assert_array_equal(outputs["label"], expected["label"])


# --------------------------------------------------------------------- names and numbers


def test_percent_encoded_model_names_reach_the_model(demo_handler: Any, wine_path: Path) -> None:
    event = http_event(HTTP, "GET", "/v2/models/w%69ne/ready")
    reply = invoke(demo_handler, event)
    assert reply.status == 200, reply.text
    assert reply.json()["name"] == "wine"
    app = server_app(
        [ModelConfig("wine", str(wine_path), "1")],
        max_request_bytes=1 << 20,
        load_in_background=False,
    )
    with TestClient(app) as client:
        assert client.get("/v2/models/w%69ne/ready").json() == {"name": "wine", "ready": True}


def test_whole_number_floats_are_accepted_for_integer_inputs(v1_client: TestClient) -> None:
    def infer(data: list[Any]) -> Any:
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": data}]}
        return v1_client.post("/v2/models/pair/infer", json=body)

    ok = infer([3.0, -7.0])
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == [3, -7]
    refused = infer([3.5, 1.0])
    assert refused.status_code == 400
    assert "non-integers" in refused.json()["error"]
