"""Tiny real ONNX graphs for the protocol's edge cases: scalars and run-time input failures.

Each builder writes a model file and returns its path; the tests serve them through the
real app (ONNX Runtime sessions, the codec, the data plane), never through mocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from pathlib import Path

F32 = TensorProto.FLOAT


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _axes() -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")


def write_total(path: Path) -> Path:
    """x FP32 [N, 3] -> total FP32 [] (ReduceSum, keepdims=0) and rows FP32 [N] (row sums)."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["x", "axes"], ["rows"], keepdims=0),
        ],
        "total",
        [helper.make_tensor_value_info("x", F32, ["N", 3])],
        [
            helper.make_tensor_value_info("total", F32, []),
            helper.make_tensor_value_info("rows", F32, ["N"]),
        ],
        [_axes()],
    )
    return _save(graph, path)


def write_scale(path: Path) -> Path:
    """s FP32 [] (a scalar input) -> y FP32 [] = s * 2 and grid FP32 [2] = [s, s + 1]."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["s", "two"], ["y"]),
            helper.make_node("Add", ["s", "steps"], ["grid"]),
        ],
        "scale",
        [helper.make_tensor_value_info("s", F32, [])],
        [
            helper.make_tensor_value_info("y", F32, []),
            helper.make_tensor_value_info("grid", F32, [2]),
        ],
        [
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "steps"),
        ],
    )
    return _save(graph, path)


def write_echo(path: Path, elem_type: int, name: str = "echo") -> Path:
    """A scalar of any element type passed through (Identity): x [] -> y []."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", elem_type, [])],
        [helper.make_tensor_value_info("y", elem_type, [])],
    )
    return _save(graph, path)


def write_add_shared(path: Path) -> Path:
    """a FP32 [N, 2] + b FP32 [N, 2] -> y: both inputs name their first dimension 'N'."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "add_shared",
        [
            helper.make_tensor_value_info("a", F32, ["N", 2]),
            helper.make_tensor_value_info("b", F32, ["N", 2]),
        ],
        [helper.make_tensor_value_info("y", F32, ["N", 2])],
    )
    return _save(graph, path)


def write_add_broadcast(path: Path) -> Path:
    """a FP32 [N, 2] + b FP32 [M, 2] -> y: the sizes broadcast only when equal or 1."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "add_broadcast",
        [
            helper.make_tensor_value_info("a", F32, ["N", 2]),
            helper.make_tensor_value_info("b", F32, ["M", 2]),
        ],
        [helper.make_tensor_value_info("y", F32, [None, 2])],
    )
    return _save(graph, path)


def write_lookup(path: Path) -> Path:
    """i INT64 [K] -> rows of a 4 x 3 table (Gather): an index past 3 is out of range."""
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["y"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["K"])],
        [helper.make_tensor_value_info("y", F32, ["K", 3])],
        [table],
    )
    return _save(graph, path)


def write_always_fails(path: Path) -> Path:
    """x FP32 [1] + a constant that cannot be reshaped as the graph says: every run fails
    with ONNX Runtime's generic Fail, whatever the input (a fault of the model, not the client)."""
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["c", "shape"], ["z"]),
            helper.make_node("Add", ["x", "z"], ["y"]),
        ],
        "always_fails",
        [helper.make_tensor_value_info("x", F32, [1])],
        [helper.make_tensor_value_info("y", F32, [5])],
        [
            numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "c"),
            numpy_helper.from_array(np.array([5], dtype=np.int64), "shape"),
        ],
    )
    return _save(graph, path)
