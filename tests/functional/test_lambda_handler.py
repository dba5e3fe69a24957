"""The Lambda function end to end: real API Gateway / function URL events in, responses out.

Each event starts from an AWS sample (tests/events/) and changes only what a client's
request would change. Outputs are checked against ONNX Runtime run directly.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from .conftest import (
    EXAMPLE_REQUEST,
    FUNCTION_URL,
    HTTP,
    HTTP_EVENTS,
    HTTP_SAM,
    REST,
    REST_SAM,
    assert_error_reply,
    assert_outputs_match,
    demo_env,
    example_features,
    http_event,
    import_function_module,
    invoke,
    json_infer_body,
    load_event,
    ort_reference,
    outputs_from_json,
    reference_rows,
)

if TYPE_CHECKING:
    from pathlib import Path

INFER = "/v2/models/wine/infer"
JSON_HEADERS = {"Content-Type": "application/json"}
SMALL_LIMIT = 4096


def build_handler(**env: str) -> Any:
    from inferstack.bootstrap import lambda_entry_from_env

    return lambda_entry_from_env(demo_env(**env))


@pytest.fixture(scope="module")
def small_limit_handler() -> Any:
    return build_handler(INFERSTACK_MAX_REQUEST_BYTES=str(SMALL_LIMIT), INFERSTACK_METRICS="false")


def binary_request(features: np.ndarray, **parameters: Any) -> tuple[bytes, int]:
    """A binary_tensor_data request: JSON header, then the FP32 tensor little-endian."""
    raw = features.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(features.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": parameters,
        }
    ).encode()
    return header + raw, len(header)


def parse_binary_response(body: bytes, header_length: int) -> tuple[dict[str, Any], dict]:
    """Split a binary_tensor_data response into its JSON header and its tensors."""
    doc = json.loads(body[:header_length])
    wire = {"INT64": "<i8", "FP32": "<f4"}
    offset, tensors = header_length, {}
    for output in doc["outputs"]:
        if "data" in output:
            tensors[output["name"]] = np.asarray(output["data"]).reshape(output["shape"])
            continue
        size = output["parameters"]["binary_data_size"]
        chunk = body[offset : offset + size]
        offset += size
        array = np.frombuffer(chunk, dtype=wire[output["datatype"]])
        tensors[output["name"]] = array.reshape(output["shape"])
    assert offset == len(body), "bytes left after the last binary output"
    return doc, tensors


# --------------------------------------------------------------------- health, metadata


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_health_and_server_metadata_on_every_event_source(demo_handler: Any, source: str) -> None:
    live = invoke(demo_handler, http_event(source, "GET", "/v2/health/live"))
    assert (live.status, live.json()) == (200, {"live": True})
    ready = invoke(demo_handler, http_event(source, "GET", "/v2/health/ready"))
    assert (ready.status, ready.json()) == (200, {"ready": True})
    model_ready = invoke(demo_handler, http_event(source, "GET", "/v2/models/wine/ready"))
    assert (model_ready.status, model_ready.json()) == (200, {"name": "wine", "ready": True})
    server = invoke(demo_handler, http_event(source, "GET", "/v2"))
    assert server.status == 200
    assert server.json()["name"] == "inferstack"
    assert "binary_tensor_data" in server.json()["extensions"]
    assert server.headers["content-type"] == "application/json"


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_model_metadata_describes_the_demo_model(demo_handler: Any, source: str) -> None:
    expected = {
        "name": "wine",
        "platform": "onnxruntime_onnx",
        "versions": ["1"],
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    reply = invoke(demo_handler, http_event(source, "GET", "/v2/models/wine"))
    assert (reply.status, reply.json()) == (200, expected)
    versioned = invoke(demo_handler, http_event(source, "GET", "/v2/models/wine/versions/1"))
    assert (versioned.status, versioned.json()) == (200, expected)
    other = invoke(demo_handler, http_event(source, "GET", "/v2/models/wine/versions/2"))
    assert_error_reply(other, 404, "no version '2'")


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_json_infer_matches_onnxruntime(demo_handler: Any, source: str) -> None:
    request = json.loads(EXAMPLE_REQUEST.read_text())
    request["id"] = f"req-{source}"
    event = http_event(source, "POST", INFER, body=json.dumps(request), headers=JSON_HEADERS)
    reply = invoke(demo_handler, event)

    assert reply.status == 200, reply.text
    assert reply.event["isBase64Encoded"] is False
    assert reply.headers["content-type"] == "application/json"
    doc = reply.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("wine", "1", f"req-{source}")
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]}
    assert shapes == {"label": ("INT64", [2]), "probabilities": ("FP32", [2, 3])}
    assert_outputs_match(outputs_from_json(doc), ort_reference(example_features()))


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_binary_infer_round_trip(demo_handler: Any, source: str) -> None:
    features = reference_rows(7, start=40)
    body, header_length = binary_request(features, binary_data_output=True)
    event = http_event(
        source,
        "POST",
        INFER,
        body=body,
        base64_body=True,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )
    reply = invoke(demo_handler, event)

    assert reply.status == 200, reply.text
    assert reply.event["isBase64Encoded"] is True
    assert reply.headers["content-type"] == "application/octet-stream"
    doc, tensors = parse_binary_response(
        reply.body, int(reply.headers["inference-header-content-length"])
    )
    assert doc["model_name"] == "wine"
    assert all("binary_data_size" in o["parameters"] for o in doc["outputs"])
    assert_outputs_match(tensors, ort_reference(features))


def test_binary_infer_with_tritons_own_client_codec(demo_handler: Any) -> None:
    """Triton's Python client builds the request and parses the reply: interoperability."""
    import tritonclient.http as triton

    features = reference_rows(5, start=90)
    tensor = triton.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=True)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=True),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id="triton-1"
    )
    event = http_event(
        FUNCTION_URL,
        "POST",
        INFER,
        body=body,
        base64_body=True,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(json_size),
        },
    )
    reply = invoke(demo_handler, event)

    assert reply.status == 200, reply.text
    result = triton.InferenceServerClient.parse_response_body(
        reply.body, header_length=int(reply.headers["inference-header-content-length"])
    )
    assert result.get_response()["id"] == "triton-1"
    got = {name: result.as_numpy(name) for name in ("label", "probabilities")}
    assert_outputs_match(got, ort_reference(features))


