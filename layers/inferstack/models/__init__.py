"""Models: the backend-agnostic interface, the ONNX Runtime backend and the repository."""

from __future__ import annotations

from inferstack.models.base import Model, Tensors
from inferstack.models.onnx import OnnxModel
from inferstack.models.repository import ModelRepository

__all__ = ["Model", "ModelRepository", "OnnxModel", "Tensors"]
