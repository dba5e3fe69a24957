"""Contract: tritonclient against a live `inferstack serve` with scalar tensors and inputs
that fail inside ONNX Runtime: what a user of NVIDIA's client sees, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.contract.conftest import ServerProcess
from tests.functional.protocol_models import (
    write_add_shared,
    write_lookup,
    write_scale,
    write_total,
)

MODELS = ("total", "scale", "shared", "lookup")


@pytest.fixture(scope="module")
def server(
    server_launcher: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("protocol-contract")
    paths: dict[str, Path] = {
        "total": write_total(directory / "total.onnx"),
        "scale": write_scale(directory / "scale.onnx"),
        "shared": write_add_shared(directory / "shared.onnx"),
        "lookup": write_lookup(directory / "lookup.onnx"),
    }
    args = [f"--model={name}={path}" for name, path in paths.items()]
    with server_launcher(args, directory / "server.log", MODELS) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=server.url)
    yield triton
    triton.close()


def test_metadata_of_a_scalar_output(client: httpclient.InferenceServerClient) -> None:
    outputs = client.get_model_metadata("total")["outputs"]
    assert {"name": "total", "datatype": "FP32", "shape": []} in outputs


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_scalar_output_reaches_the_client_as_a_0d_array(
    client: httpclient.InferenceServerClient, binary: bool
) -> None:
    rows = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    tensor = httpclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("total", binary_data=binary)]
    result = client.infer("total", [tensor], outputs=outputs)
    assert result.get_output("total")["shape"] == []
    total = result.as_numpy("total")
    assert total.shape == () and total == np.float32(21.0)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_scalar_input_from_the_client(
    client: httpclient.InferenceServerClient, binary: bool
) -> None:
    tensor = httpclient.InferInput("s", [], "FP32")
    tensor.set_data_from_numpy(np.array(4.0, dtype=np.float32), binary_data=binary)
    result = client.infer("scale", [tensor])
    assert result.as_numpy("y").shape == () and result.as_numpy("y") == np.float32(8.0)
    np.testing.assert_array_equal(result.as_numpy("grid"), [4.0, 5.0])


def test_inputs_that_fail_in_onnx_runtime_are_client_errors(
    client: httpclient.InferenceServerClient,
) -> None:
    a = httpclient.InferInput("a", [2, 2], "FP32")
    a.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
    b = httpclient.InferInput("b", [3, 2], "FP32")
    b.set_data_from_numpy(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException) as shared:
        client.infer("shared", [a, b])
    assert shared.value.status() == "400"
    assert "dimension 'N'" in str(shared.value.message())

    index = httpclient.InferInput("i", [1], "INT64")
    index.set_data_from_numpy(np.array([9], dtype=np.int64))
    with pytest.raises(InferenceServerException) as lookup:
        client.infer("lookup", [index])
    assert lookup.value.status() == "400"
    message = str(lookup.value.message())
    assert "idx=9" in message and "onnxruntime_src" not in message