@pytest.mark.parametrize("source", [REST, HTTP_SAM, FUNCTION_URL])
def test_v1_predict_matches_onnxruntime(demo_handler: Any, source: str) -> None:
    features = reference_rows(3, start=10)
    body = json.dumps({"instances": features.tolist()})
    reply = invoke(
        demo_handler,
        http_event(source, "POST", "/v1/models/wine:predict", body=body, headers=JSON_HEADERS),
    )

    assert reply.status == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == 3
    got = {
        "label": np.array([p["label"] for p in predictions], dtype=np.int64),
        "probabilities": np.array([p["probabilities"] for p in predictions], dtype=np.float32),
    }
    assert_outputs_match(got, ort_reference(features))


def test_http_api_named_stage_is_stripped_from_the_path(demo_handler: Any) -> None:
    event = http_event(HTTP_SAM, "GET", "/v2/health/live", stage="prod")
    assert event["rawPath"] == "/prod/v2/health/live"
    assert event["requestContext"]["stage"] == "prod"
    reply = invoke(demo_handler, event)
    assert (reply.status, reply.json()) == (200, {"live": True})

    infer = http_event(
        HTTP, "POST", INFER, body=EXAMPLE_REQUEST.read_text(), headers=JSON_HEADERS, stage="prod"
    )
    assert infer["rawPath"] == f"/prod{INFER}"
    reply = invoke(demo_handler, infer)
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(example_features()))


def test_only_the_actual_stage_is_stripped(demo_handler: Any) -> None:
    """On the $default stage, "/prod" is part of the path, so there is no such endpoint."""
    event = http_event(HTTP_SAM, "GET", "/prod/v2/health/live", stage="$default")
    assert_error_reply(invoke(demo_handler, event), 404, "no endpoint")


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_compressed_request_body(demo_handler: Any, encoding: str, compress: Any) -> None:
    features = reference_rows(20, start=60)
    body = compress(json_infer_body(features).encode())
    event = http_event(
        REST_SAM,
        "POST",
        INFER,
        body=body,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    reply = invoke(demo_handler, event)
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(features))


