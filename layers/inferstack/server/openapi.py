"""OpenAPI descriptions of the protocol's bodies (the routes read raw bytes, so FastAPI
cannot infer them). Schemas follow the KServe v2 REST spec, required_api.md."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from inferstack.protocol.datatypes import DATATYPES

if TYPE_CHECKING:
    from inferstack.protocol.routes import Route

_PARAMETERS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "parameters": _PARAMETERS,
        "data": {"description": "row-major tensor contents, nested or flat"},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
V1_REQUEST = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": {"type": "array", "minItems": 1}},
}
V1_RESPONSE = {"type": "object", "properties": {"predictions": {"type": "array"}}}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
SERVER_METADATA = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
        # The GPU container only: which backend serves each model, on which device, and why.
        "inferstack": {"type": "object"},
    },
}
_SIGNATURE = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": sorted(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    },
}
MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": _SIGNATURE,
        "outputs": _SIGNATURE,
    },
}
REPOSITORY_INDEX = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE"]},
            "reason": {"type": "string"},
        },
    },
}


def _flag(name: str, *more: str) -> dict[str, Any]:
    required = [name, *more]
    properties: dict[str, Any] = {key: {"type": "string"} for key in more}
    properties[name] = {"const": True}
    return {"type": "object", "required": required, "properties": properties}


# endpoint -> (description, schema) of its 200 answer
_SUCCESS: dict[str, tuple[str, dict[str, Any]]] = {
    "server_metadata": ("Server name, version and protocol extensions", SERVER_METADATA),
    "live": ("The server is live", _flag("live")),
    "ready": ("Every model is ready", _flag("ready")),
    "repository_index": ("Every configured model and its state", REPOSITORY_INDEX),
    "model_metadata": ("The model's signature (-1: a variable dimension)", MODEL_METADATA),
    "model_ready": ("The model is ready", _flag("ready", "name")),
    "infer": ("Inference result", INFER_RESPONSE),
    "predict_v1": ("Predictions, one per instance", V1_RESPONSE),
}
OCTET_STREAM = "application/octet-stream"
_BINARY_BODY = {"schema": {"type": "string", "format": "binary"}}

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "model": {
        "name": "model",
        "in": "path",
        "required": True,
        "description": "Name of a served model (URL-encoded)",
        "schema": {"type": "string"},
    },
    "version": {
        "name": "version",
        "in": "path",
        "required": True,
        "description": "Version of the model, as its metadata lists it",
        "schema": {"type": "string"},
    },
}

_BINARY_NOTE = (
    "Binary tensor data extension: send application/octet-stream with an "
    "Inference-Header-Content-Length header giving the JSON header's length."
)


def operation(route: Route) -> dict[str, Any]:
    """Path parameters, request body and response descriptions for one route."""
    described = _body_and_responses(route)
    names = _PATH_PARAMETER.findall(route.path)
    if names:
        # The routes read the raw request, so FastAPI sees no parameters: declare them.
        described["parameters"] = [_PATH_PARAMETERS[name] for name in names]
    return described


def _body_and_responses(route: Route) -> dict[str, Any]:
    description, schema = _SUCCESS[route.endpoint]
    success: dict[str, Any] = {"application/json": {"schema": schema}}
    if route.endpoint == "infer":
        success[OCTET_STREAM] = _BINARY_BODY
    responses = {
        "200": {"description": description, "content": success},
        **{
            str(code): {"description": text, "content": {"application/json": {"schema": ERROR}}}
            for code, text in _ERRORS.get(route.endpoint, ())
        },
    }
    if route.endpoint == "infer":
        request = {"application/json": {"schema": INFER_REQUEST}, OCTET_STREAM: _BINARY_BODY}
        return {
            "description": _BINARY_NOTE,
            "requestBody": {"required": True, "content": request},
            "responses": responses,
        }
    if route.endpoint == "predict_v1":
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": V1_REQUEST}},
            },
            "responses": responses,
        }
    return {"responses": responses}


_INFER_ERRORS = (
    (400, "Malformed request or inputs that do not fit the model"),
    (404, "Unknown model or version"),
    (413, "Request body too large"),
    (415, "Unsupported Content-Type or Content-Encoding"),
    (503, "Model not ready"),
)
_ERRORS: dict[str, tuple[tuple[int, str], ...]] = {
    "infer": _INFER_ERRORS,
    "predict_v1": _INFER_ERRORS,
    "model_metadata": ((404, "Unknown model or version"), (503, "Model not ready")),
    "model_ready": ((404, "Unknown model or version"), (503, "Model not ready")),
    "ready": ((503, "Some model is not ready"),),
}
