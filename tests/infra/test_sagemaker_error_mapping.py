"""What a client sees when a SageMaker-hosted model fails, through the API Gateway integration.

The integration responses of the synthesized prod template are applied as API Gateway applies
them: the selection pattern picks a response by InvokeEndpoint's status, its mapping template
(Velocity, rendered with airspeed-ext, LocalStack's engine for API Gateway templates) may
override the status, and the method must declare what comes out. The error bodies are the
shapes of botocore's sagemaker-runtime model, checked by parsing them with botocore itself.
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

import airspeed  # airspeed-ext (dev dependency): LocalStack's Velocity engine for API Gateway
import pytest

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

ROUTE = "route=/v2/models/resnet50/infer,method=POST"
LOG_STREAM = (
    "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/"
    "inferstack-prod-resnet50:log-stream:AllTraffic/i-0abc"
)


class _Input:
    """$input of an integration response template (API Gateway mapping template reference)."""

    def __init__(self, body: str) -> None:
        self.body = body

    def path(self, expression: str) -> Any:
        value: Any = json.loads(self.body)
        for key in expression.removeprefix("$").strip(".").split("."):
            value = value.get(key) if key else value
        return value

    def json(self, expression: str) -> str:
        return json.dumps(self.path(expression))


class _Util:
    """$util: the functions API Gateway provides to templates."""

    @staticmethod
    def parseJson(text: str) -> Any:
        return json.loads(text)

    @staticmethod
    def base64Decode(text: str) -> str:
        return base64.b64decode(text).decode()

    @staticmethod
    def escapeJavaScript(text: str) -> str:
        return json.dumps(text)[1:-1].replace("'", "\\'")


def _sagemaker_infer_method(env: Synthesized) -> dict[str, Any]:
    template = json.loads(env.template_path.read_text())
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::ApiGateway::Method":
            continue
        integration = resource["Properties"].get("Integration", {})
        headers = integration.get("RequestParameters", {})
        if headers.get("integration.request.header.X-Amzn-SageMaker-Custom-Attributes") == (
            f"'{ROUTE}'"
        ):
            return dict(resource["Properties"])
    raise AssertionError("no SageMaker infer method in the prod template")


def _client_sees(
    method: dict[str, Any], status: int, body: bytes, *, base64_body: bool
) -> tuple[int, dict[str, Any], str]:
    """(status, JSON body, Content-Type) of the method response for one integration answer."""
    responses = method["Integration"]["IntegrationResponses"]
    chosen = [
        r
        for r in responses
        if "SelectionPattern" in r and re.fullmatch(r["SelectionPattern"], str(status))
    ]
    assert len(chosen) <= 1, "selection patterns overlap"
    (response,) = chosen or [r for r in responses if "SelectionPattern" not in r]
    declared = {m["StatusCode"] for m in method["MethodResponses"]}
    content_type = response["ResponseParameters"]["method.response.header.Content-Type"]
    template = response.get("ResponseTemplates", {}).get("application/json")
    assert template is not None, f"integration status {status} passes SageMaker's body through"
    assert response.get("ContentHandling") == "CONVERT_TO_TEXT"
    text = base64.b64encode(body).decode() if base64_body else body.decode()
    context: dict[str, Any] = {"responseOverride": {"header": {}}}
    rendered = airspeed.Template(template).merge(
        {"input": _Input(text), "util": _Util(), "context": context}
    )
    final = int(context["responseOverride"].get("status") or response["StatusCode"])
    assert str(final) in declared, f"{final} is not a declared method response"
    return final, json.loads(rendered), content_type


def _model_error(original_status: int | None, original_message: str | None) -> bytes:
    """InvokeEndpoint's 424 ModelError body, checked against botocore's own parser."""
    import botocore.session
    from botocore.parsers import create_parser

    body: dict[str, Any] = {
        "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
        "LogStreamArn": LOG_STREAM,
        "Message": f"Received client error ({original_status}) from primary with message "
        f'"{original_message}". See {LOG_STREAM} in account 123456789012 for more information.',
    }
    if original_status is not None:
        body["OriginalStatusCode"] = original_status
    if original_message is not None:
        body["OriginalMessage"] = original_message
    raw = json.dumps(body).encode()
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    response = {
        "status_code": 424,
        "headers": {"x-amzn-errortype": "ModelError:http://internal.amazon.com/"},
        "body": raw,
    }
    # As botocore's endpoint does: the generic error, then the modeled error's fields.
    parser = create_parser("rest-json")
    parsed = parser.parse(response, model.operation_model("InvokeEndpoint").output_shape)
    assert parsed["Error"]["Code"] == "ModelError"
    parsed.update(parser.parse(response, model.shape_for_error_code("ModelError")))
    assert parsed.get("OriginalStatusCode") == original_status
    assert parsed.get("OriginalMessage") == original_message
    return raw


@pytest.fixture(scope="module")
def method(synthesized: dict[str, Synthesized]) -> dict[str, Any]:
    return _sagemaker_infer_method(synthesized["prod"])


@pytest.fixture(params=[False, True], ids=["raw-body", "base64-body"])
def base64_body(request: pytest.FixtureRequest) -> bool:
    """Both encodings a template can be handed ("*/*" binary media type + CONVERT_TO_TEXT)."""
    return bool(request.param)


@pytest.mark.parametrize(
    ("container_status", "container_error"),
    [
        (400, "input 'features': expected shape [-1, 13], got [2, 12]"),
        (404, "model 'resnet50' version '7' not found"),
        (413, "request body of 7340032 bytes exceeds the 6291456-byte limit"),
        (500, "internal server error"),
        (503, "model 'resnet50' is not ready"),
    ],
)
def test_container_status_and_error_body_reach_the_client(
    method: dict[str, Any], base64_body: bool, container_status: int, container_error: str
) -> None:
    original = json.dumps({"error": container_error})
    status, body, content_type = _client_sees(
        method, 424, _model_error(container_status, original), base64_body=base64_body
    )
    assert status == container_status
    assert body == {"error": container_error}
    assert content_type == "'application/json'"


def test_a_model_that_did_not_answer_is_a_502_without_account_details(
    method: dict[str, Any], base64_body: bool
) -> None:
    status, body, _ = _client_sees(method, 424, _model_error(None, None), base64_body=base64_body)
    assert status == 502
    assert "error" in body and "123456789012" not in json.dumps(body)


def test_a_non_json_container_body_is_not_passed_on(
    method: dict[str, Any], base64_body: bool
) -> None:
    status, body, _ = _client_sees(
        method, 424, _model_error(502, "<html>Bad Gateway</html>"), base64_body=base64_body
    )
    assert status == 502
    assert body == {"error": "the model failed with status 502"}


def test_sagemaker_throttling_is_a_429(method: dict[str, Any], base64_body: bool) -> None:
    throttled = json.dumps(
        {"__type": "com.amazon.coral.availability#ThrottlingException", "message": "Rate exceeded"}
    ).encode()
    status, body, _ = _client_sees(method, 400, throttled, base64_body=base64_body)
    assert status == 429
    assert "retry" in body["error"]


def test_an_invalid_invoke_call_is_a_400_without_sagemakers_text(
    method: dict[str, Any], base64_body: bool
) -> None:
    invalid = json.dumps(
        {"message": "Endpoint inferstack-prod-resnet50 of account 123456789012 not found."}
    ).encode()
    status, body, _ = _client_sees(method, 400, invalid, base64_body=base64_body)
    assert status == 400
    assert "123456789012" not in body["error"]


@pytest.mark.parametrize(("sagemaker_status", "expected"), [(429, 429), (500, 502), (503, 503)])
def test_sagemaker_service_errors(
    method: dict[str, Any], sagemaker_status: int, expected: int
) -> None:
    status, body, _ = _client_sees(method, sagemaker_status, b'{"message": "x"}', base64_body=True)
    assert status == expected and set(body) == {"error"}


def test_a_binary_answer_gets_its_header_length_back(method: dict[str, Any]) -> None:
    """The container names a binary answer's JSON length in its custom attributes
    (InvokeEndpoint returns them verbatim); the 200 response maps them onto the binary
    extension's Inference-Header-Content-Length, which tritonclient reads."""
    (ok,) = [r for r in method["Integration"]["IntegrationResponses"] if r["StatusCode"] == "200"]
    assert ok["ResponseParameters"]["method.response.header.Inference-Header-Content-Length"] == (
        "integration.response.header.X-Amzn-SageMaker-Custom-Attributes"
    )
    (declared,) = [m for m in method["MethodResponses"] if m["StatusCode"] == "200"]
    assert (
        "method.response.header.Inference-Header-Content-Length" in declared["ResponseParameters"]
    )