def test_base_path_of_a_custom_domain_mapping_is_stripped() -> None:
    handler = build_handler(INFERSTACK_BASE_PATH="/ml/", INFERSTACK_METRICS="false")
    live = invoke(handler, http_event(REST_SAM, "GET", "/ml/v2/health/live"))
    assert (live.status, live.json()) == (200, {"live": True})
    infer = http_event(
        FUNCTION_URL, "POST", f"/ml{INFER}", body=EXAMPLE_REQUEST.read_text(), headers=JSON_HEADERS
    )
    reply = invoke(handler, infer)
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(example_features()))
    openapi = invoke(handler, http_event(HTTP_SAM, "GET", "/ml/openapi.json"))
    assert openapi.status == 200
    assert "/v2/models/{model}/infer" in openapi.json()["paths"]


# ------------------------------------------------------------------ FastAPI via Mangum


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_openapi_document_and_docs_page_through_mangum(demo_handler: Any, source: str) -> None:
    reply = invoke(demo_handler, http_event(source, "GET", "/openapi.json"))
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    doc = reply.json()
    assert doc["openapi"].startswith("3.")
    assert {"/v2/health/ready", "/v2/models/{model}/infer", "/v1/models/{model}:predict"} <= set(
        doc["paths"]
    )

    docs = invoke(demo_handler, http_event(source, "GET", "/docs"))
    assert docs.status == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text.lower()

    wrong_method = invoke(demo_handler, http_event(source, "POST", "/openapi.json", body="{}"))
    assert_error_reply(wrong_method, 405)


def test_openapi_document_on_an_http_api_named_stage(demo_handler: Any) -> None:
    reply = invoke(demo_handler, http_event(HTTP_SAM, "GET", "/openapi.json", stage="prod"))
    assert reply.status == 200, reply.text
    assert reply.json()["openapi"].startswith("3.")


def test_docs_page_points_at_the_openapi_document_under_the_stage(demo_handler: Any) -> None:
    event = http_event(REST_SAM, "GET", "/docs", stage="prod")
    assert event["requestContext"]["path"] == "/prod/docs"
    page = invoke(demo_handler, event)
    assert page.status == 200
    assert re.findall(r"url: '([^']*)'", page.text) == ["/prod/openapi.json"]


# ------------------------------------------------------------------------ client errors


def feature_input(**overrides: Any) -> dict[str, Any]:
    features = example_features()
    tensor = {
        "name": "features",
        "shape": list(features.shape),
        "datatype": "FP32",
        "data": features.reshape(-1).tolist(),
    }
    return {**tensor, **overrides}


INFER_ERRORS = {
    "malformed-json": ('{"inputs": [', 400, ["not valid JSON"]),
    "not-an-object": ("[1, 2, 3]", 400, ["JSON object"]),
    "no-inputs": (json.dumps({"id": "x"}), 400, ["non-empty 'inputs'"]),
    "wrong-shape": (
        json.dumps({"inputs": [feature_input(shape=[1, 12], data=[0.5] * 12)]}),
        400,
        ["shape [1, 12]", "[-1, 13]"],
    ),
    "wrong-rank": (
        json.dumps({"inputs": [feature_input(shape=[26])]}),
        400,
        ["shape [26]", "[-1, 13]"],
    ),
    "wrong-datatype": (
        json.dumps({"inputs": [feature_input(datatype="FP64")]}),
        400,
        ["datatype FP64", "expects FP32"],
    ),
    "unknown-datatype": (
        json.dumps({"inputs": [feature_input(datatype="FLOAT")]}),
        400,
        ["'FLOAT'", "FP32"],
    ),
    "extra-input": (
        json.dumps({"inputs": [feature_input(), feature_input(name="colour")]}),
        400,
        ["no input 'colour'", "features"],
    ),
    "input-twice": (
        json.dumps({"inputs": [feature_input(), feature_input()]}),
        400,
        ["given twice"],
    ),
    "data-shorter-than-shape": (
        json.dumps({"inputs": [feature_input(data=[0.5] * 13)]}),
        400,
        ["needs 26 elements", "data has 13"],
    ),
    "non-numeric-data": (
        json.dumps({"inputs": [feature_input(shape=[1, 13], data=["x"] * 13)]}),
        400,
        ["FP32"],
    ),
    "unknown-output": (
        json.dumps({"inputs": [feature_input()], "outputs": [{"name": "score"}]}),
        400,
        ["no outputs ['score']"],
    ),
}


