"""Shared helpers for the functional tests: real AWS sample events, the demo model, replies.

The events in tests/events/ are copied verbatim from public sources (see SOURCES.md);
the three SAM CLI files are Mustache templates that `fill_template` renders the way
`sam local generate-event` does. Tests change only what a request would change
(method, path, headers, body), so every other field stays what AWS really sends.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import tempfile
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "tests" / "events"
DEMO_DIR = REPO_ROOT / "layers" / "inferstack" / "demo"
DEMO_MODEL = DEMO_DIR / "wine.onnx"
EXAMPLE_REQUEST = DEMO_DIR / "example_request.json"
FUNCTION_DIR = REPO_ROOT / "functions" / "inference"
HANDLER_FILE = FUNCTION_DIR / "handler.py"

# `sam local generate-event apigateway aws-proxy` defaults (samcli event-mapping.json);
# tag names there use hyphens, the templates underscores.
SAM_DEFAULTS: dict[str, str] = {
    "body": base64.b64encode(b'{"test":"body"}').decode(),
    "stage": "prod",
    "method": "POST",
    "resource": "/{proxy+}",
    "path": "path/to/resource",
    "account_id": "123456789012",
    "dns_suffix": "us-east-1.amazonaws.com",
    "region": "us-east-1",
    "partition": "aws",
    "rule": "ExampleRule",
}

_PLACEHOLDER = re.compile(r"\{\{\{\s*([\w-]+)\s*\}\}\}")

# The event shapes a Lambda function behind HTTP can receive, by the file they come from.
REST_SAM = "AwsProxy.json"  # API Gateway REST API, payload 1.0 (SAM template)
REST = "apiGatewayProxyEvent.json"  # payload 1.0 (Powertools sample)
HTTP_SAM = "HttpApi.json"  # API Gateway HTTP API, payload 2.0 (SAM template)
HTTP = "apiGatewayProxyV2Event.json"  # payload 2.0 (Powertools sample)
FUNCTION_URL = "lambdaFunctionUrlEvent.json"  # Lambda function URL (payload 2.0)
HTTP_EVENTS = (REST_SAM, REST, HTTP_SAM, HTTP, FUNCTION_URL)


def fill_template(text: str, **values: Any) -> str:
    """Render a SAM CLI event template: `{{{name}}}` -> value (JSON-escaped, as every
    placeholder sits inside a JSON string). Unset names take SAM's defaults; names
    with no default render empty, as Mustache does."""

    def render(match: re.Match[str]) -> str:
        name = match.group(1).replace("-", "_")
        value = values.get(name, SAM_DEFAULTS.get(name, ""))
        return json.dumps(str(value))[1:-1]

    return _PLACEHOLDER.sub(render, text)


@cache
def _event_text(name: str) -> str:
    return (EVENTS_DIR / name).read_text(encoding="utf-8")


def load_event(name: str, **values: Any) -> dict[str, Any]:
    """A sample event as a fresh dict; SAM templates are filled with `values` first."""
    text = _event_text(name)
    if _PLACEHOLDER.search(text):
        text = fill_template(text, **values)
    elif values:
        raise ValueError(f"{name} is not a template; change the dict instead")
    return json.loads(text)


def http_event(
    source: str,
    method: str,
    path: str,
    *,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """An HTTP request as `source` (one of HTTP_EVENTS) delivers it to the function.

    `path` is what the client asked for, after any stage; an HTTP API with a named
    stage puts the stage in front of it, as API Gateway does. The body travels base64
    when `base64_body` is true; the SAM templates send it base64 unless it is False.
    """
    raw = body.encode() if isinstance(body, str) else (body or b"")
    if source in (REST_SAM, HTTP_SAM):
        event = load_event(
            source,
            method=method,
            path=path.lstrip("/"),
            stage=stage or ("prod" if source == REST_SAM else "$default"),
            body=base64.b64encode(raw).decode(),
        )
        encoded = True
        if base64_body is False:
            event["body"], encoded = raw.decode(), False
        event["isBase64Encoded"] = encoded
    else:
        event = load_event(source)
        encoded = bool(base64_body)
        event["body"] = base64.b64encode(raw).decode() if encoded else raw.decode()
        event["isBase64Encoded"] = encoded
        if event.get("version") == "2.0":
            event["requestContext"]["http"]["method"] = method
            if stage is not None:
                event["requestContext"]["stage"] = stage
        else:
            event["httpMethod"] = event["requestContext"]["httpMethod"] = method
            event["resource"] = event["requestContext"]["resourcePath"] = "/{proxy+}"
            event["pathParameters"] = {"proxy": path.lstrip("/")}
            if stage is not None:
                event["requestContext"]["stage"] = stage
    context = event["requestContext"]
    if event.get("version") == "2.0":
        stage_name = context.get("stage")
        full = f"/{stage_name}{path}" if stage_name and stage_name != "$default" else path
        event["rawPath"] = context["http"]["path"] = full
    else:
        # Payload 1.0: `path` is the resource path; requestContext.path is the URL's,
        # with a named stage in front (an HTTP API's "$default" stage has none).
        event["path"] = path
        stage_name = context["stage"]
        context["path"] = path if stage_name == "$default" else f"/{stage_name}{path}"
    for name, value in (headers or {}).items():
        event.setdefault("headers", {})[name] = value
        if "multiValueHeaders" in event:
            event["multiValueHeaders"][name] = [value]
    return event


@dataclass
class Reply:
    """A proxy-integration response, with the body decoded."""

    event: dict[str, Any]

    @property
    def status(self) -> int:
        return int(self.event["statusCode"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in (self.event.get("headers") or {}).items()}

    @property
    def body(self) -> bytes:
        body = self.event.get("body") or ""
        if self.event.get("isBase64Encoded"):
            return base64.b64decode(body, validate=True)
        return body.encode()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class FakeContext:
    """The attributes of the Lambda context object the runtime may read."""

    function_name = "inferstack-inference"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:inferstack-inference"
    memory_limit_in_mb = 2048

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def invoke(handler: Any, event: dict[str, Any]) -> Reply:
    """Call the handler as the Lambda runtime does; the result must be JSON-serializable."""
    result = handler(event, FakeContext())
    json.dumps(result)  # the runtime serializes the result: it must survive that
    assert isinstance(result["statusCode"], int)
    assert isinstance(result["body"], str)
    assert isinstance(result["isBase64Encoded"], bool)
    return Reply(result)


def leak_markers(*local_paths: Path | str) -> list[str]:
    """Strings that must never reach a client: tracebacks and local file-system paths."""
    return [
        "Traceback",
        'File "',
        str(REPO_ROOT),
        tempfile.gettempdir() + "/",
        "/tmp/inferstack-models",  # the runtime's default cache dir
        sys.prefix,
        "site-packages",
        "/var/task",
        *(str(path) for path in local_paths),
    ]


def assert_error_reply(
    reply: Reply, status: int, *words: str, local_paths: tuple[Path | str, ...] = ()
) -> str:
    """A protocol error: the status, `{"error": message}` holding `words`, nothing internal.
    Returns the message."""
    assert reply.status == status, reply.text
    assert reply.headers.get("content-type", "").startswith("application/json")
    assert reply.event["isBase64Encoded"] is False
    doc = reply.json()
    assert set(doc) == {"error"}, doc
    message = doc["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    for marker in leak_markers(*local_paths):
        assert marker not in reply.text, f"{marker!r} leaked into {reply.text!r}"
    return message


def ort_reference(features: np.ndarray, model: Path = DEMO_MODEL) -> dict[str, np.ndarray]:
    """What ONNX Runtime itself returns for `features` (the expected outputs)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"features": features}), strict=True))


