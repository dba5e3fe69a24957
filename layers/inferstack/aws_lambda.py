"""The Lambda entry point: API Gateway REST (payload 1.0), HTTP API (2.0) and function URLs.

Protocol routes go straight from the event to the data plane: no ASGI round trip, and
no FastAPI import on the cold-start path (it would cost more than numpy and ONNX
Runtime together). The FastAPI app, wrapped by Mangum, serves the rest (the OpenAPI
document and docs page); it is built once per execution environment, on first use.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from inferstack.dataplane import OCTET_STREAM, DataPlane
from inferstack.protocol.types import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools import Logger

logger = logging.getLogger(__name__)

# Paths only the FastAPI app serves.
ASGI_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


class LambdaEntry:
    """`handler(event, context)` for one execution environment."""

    def __init__(
        self, dataplane: DataPlane, *, base_path: str = "", log: Logger | None = None
    ) -> None:
        self.dataplane = dataplane
        self.base_path = base_path.rstrip("/")
        self.log = log
        self._asgi: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
        self._root_path = ""

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if not isinstance(event, dict):  # a direct Invoke can send any JSON value
            return response_to_event(self.dataplane.reject(400, "event is not an object"), v2=True)
        v2 = event.get("version") == "2.0"
        if self.log is not None:
            self.log.append_keys(
                request_id=getattr(context, "aws_request_id", None),
                correlation_id=(event.get("requestContext") or {}).get("requestId"),
            )
        try:
            request = request_from_event(event, self.base_path)
        except ValueError as exc:
            return response_to_event(self.dataplane.reject(400, str(exc)), v2=v2)
        if request.path in ASGI_PATHS:
            # The docs page must link to the OpenAPI document under the prefix
            # (stage, base path) the client used, which Mangum does not pass on.
            self._root_path = client_prefix(event, request.path)
            return self.asgi(with_path(event, request.path), context)
        return response_to_event(self.dataplane.handle(request), v2=v2)

    @property
    def asgi(self) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        """Mangum over the FastAPI app (lifespan off: the models are already loaded)."""
        if self._asgi is None:
            from mangum import Mangum

            from inferstack.server.app import create_app

            app = create_app(self.dataplane)

            async def under_root_path(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http" and self._root_path:
                    root = self._root_path
                    scope = {**scope, "root_path": root, "path": root + scope["path"]}
                await app(scope, receive, send)

            self._asgi = Mangum(under_root_path, lifespan="off")
        return self._asgi


def request_from_event(event: dict[str, Any], base_path: str = "") -> HttpRequest:
    """The HTTP request inside an API Gateway or function URL event."""
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        method = context.get("http", {}).get("method")
        path = event.get("rawPath") or "/"
        stage = context.get("stage")
        # HTTP API keeps a named stage in the path; $default has none.
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :]
    else:
        method = event.get("httpMethod")
        path = event.get("path") or "/"
    if not method:
        raise ValueError("not an API Gateway or function URL HTTP event")
    if base_path and path.startswith(base_path + "/"):
        path = path[len(base_path) :]
    headers = {key.lower(): value for key, value in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("body is marked base64 but is not valid base64") from None
    else:
        raw = body.encode("utf-8")
    return HttpRequest(method.upper(), path, headers, raw)


def client_prefix(event: dict[str, Any], path: str) -> str:
    """What precedes the route in the URL the client called: "/prod", "/api", or ""."""
    if event.get("version") == "2.0":
        seen = event.get("rawPath") or path
    else:
        seen = (event.get("requestContext") or {}).get("path") or event.get("path") or path
    return seen[: -len(path)] if seen.endswith(path) and seen != path else ""


def with_path(event: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of the event whose path is the route alone (stage and base path removed)."""
    copy = dict(event)
    if event.get("version") == "2.0":
        context = dict(copy.get("requestContext") or {})
        context["http"] = {**context.get("http", {}), "path": path}
        copy.update(rawPath=path, requestContext=context)
    else:
        copy["path"] = path
    return copy


def response_to_event(response: HttpResponse, *, v2: bool) -> dict[str, Any]:
    """The proxy-integration response; binary bodies go base64-encoded."""
    headers = {"content-type": response.content_type, **response.headers}
    binary = response.content_type == OCTET_STREAM
    body = base64.b64encode(response.body).decode("ascii") if binary else response.body.decode()
    result: dict[str, Any] = {
        "statusCode": response.status,
        "headers": headers,
        "body": body,
        "isBase64Encoded": binary,
    }
    if not v2:
        result["multiValueHeaders"] = {}
    return result
