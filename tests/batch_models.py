"""ONNX models built with onnx.helper (nothing stored), shared by the tests and the
benchmarks (as tests/lifecycle_world.py is): the batcher's models, the light-model
normaliser, and the one-node Relu the inline-run tests and the server benchmark serve.

Each has a dynamic first dimension named `batch` unless it exists to lack one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from pathlib import Path

FLOAT = TensorProto.FLOAT


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def mlp(path: Path, *, width: int = 64, layers: int = 2, features: int | None = None) -> Path:
    """`layers` x (Gemm + Relu) of `width`, seeded weights: x [batch, features] -> y."""
    rng = np.random.default_rng(7)
    features = features or width
    nodes, weights, last, size = [], [], "x", features
    for i in range(layers):
        w = (rng.standard_normal((size, width)) / np.sqrt(size)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32) * 0.1
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [
            helper.make_node("Gemm", [last, f"w{i}", f"b{i}"], [f"g{i}"]),
            helper.make_node("Relu", [f"g{i}"], [out]),
        ]
        last, size = out, width
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("y", FLOAT, ["batch", width]),
        ],
        weights,
    )
    return _save(graph, path)


def relu(path: Path, *, width: int = 64) -> Path:
    """y = Relu(x), x [batch, width]: so little model that whatever serves it is all the cost."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        f"relu{width}",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", width])],
    )
    return _save(graph, path, opset=13)


def two_outputs(path: Path) -> Path:
    """x [batch, n] -> doubled = x + x and squared = x * x: mixed shapes, output choice."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "x"], ["doubled"]),
            helper.make_node("Mul", ["x", "x"], ["squared"]),
        ],
        "two_outputs",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", "n"])],
        [
            helper.make_tensor_value_info("doubled", FLOAT, ["batch", "n"]),
            helper.make_tensor_value_info("squared", FLOAT, ["batch", "n"]),
        ],
    )
    return _save(graph, path)


def sum_over_batch(path: Path) -> Path:
    """y = ReduceSum(x, axis 0): its axis is computed (Shape(x)[0] - Shape(x)[0]), so ONNX
    Runtime cannot see that y has one row: a model whose signature says it batches."""
    start = numpy_helper.from_array(np.array([0], dtype=np.int64), "start")
    end = numpy_helper.from_array(np.array([1], dtype=np.int64), "end")
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "start", "end"], ["rows"]),
            helper.make_node("Sub", ["rows", "rows"], ["axes"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1),
        ],
        "sum_over_batch",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", FLOAT, [None, 4])],
        [start, end],
    )
    return _save(graph, path, opset=18)


def gather(path: Path) -> Path:
    """y = GatherElements(data, index, axis 1): an index out of range fails that request."""
    graph = helper.make_graph(
        [helper.make_node("GatherElements", ["data", "index"], ["y"], axis=1)],
        "gather",
        [
            helper.make_tensor_value_info("data", FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 1])],
    )
    return _save(graph, path)


def strings(path: Path) -> Path:
    """y = Identity(text) over strings [batch, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["batch", 2])],
    )
    return _save(graph, path)


def fixed_batch(path: Path) -> Path:
    """y = Relu(x) with x [1, 4]: not batchable."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 4])],
    )
    return _save(graph, path)


def renamed_batch(path: Path) -> Path:
    """y = Relu(x), x [batch, 4] but y declared [rows, 4]: the dims are not known to agree."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "renamed",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["rows", 4])],
    )
    return _save(graph, path)


def slow(path: Path) -> Path:
    """y = x + 0 * (a Loop run max(spin) times): x [batch, 4], spin [batch, 1] (FLOAT, so
    the run time is set by a value, not by the request's size)."""
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one_b"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_b")],
    )
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    true = numpy_helper.from_array(np.array(True), "true")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["spin"], ["most"], keepdims=0),
            helper.make_node("Cast", ["most"], ["trips"], to=TensorProto.INT64),
            helper.make_node("Loop", ["trips", "true", "zero"], ["count"], body=body),
            helper.make_node("Sub", ["count", "count"], ["nothing"]),
            helper.make_node("Mul", ["nothing", "one"], ["nil"]),
            helper.make_node("Add", ["x", "nil"], ["y"]),
        ],
        "slow",
        [
            helper.make_tensor_value_info("x", FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("spin", FLOAT, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 4])],
        [one, zero, true],
    )
    return _save(graph, path)


def normalised_light(stem: str, path: Path, *, seed: int = 0) -> Path:
    """A light_* model of the onnx package (light_squeezenet, light_resnet50) made fit for
    batching and for comparing outputs: its weights, which it makes with ConstantOfShape
    (every output then nearly equal), become seeded random initializers; dim 0 of its input
    and output becomes `batch`, and a Reshape to a fixed leading 1 reshapes to -1."""
    source = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light", f"{stem}.onnx")
    model = onnx.load(source)
    graph = model.graph
    rng = np.random.default_rng(seed)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes, weights = [], []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = tuple(int(d) for d in constants[node.input[0]])
            fill = float(numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0])
            weights.append(numpy_helper.from_array(_weights(rng, shape, fill), node.output[0]))
            continue
        if node.op_type == "Reshape" and node.input[1] in constants:
            target = constants[node.input[1]].copy()
            if target.size and target[0] == 1:
                target[0] = -1
                constants[node.input[1]] = target
        nodes.append(node)
    used = {name for node in nodes for name in node.input}
    kept = [numpy_helper.from_array(constants[i.name], i.name) for i in graph.initializer]
    initializers = [init for init in kept if init.name in used] + weights
    names = {init.name for init in initializers}
    inputs = [i for i in graph.input if i.name not in names and i.name in used]
    for tensor in (*inputs, *graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_param = "batch"
    new_graph = helper.make_graph(nodes, graph.name, inputs, list(graph.output), initializers)
    out = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    out.ir_version = 8
    onnx.checker.check_model(out)
    onnx.save(out, path)
    return path


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """He-scaled noise for a weight matrix or kernel; a vector keeps the sign and size of
    its fill (a BatchNormalization variance stays positive)."""
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return (fill * (1 + 0.5 * rng.uniform(-1, 1, shape))).astype(np.float32)
