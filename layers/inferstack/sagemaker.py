"""SageMaker's container contract: `GET /ping` and `POST /invocations`, transport-free.

SageMaker real-time endpoints only ever call these two paths
(https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html).
The protocol route a client meant travels in the `X-Amzn-SageMaker-Custom-Attributes`
header as `route=<path>,method=<method>` (the API Gateway integration sets it, see
infra/constructs/api.py); with no route, `/invocations` is inference on the one served
model, so `invoke_endpoint` from boto3 or the SageMaker SDK works with a v2 body.

InvokeEndpoint passes only a few headers on (Content-Type, Accept, the custom attributes,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html),
so `Inference-Header-Content-Length` of the binary tensor extension cannot reach the
container: binary requests and responses carry it in the Content-Type instead, as
SageMaker's Triton containers do
(`application/vnd.sagemaker-triton.binary+json;json-header-size=N`,
https://docs.aws.amazon.com/sagemaker/latest/dg/deploy-models-frameworks-triton.html).
Clients of the API Gateway in front (tritonclient) send plain `application/octet-stream`
and lose the header on the way: the JSON header's length is then read off the body itself.
A binary answer also names its header length in the response's custom attributes, which
InvokeEndpoint returns verbatim and API Gateway maps back onto
`Inference-Header-Content-Length` (infra/constructs/api.py).

Any host can use this module: the ASGI app (`inferstack serve`, the GPU container) calls
`ainvoke`, a synchronous host `invoke`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from inferstack.dataplane import OCTET_STREAM
from inferstack.exceptions import BadRequestError, InferStackError
from inferstack.names import PING_PATH
from inferstack.protocol.codec import HEADER_LENGTH
from inferstack.protocol.routes import match_route
from inferstack.protocol.types import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.dataplane import DataPlane
    from inferstack.protocol.routes import Route

INVOCATIONS_PATH = "/invocations"
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
TRITON_BINARY = "application/vnd.sagemaker-triton.binary+json"
_HEADER_SIZE = "json-header-size"
# The routes /invocations may name: the protocol's own (never /ping or /invocations).
_METHODS = ("POST", "GET")


class SageMakerHost:
    """/ping and /invocations over a data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def ping(self) -> HttpResponse:
        """200 with an empty body once every model serves or has no release yet; 503
        {"error"} while one loads or after its release failed to load.

        A model with no release yet is healthy: a first deploy on an empty bucket must
        come up (SageMaker fails the endpoint when /ping is not 200 within its start-up
        health-check timeout), and the first release then loads with no other step.
        Not accounted in the metrics: SageMaker pings every few seconds.
        """
        if self.dataplane.repository.up():
            return _PING_OK
        return self.dataplane.ready()

    async def ainvoke(self, request: HttpRequest) -> HttpResponse:
        """Serve one /invocations request on an event loop (inference off it when slow)."""
        try:
            routed, route, params = self.route(request)
        except InferStackError as exc:
            return self.dataplane.reject(exc.status_code, exc.message)
        return to_sagemaker(await self.dataplane.ahandle(routed, route, params))

    def invoke(self, request: HttpRequest) -> HttpResponse:
        """Serve one /invocations request synchronously."""
        try:
            routed, _, _ = self.route(request)
        except InferStackError as exc:
            return self.dataplane.reject(exc.status_code, exc.message)
        return to_sagemaker(self.dataplane.handle(routed))

    def route(self, request: HttpRequest) -> tuple[HttpRequest, Route, dict[str, str]]:
        """The protocol request an /invocations request stands for, and its route."""
        attributes = parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES, ""))
        path = attributes.get("route")
        if path is None:
            path, method = f"/v2/models/{self._only_model()}/infer", "POST"
        else:
            method = attributes.get("method", "").upper() or _method_for(path)
        if not path.startswith("/") or path in (PING_PATH, INVOCATIONS_PATH):
            raise BadRequestError(f"route={path} is not a protocol route")
        if method not in _METHODS:
            raise BadRequestError(f"method={method} is not a protocol method (GET or POST)")
        route, params = match_route(method, path)  # 404 / 405 for routes that do not exist
        routed = HttpRequest(
            method, path, from_sagemaker(request.headers, request.body), request.body
        )
        return routed, route, params

    def _only_model(self) -> str:
        names = [model.name for model in self.dataplane.repository]
        if len(names) != 1:
            raise BadRequestError(
                f"this endpoint serves {len(names)} models: name the route in "
                "X-Amzn-SageMaker-Custom-Attributes, e.g. route=/v2/models/<name>/infer"
            )
        return names[0]


def parse_custom_attributes(value: str) -> dict[str, str]:
    """`key=value` pairs of the free-form custom attributes; other parts are ignored.

    SageMaker forwards the string verbatim (up to 1,024 visible ASCII characters,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html),
    so a caller may add attributes of its own: the first of each key wins.
    """
    attributes: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.partition("=")
        key = key.strip().lower()
        if sep and key and key not in attributes:
            attributes[key] = item.strip()
    return attributes


def from_sagemaker(headers: Mapping[str, str], body: bytes = b"") -> dict[str, str]:
    """Headers with the binary extension's `Inference-Header-Content-Length` restored:
    from a Triton-on-SageMaker Content-Type, or from the body's leading JSON object."""
    plain = dict(headers)
    media, _, options = plain.get("content-type", "").partition(";")
    media = media.strip().lower()
    if media == OCTET_STREAM and HEADER_LENGTH not in plain:
        length = json_header_length(body)
        if length is not None:
            plain[HEADER_LENGTH] = str(length)
        return plain
    if media != TRITON_BINARY:
        return plain
    size = _option(options, _HEADER_SIZE)
    if size is None:
        raise BadRequestError(f"Content-Type {TRITON_BINARY} needs ;{_HEADER_SIZE}=N")
    plain["content-type"] = OCTET_STREAM
    plain[HEADER_LENGTH] = size
    return plain


def to_sagemaker(response: HttpResponse) -> HttpResponse:
    """A binary response's JSON length moved into the only response headers InvokeEndpoint
    returns: the Content-Type (Triton's form) and the custom attributes (the bare number)."""
    size = response.headers.get(HEADER_LENGTH)
    if size is None:
        return response
    return response._replace(
        content_type=f"{TRITON_BINARY};{_HEADER_SIZE}={size}",
        headers={**response.headers, CUSTOM_ATTRIBUTES: size},
    )


def json_header_length(body: bytes) -> int | None:
    """Where the JSON header of a binary request ends, or None when it does not start with
    one. Decoding as Latin-1 keeps character offsets equal to byte offsets."""
    if not body.startswith(b"{"):
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except ValueError:
        return None
    return end


def _option(options: str, name: str) -> str | None:
    for part in options.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def _method_for(path: str) -> str:
    """The method of the route at `path` when the attributes name none."""
    for method in _METHODS:
        try:
            match_route(method, path)
        except InferStackError:
            continue
        return method
    return "POST"  # lets match_route report the missing route


_PING_OK = HttpResponse(200, b"", "text/plain; charset=utf-8")
