"""The FastAPI app every host serves: the protocol routes, registered from one table.

Routes take the raw request and hand it to the data plane, so no pydantic parsing
sits on the hot path; the OpenAPI document still describes each body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferstack import __version__
from inferstack.dataplane import DataPlane, error_response
from inferstack.protocol.routes import ROUTES, Route
from inferstack.protocol.types import HttpRequest
from inferstack.server import openapi

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def create_app(dataplane: DataPlane, *, title: str = "InferStack") -> FastAPI:
    """The ASGI app over `dataplane`; used by `inferstack serve`, Lambda and the GPU container."""
    app = FastAPI(
        title=title,
        version=__version__,
        summary="Open Inference Protocol (KServe v2) over ONNX Runtime",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.dataplane = dataplane
    for route in ROUTES:
        app.add_api_route(
            route.path,
            _endpoint(dataplane, route),
            methods=[route.method],
            summary=route.summary,
            tags=[route.tag],
            name=f"{route.endpoint}:{route.path}",
            openapi_extra=openapi.operation(route),
            response_class=Response,
        )
    _install_error_handlers(app)
    return app


def _endpoint(dataplane: DataPlane, route: Route) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        body = await request.body() if route.method == "POST" else b""
        http = HttpRequest(
            request.method,
            request.url.path,
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
            body,
        )
        result = await dataplane.ahandle(http, route, dict(request.path_params))
        return Response(
            result.body, result.status, headers=result.headers, media_type=result.content_type
        )

    endpoint.__name__ = route.endpoint
    return endpoint


def _install_error_handlers(app: FastAPI) -> None:
    """Starlette's own 404/405/validation errors in the protocol's {"error": ...} shape."""

    async def http_error(request: Request, exc: Any) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no endpoint at {request.url.path}"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return _response(error_response(exc.status_code, detail), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Any) -> Response:
        return _response(error_response(400, "request does not match the endpoint"))

    async def unhandled(request: Request, exc: Exception) -> Response:
        return _response(error_response(500, "internal server error"))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unhandled)


def _response(result: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(result.body, result.status, headers=headers, media_type=result.content_type)
