"""The ASGI app every host serves: the protocol routes, registered from one table.

The protocol routes and SageMaker's /ping and /invocations are served by a raw ASGI
fast path in front of FastAPI: a request goes from uvicorn to the data plane with no
routing, dependency or response layers between (they cost more than a tiny model).
FastAPI keeps what it is good at: /docs, /openapi.json (which still describe every
route) and the answers for paths that are not routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferstack import __version__
from inferstack.dataplane import DataPlane, error_response
from inferstack.exceptions import InferStackError
from inferstack.names import PING_PATH
from inferstack.protocol.routes import ROUTES, Route, match_route
from inferstack.protocol.types import HttpRequest, HttpResponse
from inferstack.sagemaker import INVOCATIONS_PATH, SageMakerHost
from inferstack.server import openapi

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class InferStackApp(FastAPI):
    """FastAPI with the protocol's routes answered before FastAPI sees them."""

    def __init__(self, dataplane: DataPlane, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataplane = dataplane
        self.sagemaker = SageMakerHost(dataplane)
        self._batching: frozenset[str] | None = None  # models whose batcher joins requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            try:
                route, params = match_route(method, path)
            except InferStackError:
                route = None
            if route is not None:
                request = await _read(scope, receive, method, path)
                if request is not None:
                    work = self.dataplane.ahandle(request, route, params)
                    if route.endpoint in _INFER and params.get("model") in self._batchers():
                        answer = await _unless_gone(receive, work)
                    else:
                        answer = await work
                    if answer is not None:
                        await _write(send, answer)
                return
            if path == PING_PATH and method == "GET":
                await _write(send, self.sagemaker.ping())
                return
            if path == INVOCATIONS_PATH and method == "POST":
                request = await _read(scope, receive, method, path)
                if request is not None:
                    work = self.sagemaker.ainvoke(request)
                    answer = await (_unless_gone(receive, work) if self._batchers() else work)
                    if answer is not None:
                        await _write(send, answer)
                return
        await super().__call__(scope, receive, send)

    def _batchers(self) -> frozenset[str]:
        """The models whose batcher joins requests (hosts install batchers before serving)."""
        if self._batching is None:
            self._batching = frozenset(
                model.name
                for model in self.dataplane.repository
                if model.batcher is not None and model.batcher.policy.max_batch_size > 1
            )
        return self._batching


_INFER = frozenset({"infer", "predict_v1"})


async def _unless_gone(receive: Receive, work: Awaitable[HttpResponse]) -> HttpResponse | None:
    """`work`'s answer, or None when the client disconnects first: then `work` is cancelled,
    so a request still queued for a batch is not run for nobody. uvicorn does not cancel an
    app on disconnect; it tells `receive()`, which nothing else awaits once the body is read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read(scope: Scope, receive: Receive, method: str, path: str) -> HttpRequest | None:
    """The request with its whole body; None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    # ASGI servers give header names in lower case, as the data plane wants them.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return HttpRequest(method, path, headers, body)


async def _write(send: Send, result: HttpResponse) -> None:
    headers = [
        (b"content-type", _CONTENT_TYPES.get(result.content_type) or result.content_type.encode()),
        (b"content-length", str(len(result.body)).encode()),
    ]
    if result.headers:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": result.body})


_CONTENT_TYPES = {kind: kind.encode() for kind in ("application/json", "application/octet-stream")}


def create_app(dataplane: DataPlane, *, title: str = "InferStack") -> FastAPI:
    """The ASGI app over `dataplane`; used by `inferstack serve`, Lambda and the GPU container."""
    app = InferStackApp(
        dataplane,
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
