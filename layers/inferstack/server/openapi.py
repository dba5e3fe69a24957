"""OpenAPI descriptions of the protocol's bodies (the routes read raw bytes, so FastAPI
cannot infer them). Schemas follow the KServe v2 REST spec, required_api.md."""

from __future__ import annotations

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

_BINARY_NOTE = (
    "Binary tensor data extension: send application/octet-stream with an "
    "Inference-Header-Content-Length header giving the JSON header's length."
)


def operation(route: Route) -> dict[str, Any]:
    """Request body and response descriptions for one route."""
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": ERROR}}}
        for code, text in _ERRORS.get(route.endpoint, ())
    }
    if route.endpoint == "infer":
        return {
            "description": _BINARY_NOTE,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": INFER_REQUEST},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": "Inference result",
                    "content": {"application/json": {"schema": INFER_RESPONSE}},
                },
                **errors,
            },
        }
    if route.endpoint == "predict_v1":
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": V1_REQUEST}},
            },
            "responses": {
                "200": {
                    "description": "Predictions, one per instance",
                    "content": {"application/json": {"schema": V1_RESPONSE}},
                },
                **errors,
            },
        }
    return {"responses": errors} if errors else {}


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
