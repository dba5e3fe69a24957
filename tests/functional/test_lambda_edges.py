"""The Lambda entry point at its edges: the cases a mutation run showed no test would notice.

The docs page (Swagger UI) must load the OpenAPI document from the URL the client can
reach: behind a named stage, a custom domain's base path, or nothing (function URLs, the
$default stage). Answers must keep to the response format of the event's payload version,
and the logs of a request must carry the ids that find it in CloudWatch.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.bootstrap import lambda_entry_from_env
from inferstack.names import SERVICE_NAME

from .conftest import (
    EXAMPLE_REQUEST,
    FUNCTION_URL,
    HTTP,
    HTTP_EVENTS,
    HTTP_SAM,
    REST,
    REST_SAM,
    FakeContext,
    assert_error_reply,
    demo_env,
    http_event,
    invoke,
    load_event,
)
from .protocol_models import write_lookup

if TYPE_CHECKING:
    from pathlib import Path

# The proxy integration's response fields, by payload format version. API Gateway answers
# 502 "Malformed Lambda proxy response" to anything else.
# REST (1.0): https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html#api-gateway-simple-proxy-for-lambda-output-format
# HTTP API and function URLs (2.0): https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
RESPONSE_FIELDS = {
    "1.0": {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"},
    "2.0": {"statusCode", "headers", "body", "isBase64Encoded", "cookies"},
}


def openapi_links(reply: Any) -> list[str]:
    """The document URLs a Swagger UI page loads."""
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("text/html")
    return re.findall(r"url: '([^']*)'", reply.text)


@pytest.fixture(scope="module")
def onnx_base_path_handler() -> Any:
    """A custom domain mapped under /ONNX/ (a base path that ends in a letter, not a slash)."""
    return lambda_entry_from_env(demo_env(INFERSTACK_BASE_PATH="/ONNX/", INFERSTACK_METRICS="0"))


@pytest.mark.parametrize(
    ("source", "stage", "link"),
    [
        (HTTP_SAM, "production", "/production/openapi.json"),
        (REST_SAM, "production", "/production/openapi.json"),
        (HTTP_SAM, "$default", "/openapi.json"),
        (FUNCTION_URL, None, "/openapi.json"),
    ],
)
def test_docs_page_links_the_document_under_the_stage(
    demo_handler: Any, source: str, stage: str | None, link: str
) -> None:
    event = http_event(source, "GET", "/docs", stage=stage)
    assert openapi_links(invoke(demo_handler, event)) == [link]


@pytest.mark.parametrize("source", [REST, HTTP_SAM, FUNCTION_URL])
def test_docs_page_links_the_document_under_the_base_path(
    onnx_base_path_handler: Any, source: str
) -> None:
    event = http_event(source, "GET", "/ONNX/docs", stage="$default")
    assert openapi_links(invoke(onnx_base_path_handler, event)) == ["/ONNX/openapi.json"]
    document = invoke(onnx_base_path_handler, http_event(source, "GET", "/ONNX/openapi.json"))
    assert document.status == 200, document.text
    assert "/v2/models/{model}/infer" in document.json()["paths"]


def test_docs_page_of_a_rest_event_without_a_request_context_path(
    onnx_base_path_handler: Any,
) -> None:
    """Payload 1.0 events from test tools may leave out requestContext.path: the event's
    own path then says what the client called."""
    event = http_event(REST, "GET", "/ONNX/docs", stage="$default")
    del event["requestContext"]["path"]
    assert openapi_links(invoke(onnx_base_path_handler, event)) == ["/ONNX/openapi.json"]


@pytest.mark.parametrize("source", HTTP_EVENTS)
def test_answers_keep_to_the_response_format_of_the_payload_version(
    demo_handler: Any, source: str
) -> None:
    for method, path, body in (
        ("POST", "/v2/models/wine/infer", EXAMPLE_REQUEST.read_text()),
        ("GET", "/v2/models/nope", ""),
        ("POST", "/v2/models/wine/infer", "not base64!"),  # refused before routing
    ):
        event = http_event(source, method, path, body=body)
        if body.startswith("not base64"):
            event["body"], event["isBase64Encoded"] = body, True
        reply = invoke(demo_handler, event)
        version = "2.0" if event.get("version") == "2.0" else "1.0"
        assert set(reply.event) <= RESPONSE_FIELDS[version], reply.event
        for field in ("headers", "multiValueHeaders"):
            assert isinstance(reply.event.get(field, {}), dict), reply.event
        for values in reply.event.get("multiValueHeaders", {}).values():
            assert isinstance(values, list), reply.event


def test_only_a_named_stage_is_taken_off_the_path(demo_handler: Any) -> None:
    """On the $default stage a path that starts with "/$default" is the client's path."""
    event = http_event(HTTP, "GET", "/v2/health/live", stage="$default")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/$default/v2/health/live"
    assert_error_reply(invoke(demo_handler, event), 404, "no endpoint at /$default/v2/health/live")