@pytest.mark.parametrize("source", [REST_SAM, HTTP])
@pytest.mark.parametrize("case", list(INFER_ERRORS))
def test_bad_infer_requests_are_400s(demo_handler: Any, source: str, case: str) -> None:
    body, status, words = INFER_ERRORS[case]
    reply = invoke(demo_handler, http_event(source, "POST", INFER, body=body, headers=JSON_HEADERS))
    assert_error_reply(reply, status, *words)


@pytest.mark.parametrize(
    ("header_length", "words"),
    [
        ("99999", ["Inference-Header-Content-Length is 99999"]),
        ("twelve", ["whole number"]),
    ],
)
def test_bad_binary_header_length(demo_handler: Any, header_length: str, words: list[str]) -> None:
    body, _ = binary_request(reference_rows(2))
    event = http_event(
        HTTP_SAM,
        "POST",
        INFER,
        body=body,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": header_length,
        },
    )
    assert_error_reply(invoke(demo_handler, event), 400, *words)


def test_binary_data_shorter_than_declared(demo_handler: Any) -> None:
    body, header_length = binary_request(reference_rows(2))
    event = http_event(
        REST,
        "POST",
        INFER,
        body=body[:-8],
        base64_body=True,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )
    assert_error_reply(invoke(demo_handler, event), 400, "binary_data_size is 104 bytes")


def test_unknown_model_is_404(demo_handler: Any) -> None:
    for path in ("/v2/models/resnet/infer", "/v2/models/resnet", "/v1/models/resnet:predict"):
        method = "GET" if path == "/v2/models/resnet" else "POST"
        event = http_event(FUNCTION_URL, method, path, body="{}", headers=JSON_HEADERS)
        assert_error_reply(invoke(demo_handler, event), 404, "model 'resnet'", "not served")


def test_body_over_the_limit_is_413(small_limit_handler: Any) -> None:
    features = reference_rows(40)
    body = json_infer_body(features)
    assert len(body) > SMALL_LIMIT
    event = http_event(HTTP, "POST", INFER, body=body, headers=JSON_HEADERS)
    assert_error_reply(invoke(small_limit_handler, event), 413, f"over {SMALL_LIMIT}")

    # Under the limit, the same handler serves.
    small = reference_rows(2)
    ok = invoke(
        small_limit_handler,
        http_event(HTTP, "POST", INFER, body=json_infer_body(small), headers=JSON_HEADERS),
    )
    assert ok.status == 200, ok.text


def test_gzip_bomb_is_413_not_a_memory_spike(small_limit_handler: Any) -> None:
    bomb = gzip.compress(b" " * 1_000_000)
    assert len(bomb) < SMALL_LIMIT
    event = http_event(
        REST_SAM,
        "POST",
        INFER,
        body=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_error_reply(invoke(small_limit_handler, event), 413, "decompressed")


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({"Content-Type": "text/plain"}, 415, ["text/plain", "application/json"]),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, 415, ["br"]),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400, ["gzip"]),
    ],
)
def test_unreadable_content_types_and_encodings(
    demo_handler: Any, headers: dict[str, str], status: int, words: list[str]
) -> None:
    event = http_event(REST, "POST", INFER, body=EXAMPLE_REQUEST.read_text(), headers=headers)
    assert_error_reply(invoke(demo_handler, event), status, *words)


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_invalid_base64_body_is_400(demo_handler: Any, source: str) -> None:
    event = http_event(source, "POST", INFER, headers=JSON_HEADERS)
    event["body"], event["isBase64Encoded"] = "this is not base64!", True
    assert_error_reply(invoke(demo_handler, event), 400, "base64")


