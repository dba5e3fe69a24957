"""Decoded Open Inference Protocol messages and transport-free HTTP messages.

Immutable NamedTuples with evaluated annotations (no `from __future__ import
annotations` here, on purpose): they cost a quarter of what dataclasses cost to
define, about 2 ms of every cold start.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

Parameters = Mapping[str, Any]
NO_PARAMETERS: Parameters = MappingProxyType({})
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class TensorSpec(NamedTuple):
    """One input or output of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class InferInput(NamedTuple):
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = NO_PARAMETERS


class RequestedOutput(NamedTuple):
    name: str
    # None: follow the request-level `binary_data_output` parameter.
    binary: bool | None = None


class InferRequest(NamedTuple):
    inputs: list[InferInput]
    id: str | None = None
    parameters: Parameters = NO_PARAMETERS
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False

    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [o.name for o in self.outputs]


class InferOutput(NamedTuple):
    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


class InferResponse(NamedTuple):
    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[InferOutput]


class HttpRequest(NamedTuple):
    """What the data plane needs of an HTTP request, whichever host received it."""

    method: str
    path: str
    headers: Mapping[str, str] = NO_HEADERS  # names in lower case
    body: bytes = b""


class HttpResponse(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = NO_HEADERS
