"""The transport-free data plane: HTTP-shaped requests in, HTTP-shaped responses out.

Both hosts call it: the FastAPI app (local server, GPU container) through `ahandle`,
and the Lambda entry point through `handle`, so status codes, bodies and metrics are
the same wherever a model runs. Errors become `{"error": ...}` here and only here.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from inferstack import __version__
from inferstack.capture import Capture, capture_from_env
from inferstack.constants import DEFAULT_MAX_REQUEST_BYTES, EXTENSIONS, SERVER_NAME
from inferstack.exceptions import (
    BadRequestError,
    InferStackError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from inferstack.protocol import codec, v1
from inferstack.protocol.routes import Route, match_route
from inferstack.protocol.types import (
    HttpRequest,
    HttpResponse,
    InferOutput,
    InferRequest,
    InferResponse,
)
from inferstack.telemetry import RequestRecord, Telemetry

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.models.base import Model, Tensors
    from inferstack.models.repository import ModelRepository

logger = logging.getLogger(__name__)

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
_READABLE_TYPES = ("", JSON, OCTET_STREAM)
# Decoding a large JSON body takes milliseconds: do it off the event loop.
_DECODE_ON_LOOP_BYTES = 256 * 1024


@dataclass(slots=True)
class _Infer:
    """An infer call between decoding and encoding."""

    model: Model
    request: InferRequest
    tensors: Tensors
    v1: bool = False
    body: bytes = b""  # as decoded (decompressed): what capture records
    header_length: int | None = None  # the binary extension's JSON header length


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        telemetry: Telemetry | None = None,
        capture: Capture | None = None,
        server_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """`capture` None: what the process environment asks for (INFERSTACK_CAPTURE_RATE);
        `server_extra`: what `GET /v2` adds under "inferstack" (the GPU container: which
        backend serves each model, and why)."""
        self.repository = repository
        self.server_extra = dict(server_extra) if server_extra else None
        self.max_request_bytes = max_request_bytes
        self.telemetry = telemetry or Telemetry()
        self.capture = capture_from_env() if capture is None else capture

    # ------------------------------------------------------------------ dispatch

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Serve one request synchronously (the Lambda path: no event loop)."""
        start = time.perf_counter()
        record = RequestRecord(request_bytes=len(request.body))
        try:
            route, params = match_route(request.method, request.path)
            if route.endpoint in ("infer", "predict_v1"):
                call = self._prepare(route, params, request, record)
                outputs = self._predict(call, record)
                response = self._finish(call, outputs)
                self._capture(call, response)
            else:
                response = getattr(self, route.endpoint)(**params)
        except Exception as exc:
            response = self._error(exc, request)
        return self._account(response, record, start)

    async def ahandle(
        self, request: HttpRequest, route: Route, params: dict[str, str]
    ) -> HttpResponse:
        """Serve one routed request on an event loop; inference runs off the loop."""
        start = time.perf_counter()
        record = RequestRecord(request_bytes=len(request.body))
        try:
            if route.endpoint in ("infer", "predict_v1"):
                if len(request.body) > _DECODE_ON_LOOP_BYTES:
                    import asyncio  # not at module level: the Lambda path has no loop

                    call = await asyncio.to_thread(self._prepare, route, params, request, record)
                else:
                    call = self._prepare(route, params, request, record)
                began = time.perf_counter()
                outputs = await call.model.apredict(call.tensors, call.request.output_names())
                record.model_ms = (time.perf_counter() - began) * 1e3
                response = self._finish(call, outputs)
                self._capture(call, response)
            else:
                response = getattr(self, route.endpoint)(**params)
        except Exception as exc:
            response = self._error(exc, request)
        return self._account(response, record, start)

    def _capture(self, call: _Infer, response: HttpResponse) -> None:
        """Offer an answered v2 inference to the drift capture (a raw binary body, header
        length 0, and v1 predictions are not captured: no reader could decode them)."""
        capture = self.capture
        if capture.rate and not call.v1 and call.header_length != 0:
            try:
                capture.offer(
                    call.model.name, call.body, call.header_length, response, call.request.id
                )
            except Exception:  # the answer stands whatever happens to its copy
                logger.exception("drift capture of a %s request failed", call.model.name)

    def reject(self, status: int, message: str) -> HttpResponse:
        """An error the host found before routing (say, an undecodable event), accounted."""
        return self._account(error_response(status, message), RequestRecord(), time.perf_counter())

    def _account(self, response: HttpResponse, record: RequestRecord, start: float) -> HttpResponse:
        record.status = response.status
        record.response_bytes = len(response.body)
        record.total_ms = (time.perf_counter() - start) * 1e3
        self.telemetry.record(record)
        return response

    def _error(self, exc: Exception, request: HttpRequest) -> HttpResponse:
        if isinstance(exc, InferStackError):
            status, message = exc.status_code, exc.message
            if status == 500:
                logger.error("%s %s -> %d: %s", request.method, request.path, status, message)
        else:
            # A bug, not a client mistake: log the traceback, tell the client nothing internal.
            logger.exception("unhandled error on %s %s", request.method, request.path)
            status, message = 500, "internal server error"
        return error_response(status, message)

    # ------------------------------------------------------------------ endpoints

    def server_metadata(self) -> HttpResponse:
        document: dict[str, Any] = {
            "name": SERVER_NAME,
            "version": __version__,
            "extensions": list(EXTENSIONS),
        }
        if self.server_extra:  # clients of the protocol ignore keys they do not know
            document["inferstack"] = self.server_extra
        return _json(document)

    def live(self) -> HttpResponse:
        return _json({"live": True})

    def ready(self) -> HttpResponse:
        if not self.repository.ready():
            not_ready = [m.name for m in self.repository if not m.ready]
            return error_response(503, f"models not ready: {not_ready}")
        return _json({"ready": True})

    def model_metadata(self, model: str, version: str | None = None) -> HttpResponse:
        found = self.repository.get_ready(model, version)
        return _json(found.metadata())

    def model_ready(self, model: str, version: str | None = None) -> HttpResponse:
        found = self.repository.get_ready(model, version)
        return _json({"name": found.name, "ready": True})

    def repository_index(self) -> HttpResponse:
        return _json(self.repository.index())

    # ------------------------------------------------------------------ inference

    def _prepare(
        self, route: Route, params: dict[str, str], http: HttpRequest, record: RequestRecord
    ) -> _Infer:
        model = self.repository.get_ready(params["model"], params.get("version"))
        record.model, record.model_version = model.name, model.version
        headers = http.headers
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in _READABLE_TYPES:
            raise UnsupportedMediaTypeError(
                f"Content-Type {content_type} is not accepted; send {JSON}, or "
                f"{OCTET_STREAM} with Inference-Header-Content-Length for binary tensors"
            )
        body = self._body(http)
        if route.endpoint == "predict_v1":
            request = v1.decode_predict(body, model)
            return _Infer(model, request, model.validate(request.inputs, None), v1=True)
        length = headers.get(codec.HEADER_LENGTH)
        header_length = None
        if length is None:
            request = codec.decode_request(body)
        elif not length.strip().isdigit():
            raise BadRequestError("Inference-Header-Content-Length must be a whole number")
        elif (header_length := int(length)) == 0:
            if len(model.inputs) != 1:
                raise BadRequestError(
                    "a raw binary request (Inference-Header-Content-Length: 0) needs a "
                    f"single-input model; '{model.name}' has {len(model.inputs)} inputs"
                )
            request = codec.decode_raw_request(body, model.inputs[0])
        else:
            request = codec.decode_request(body, header_length)
        tensors = model.validate(request.inputs, request.output_names())
        return _Infer(model, request, tensors, body=body, header_length=header_length)

    def _body(self, http: HttpRequest) -> bytes:
        body, limit = http.body, self.max_request_bytes
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body of {len(body)} bytes is over {limit}")
        encoding = http.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise UnsupportedMediaTypeError(f"Content-Encoding {encoding} is not supported")
        # Bounded decompression: a small gzip bomb must not fill the memory.
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        try:
            inflater = zlib.decompressobj(wbits)
            plain = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise BadRequestError(f"request body is not valid {encoding} data") from None
        if len(plain) > limit or inflater.unconsumed_tail:
            raise PayloadTooLargeError(f"decompressed request body is over {limit} bytes")
        return plain

    def _predict(self, call: _Infer, record: RequestRecord) -> Tensors:
        began = time.perf_counter()
        with self.telemetry.trace("model.predict"):
            outputs = call.model.predict(call.tensors, call.request.output_names())
        record.model_ms = (time.perf_counter() - began) * 1e3
        return outputs

    def _finish(self, call: _Infer, outputs: Tensors) -> HttpResponse:
        model, request = call.model, call.request
        if call.v1:
            return _json(v1.encode_predictions(outputs, model))
        binary = {o.name: o.binary for o in request.outputs or ()}
        response = InferResponse(
            model_name=model.name,
            model_version=model.version,
            id=request.id,
            outputs=[
                InferOutput(
                    name,
                    model.output_spec(name).datatype,
                    array,
                    _pick(binary.get(name), request.binary_output),
                )
                for name, array in outputs.items()
            ],
        )
        body, header_length = codec.encode_response(response)
        if header_length is None:
            return HttpResponse(200, body)
        return HttpResponse(
            200, body, OCTET_STREAM, {"inference-header-content-length": str(header_length)}
        )


def _pick(explicit: bool | None, default: bool) -> bool:
    return default if explicit is None else explicit


def _json(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(payload))


def error_response(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"error": message}))
