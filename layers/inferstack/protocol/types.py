"""Decoded Open Inference Protocol messages: plain dataclasses, cheap to build per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Parameters = dict[str, Any]


@dataclass(slots=True)
class TensorSpec:
    """One input or output of a model's signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    # None: follow the request-level `binary_data_output` parameter.
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    inputs: list[InferInput]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False

    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [o.name for o in self.outputs]


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[InferOutput]
