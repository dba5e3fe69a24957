"""Model zoo: every architecture in ONNX's `backend/test/data/light` set, served over HTTP.

Each model is served by the real app (`server_app` + FastAPI's TestClient, so the whole
HTTP path runs: routing, binary tensor decoding, ONNX Runtime, binary encoding), fed a
seeded random input built from the metadata the server returns, and its outputs are
compared with a direct ONNX Runtime run of the same file.

The "light" models generate their weights with ConstantOfShape, so every weight of a
layer is the same number: their final outputs do not depend on the input at all (each
softmax is a flat 0.001). Comparing those outputs alone could not catch a server that
corrupts or reorders input tensors. So each architecture is also served as a "probe"
copy whose first layer's activations are an extra graph output; that output depends on
every input element and its position, and it is compared too.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from inferstack.bootstrap import server_app
from inferstack.settings import ModelConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
ARCHITECTURES = [
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
]
MAX_REQUEST_BYTES = 64 * 1024 * 1024
PROBE_SUFFIX = "-probe"
# Little-endian wire types of the binary tensor data extension.
WIRE_DTYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def model_path(architecture: str) -> Path:
    return LIGHT_DIR / f"{architecture}.onnx"


def write_probe_model(source: Path, target: Path) -> str:
    """Copy `source` with the output of the first node reading the input as an extra
    graph output; returns that output's name."""
    model = onnx.load(str(source))
    graph = model.graph
    initializers = {tensor.name for tensor in graph.initializer}
    data_input = next(i.name for i in graph.input if i.name not in initializers)
    first = next(node for node in graph.node if data_input in node.input)
    probe = first.output[0]
    graph.output.append(onnx.helper.make_tensor_value_info(probe, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(target))
    return probe


def seeded_input(name: str, shape: list[int], datatype: str, seed_text: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{seed_text}/{name}".encode()))
    concrete = [1 if dim < 0 else dim for dim in shape]
    dtype = WIRE_DTYPES[datatype]
    if dtype.kind == "f":
        return rng.standard_normal(concrete).astype(dtype.newbyteorder("="))
    if dtype.kind == "b":
        return rng.integers(0, 2, concrete).astype(bool)
    return rng.integers(0, 100, concrete).astype(dtype.newbyteorder("="))


def binary_infer_request(inputs: dict[str, tuple[str, np.ndarray]]) -> tuple[bytes, int]:
    """A Triton binary-tensor-data request: JSON header, then each tensor's raw bytes."""
    header_inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, (datatype, array) in inputs.items():
        raw = np.ascontiguousarray(array, dtype=WIRE_DTYPES[datatype]).tobytes()
        header_inputs.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = json.dumps(
        {"inputs": header_inputs, "parameters": {"binary_data_output": True}}
    ).encode()
    return header + b"".join(chunks), len(header)


def parse_binary_response(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    header = json.loads(body[:header_length])
    offset = header_length
    outputs: dict[str, np.ndarray] = {}
    for output in header["outputs"]:
        assert "data" not in output, f"output {output['name']} came back as JSON"
        size = output["parameters"]["binary_data_size"]
        chunk = body[offset : offset + size]
        assert len(chunk) == size, f"output {output['name']} is cut short"
        offset += size
        array = np.frombuffer(chunk, dtype=WIRE_DTYPES[output["datatype"]])
        outputs[output["name"]] = array.reshape(output["shape"])
    assert offset == len(body), "bytes left over after the last output"
    return outputs


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-probes")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_loads_in_installed_onnxruntime(architecture: str) -> None:
    """The file is valid ONNX and this onnxruntime accepts its IR version and opsets."""
    path = model_path(architecture)
    assert path.is_file(), f"{path} is missing from the installed onnx package"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    assert 3 <= model.ir_version <= onnx.IR_VERSION
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        pytest.fail(
            f"onnxruntime {ort.__version__} cannot load {architecture} "
            f"(IR version {model.ir_version}, opsets {opsets}): {exc}"
        )
    assert [arg.name for arg in session.get_outputs()] == [o.name for o in model.graph.output]


@pytest.fixture
def zoo_client(architecture: str, probe_dir: Path) -> Iterator[tuple[TestClient, str]]:
    """The app serving the original file as `architecture` and its probe copy."""
    probe_path = probe_dir / f"{architecture}{PROBE_SUFFIX}.onnx"
    probe_output = write_probe_model(model_path(architecture), probe_path)
    app = server_app(
        [
            ModelConfig(architecture, str(model_path(architecture)), "1"),
            ModelConfig(architecture + PROBE_SUFFIX, str(probe_path), "1"),
        ],
        max_request_bytes=MAX_REQUEST_BYTES,
        load_in_background=False,
    )
    with TestClient(app) as client:
        yield client, probe_output


@dataclass
class Comparison:
    metadata: dict[str, Any]
    session: ort.InferenceSession
    served: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]

    def assert_outputs_match(self) -> None:
        assert self.served.keys() == self.reference.keys()
        for name, expected in self.reference.items():
            actual = self.served[name]
            assert actual.dtype == expected.dtype, name
            assert actual.shape == expected.shape, name
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def serve_and_compare(client: TestClient, name: str, path: Path) -> Comparison:
    """Infer through HTTP (binary in and out) and directly in ONNX Runtime."""
    index = {entry["name"]: entry for entry in client.post("/v2/repository/index").json()}
    assert index[name]["state"] == "READY", f"{name} did not load: {index[name].get('reason')}"
    metadata = client.get(f"/v2/models/{name}").json()

    feed = {
        spec["name"]: (
            spec["datatype"],
            seeded_input(spec["name"], spec["shape"], spec["datatype"], name),
        )
        for spec in metadata["inputs"]
    }
    body, header_length = binary_infer_request(feed)
    response = client.post(
        f"/v2/models/{name}/infer",
        content=body,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    served = parse_binary_response(
        response.content, int(response.headers["inference-header-content-length"])
    )

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [arg.name for arg in session.get_outputs()]
    arrays = session.run(names, {key: array for key, (_, array) in feed.items()})
    return Comparison(metadata, session, served, dict(zip(names, arrays, strict=True)))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_served_output_matches_onnxruntime(
    architecture: str, zoo_client: tuple[TestClient, str], probe_dir: Path
) -> None:
    client, probe_output = zoo_client
    original = serve_and_compare(client, architecture, model_path(architecture))
    # Metadata mirrors the ONNX signature (fixed dims stay fixed; unknown dims are -1).
    signature = original.session.get_inputs()
    assert [spec["name"] for spec in original.metadata["inputs"]] == [a.name for a in signature]
    assert [spec["datatype"] for spec in original.metadata["inputs"]] == ["FP32"] * len(signature)
    assert [spec["shape"] for spec in original.metadata["inputs"]] == [
        [d if isinstance(d, int) else -1 for d in a.shape] for a in signature
    ]
    assert [(spec["name"], spec["datatype"]) for spec in original.metadata["outputs"]] == [
        (arg.name, "FP32") for arg in original.session.get_outputs()
    ]
    original.assert_outputs_match()

    # The probe copy: the same graph, plus first-layer activations that depend on the input.
    probe_name = architecture + PROBE_SUFFIX
    probe = serve_and_compare(client, probe_name, probe_dir / f"{probe_name}.onnx")
    assert probe.served.keys() == {*original.served, probe_output}
    activations = probe.reference[probe_output]
    assert np.ptp(activations) > 0, "the probe output is constant: it would prove nothing"
    probe.assert_outputs_match()