def example_features() -> np.ndarray:
    doc = json.loads(EXAMPLE_REQUEST.read_text())
    return np.asarray(doc["inputs"][0]["data"], dtype=np.float32)


def reference_rows(count: int, start: int = 0) -> np.ndarray:
    """Real rows of the wine data set (the demo's reference sample)."""
    sample = np.load(DEMO_DIR / "reference_sample.npy").astype(np.float32)
    return np.ascontiguousarray(sample[start : start + count])


def json_infer_body(features: np.ndarray, **extra: Any) -> str:
    doc = {
        "inputs": [
            {
                "name": "features",
                "shape": list(features.shape),
                "datatype": "FP32",
                "data": features.reshape(-1).tolist(),
            }
        ],
        **extra,
    }
    return json.dumps(doc)


def assert_outputs_match(outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(outputs) == set(expected)
    np.testing.assert_array_equal(outputs["label"], expected["label"])
    np.testing.assert_allclose(
        outputs["probabilities"], expected["probabilities"], rtol=1e-6, atol=1e-7
    )


def outputs_from_json(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    dtypes = {"INT64": np.int64, "FP32": np.float32}
    return {
        o["name"]: np.asarray(o["data"], dtype=dtypes[o["datatype"]]).reshape(o["shape"])
        for o in doc["outputs"]
    }


def demo_env(**overrides: str) -> dict[str, str]:
    return {
        "INFERSTACK_MODEL_NAME": "wine",
        "INFERSTACK_MODEL_URI": str(DEMO_MODEL),
        **overrides,
    }


def import_function_module(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """Import functions/inference/handler.py afresh, as a new execution environment does."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = f"inferstack_function_handler_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, HANDLER_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_handler() -> Any:
    """The function as deployed with its defaults: the bundled demo model, metrics on."""
    from inferstack.bootstrap import lambda_entry_from_env

    return lambda_entry_from_env(demo_env())


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private INFERSTACK_CACHE_DIR, so no test sees another's downloads."""
    cache_dir = tmp_path / "model-cache"
    monkeypatch.setenv("INFERSTACK_CACHE_DIR", str(cache_dir))
    return cache_dir