@pytest.mark.parametrize(("source", "field"), [(HTTP, "rawPath"), (REST, "path")])
def test_an_event_without_a_path_is_answered_for_the_root(
    demo_handler: Any, source: str, field: str
) -> None:
    event = http_event(source, "GET", "/v2")
    del event[field]
    message = assert_error_reply(invoke(demo_handler, event), 404)
    assert message == "no endpoint at /"


@pytest.mark.parametrize(
    ("event", "said"),
    [
        (load_event("s3Event.json"), "not an API Gateway or function URL HTTP event"),
        (["not", "an", "object"], "event is not an object"),
    ],
    ids=["s3-event", "a-list"],
)
def test_an_event_that_is_not_an_http_request_is_told_so(
    demo_handler: Any, event: Any, said: str
) -> None:
    """A direct Invoke or a wrong trigger gets a 400 that says what is wrong with it."""
    assert assert_error_reply(invoke(demo_handler, event), 400) == said


def test_a_call_without_a_lambda_context_is_served(demo_handler: Any) -> None:
    """Local runners may pass no context object: there is then no request id to log."""
    reply = demo_handler(http_event(HTTP, "GET", "/v2/health/live"), None)
    assert reply["statusCode"] == 200, reply


def test_a_request_without_a_body_counts_zero_request_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = lambda_entry_from_env(demo_env(INFERSTACK_ENV="edges"))
    capsys.readouterr()
    event = http_event(HTTP, "GET", "/v2/health/live")
    event["body"] = None  # what API Gateway sends for a request without a body
    assert invoke(handler, event).status == 200
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    (requests,) = [d for d in documents if "Requests" in d]
    assert requests["RequestBytes"] == [0.0]


def test_request_logs_carry_the_lambda_and_api_gateway_request_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request's log lines name the invocation (context.aws_request_id) and the API
    Gateway request (requestContext.requestId), the ids that find it in CloudWatch Logs."""
    model = write_lookup(tmp_path / "lookup.onnx")
    handler = lambda_entry_from_env(
        {"INFERSTACK_MODEL_NAME": "lookup", "INFERSTACK_MODEL_URI": str(model)}
    )

    def lookup(index: int) -> tuple[dict[str, Any], dict[str, Any], FakeContext]:
        body = {"inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [index]}]}
        event = http_event(HTTP, "POST", "/v2/models/lookup/infer", body=json.dumps(body))
        event["requestContext"]["requestId"] = f"apigw-{index}"
        context = FakeContext()
        return handler(event, context), event, context

    assert lookup(0)[0]["statusCode"] == 200
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=SERVICE_NAME):
        reply, event, context = lookup(9)  # out of the table's range: logged, a 400
    assert reply["statusCode"] == 400
    (record,) = [r for r in caplog.records if "failed on a request's input" in r.getMessage()]
    # The line as Powertools writes it to stdout (CloudWatch Logs) for the service's logger.
    (powertools,) = logging.getLogger(SERVICE_NAME).handlers
    line = json.loads(powertools.format(record))
    assert line["request_id"] == context.aws_request_id
    assert line["correlation_id"] == event["requestContext"]["requestId"] == "apigw-9"
