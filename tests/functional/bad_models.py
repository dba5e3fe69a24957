"""The bad-model corpus of the validation gate, built at test time (tiny, nothing stored).

Each writer makes one file with one defect; the good models beside them differ from the
bad ones only by that defect, so a rejection can only be for the defect's own reason.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from pathlib import Path

ONNX_DIR = os.path.dirname(onnx.__file__)
RESNET50 = os.path.join(ONNX_DIR, "backend", "test", "data", "light", "light_resnet50.onnx")


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def tiny(
    path: Path,
    *,
    input_name: str = "x",
    dtype: int = TensorProto.FLOAT,
    shape: tuple[str | int, ...] = ("n", 4),
    opset: int = 17,
) -> Path:
    """y = Relu(x): the live model of the signature cases, and the shape of every variant."""
    graph = helper.make_graph(
        [helper.make_node("Relu", [input_name], ["y"])],
        "tiny",
        [helper.make_tensor_value_info(input_name, dtype, list(shape))],
        [helper.make_tensor_value_info("y", dtype, list(shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return _save(model, path)


def _with_weights(name: str = "w") -> onnx.ModelProto:
    """y = x + w, w FP32 [4]: a model whose weight can live in an external-data file."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", name], ["y"])],
        "weighted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def with_external_data(path: Path, location: str = "model.onnx.data") -> Path:
    """A sound model whose weight sits in `location`, beside it (onnx's own writer)."""
    onnx.save(
        _with_weights(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def external_data_at(path: Path, location: str) -> Path:
    """A model whose weight points at `location`, whatever it is (onnx's writer refuses to
    write outside the folder, so the reference is set by hand, as an attacker would)."""
    model = _with_weights()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _save(model, path)


def truncated(path: Path) -> Path:
    """The first half of a real model, as a cut-off upload leaves it."""
    with open(RESNET50, "rb") as source:
        data = source.read()
    path.write_bytes(data[: len(data) // 2])
    return path


def random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return path


def text_file(path: Path) -> Path:
    path.write_text("name,alcohol,malic_acid\nwine,13.2,1.78\n")
    return path


def nan_outputs(path: Path) -> Path:
    """y = x + Log(-1): NaN whatever the input (a broken constant, as a bad export leaves)."""
    minus_one = numpy_helper.from_array(np.full((4,), -1.0, dtype=np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Log", ["c"], ["log"]), helper.make_node("Add", ["x", "log"], ["y"])],
        "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [minus_one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def batch_mismatch(path: Path) -> Path:
    """y keeps the batch, z = the first row only, declared batched: a batch of 2 gives 1 row."""
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "starts")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "ends")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["y"]),
            helper.make_node("Slice", ["x", "starts", "ends"], ["z"]),
        ],
        "first_row",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["m", 4]),
        ],
        [starts, ends],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def slow_to_load(path: Path, nodes: int = 12000) -> Path:
    """A long chain of small ops: ONNX Runtime's graph optimizers walk every node, so loading
    takes far longer than for the 1-node models (~0.7 s here against ~5 ms; 4,000 nodes took
    0.19 s, too close to a 0.15 s bound on a quiet machine)."""
    one = numpy_helper.from_array(np.ones((4,), dtype=np.float32), "one")
    chain = [
        helper.make_node("Add", ["x" if i == 0 else f"t{i - 1}", "one"], [f"t{i}"])
        for i in range(nodes)
    ]
    chain.append(helper.make_node("Identity", [f"t{nodes - 1}"], ["y"]))
    graph = helper.make_graph(
        chain,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


# --------------------------------------------------------------------------- bundles


def tar_gz(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A .tar.gz written member by member, so that names, types and links can be anything."""
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def gzip_bomb(path: Path, unpacked: int = 64 * 1024 * 1024) -> Path:
    """A bundle whose one member is `unpacked` bytes of zeros: a few dozen KB on disk."""
    with gzip.open(path, "wb", compresslevel=9) as raw, tarfile.open(fileobj=raw, mode="w|") as t:
        info = tarfile.TarInfo("model.onnx")
        info.size = unpacked
        t.addfile(info, _Zeros(unpacked))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count