@pytest.mark.parametrize("path", ["/", "/v3/models/wine/infer", "/v2/models/wine/explain"])
def test_unknown_route_is_404(demo_handler: Any, path: str) -> None:
    assert_error_reply(invoke(demo_handler, http_event(HTTP_SAM, "GET", path)), 404, "no endpoint")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", INFER), ("PUT", INFER), ("POST", "/v2/health/live"), ("DELETE", "/v2/models/wine")],
)
def test_wrong_method_is_405(demo_handler: Any, method: str, path: str) -> None:
    event = http_event(REST_SAM, method, path, body="")
    assert_error_reply(invoke(demo_handler, event), 405, "not allowed")


def test_missing_input_of_a_two_input_model(two_input_model: Path) -> None:
    from inferstack.bootstrap import lambda_entry_from_env

    handler = lambda_entry_from_env(
        {
            "INFERSTACK_MODEL_NAME": "adder",
            "INFERSTACK_MODEL_URI": str(two_input_model),
            "INFERSTACK_METRICS": "false",
        }
    )
    only_a = {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    event = http_event(HTTP, "POST", "/v2/models/adder/infer", body=json.dumps(only_a))
    assert_error_reply(invoke(handler, event), 400, "needs inputs ['b']", "missing")

    both = {
        "inputs": [
            only_a["inputs"][0],
            {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [10, 20]},
        ]
    }
    event = http_event(HTTP, "POST", "/v2/models/adder/infer", body=json.dumps(both))
    reply = invoke(handler, event)
    assert reply.status == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [11.0, 22.0]
    # v1 predict serves single-input models only, and says so.
    v1 = http_event(HTTP, "POST", "/v1/models/adder:predict", body='{"instances": [[1, 2]]}')
    assert_error_reply(invoke(handler, v1), 400, "single-input", "2 inputs")


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sum = a + b, FP32 [-1, 2] (built with onnx, a test-only dependency)."""
    from onnx import TensorProto, helper, save_model

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])
    out = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 2])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "adder", [a, b], [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path_factory.mktemp("adder") / "adder.onnx"
    save_model(model, str(path))
    return path


# ------------------------------------------------------------------- non-HTTP events


@pytest.mark.parametrize(
    "name",
    [
        "ScheduledEvent.json",
        "eventBridgeEvent.json",
        "s3Event.json",
        "sqsEvent.json",
        "s3EventBridgeNotificationObjectCreatedEvent.json",
    ],
)
def test_non_http_events_get_a_400_not_an_exception(demo_handler: Any, name: str) -> None:
    reply = invoke(demo_handler, load_event(name))
    assert_error_reply(reply, 400, "not an API Gateway or function URL HTTP event")


@pytest.mark.parametrize("event", [{}, {"version": "2.0", "rawPath": "/v2"}])
def test_truncated_events_get_a_400(demo_handler: Any, event: dict[str, Any]) -> None:
    assert_error_reply(invoke(demo_handler, event), 400, "not an API Gateway")


@pytest.mark.parametrize("event", [[1, 2], "ping", None])
def test_events_that_are_not_objects_get_a_400(demo_handler: Any, event: Any) -> None:
    assert_error_reply(invoke(demo_handler, event), 400, "not an object")


# -------------------------------------------------------- the real function module


def test_function_module_serves_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    module = import_function_module(monkeypatch, demo_env(INFERSTACK_METRICS="false"))
    assert callable(module.handler)
    ready = invoke(module.handler, http_event(HTTP_SAM, "GET", "/v2/health/ready"))
    assert (ready.status, ready.json()) == (200, {"ready": True})
    features = reference_rows(4, start=100)
    reply = invoke(
        module.handler,
        http_event(REST_SAM, "POST", INFER, body=json_infer_body(features), headers=JSON_HEADERS),
    )
    assert reply.status == 200, reply.text
    assert_outputs_match(outputs_from_json(reply.json()), ort_reference(features))


def test_function_module_without_configuration_fails_init_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inferstack.settings import ConfigurationError

    monkeypatch.delenv("INFERSTACK_MODEL_NAME", raising=False)
    monkeypatch.delenv("INFERSTACK_MODEL_URI", raising=False)
    with pytest.raises(ConfigurationError, match="INFERSTACK_MODEL_NAME and INFERSTACK_MODEL_URI"):
        import_function_module(monkeypatch, {})


# ------------------------------------------------------------------------ EMF metrics


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents among stdout's lines (logs are JSON lines too)."""
    docs = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def metric_names(doc: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def dimension_sets(doc: dict[str, Any]) -> list[set[str]]:
    return [set(dims) for d in doc["_aws"]["CloudWatchMetrics"] for dims in d["Dimensions"]]


# Powertools keeps one metric set per process: each handler built here sets the
# "environment" default dimension again, and Powertools warns about that (a deployed
# function builds one handler per execution environment, so it never does).
REPEATED_DIMENSION = pytest.mark.filterwarnings(
    "ignore:Dimension 'environment' has already been added"
)


@REPEATED_DIMENSION
def test_emf_metrics_per_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    handler = build_handler(INFERSTACK_ENV="functional-test")
    capsys.readouterr()

    body = EXAMPLE_REQUEST.read_text()
    assert invoke(handler, http_event(HTTP, "POST", INFER, body=body)).status == 200
    assert invoke(handler, http_event(HTTP, "GET", "/v2/health/live")).status == 200
    bad = invoke(handler, http_event(HTTP, "POST", INFER, body='{"inputs": ['))
    assert bad.status == 400
    docs = emf_documents(capsys.readouterr().out)

    requests = [d for d in docs if "Requests" in d]
    errors = [d for d in docs if "Errors" in d]
    assert len(requests) == 3, docs
    infer, health, failed = requests
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "InferStack" for d in docs)

    assert {"Latency", "ModelLatency", "RequestBytes", "ResponseBytes"} <= metric_names(infer)
    assert any({"environment", "model", "model_version"} <= s for s in dimension_sets(infer))
    assert (infer["environment"], infer["model"], infer["model_version"]) == (
        "functional-test",
        "wine",
        "1",
    )
    assert infer["RequestBytes"] == [float(len(body.encode()))]
    assert infer["ModelLatency"][0] > 0
    assert infer["Latency"][0] >= infer["ModelLatency"][0]

    # ColdStart: the first invocation of the execution environment only.
    assert infer.get("ColdStart") == [1.0]
    assert "ColdStart" not in health
    assert "ColdStart" not in failed
    assert "ModelLatency" not in failed

    assert len(errors) == 1, errors
    (error,) = errors
    assert any("ErrorClass" in s for s in dimension_sets(error))
    assert (error["ErrorClass"], error["Errors"]) == ("BadRequest", [1.0])
    assert error["environment"] == "functional-test"


def test_metrics_can_be_switched_off(capsys: pytest.CaptureFixture[str]) -> None:
    handler = build_handler(INFERSTACK_METRICS="false")
    capsys.readouterr()
    assert invoke(handler, http_event(HTTP, "GET", "/v2/health/live")).status == 200
    assert emf_documents(capsys.readouterr().out) == []


@REPEATED_DIMENSION
def test_binary_request_bytes_are_the_decoded_body(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RequestBytes counts the body the client sent, not its base64 transport form."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    handler = build_handler()
    body, header_length = binary_request(reference_rows(3))
    event = http_event(
        FUNCTION_URL,
        "POST",
        INFER,
        body=body,
        base64_body=True,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(header_length),
        },
    )
    capsys.readouterr()
    assert invoke(handler, event).status == 200
    (doc,) = [d for d in emf_documents(capsys.readouterr().out) if "Requests" in d]
    assert doc["RequestBytes"] == [float(len(body))]
    assert len(body) == header_length + struct.calcsize("<39f")
