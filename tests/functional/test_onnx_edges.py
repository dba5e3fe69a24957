"""The ONNX Runtime backend at its edges: the cases a mutation run showed no test would notice.

What a client reads when a run fails on its input, what the operator's log says for a
client's mistake and for a model's fault, models that mix BF16 with other element types,
and the reason given for a file ONNX Runtime cannot load. Real ONNX Runtime sessions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from inferstack.bootstrap import server_app
from inferstack.exceptions import ModelLoadError
from inferstack.models.onnx import OnnxModel
from inferstack.settings import ModelConfig

from .conftest import DEMO_MODEL
from .protocol_models import write_add_broadcast, write_always_fails, write_lookup

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def write_bf16_mixed(path: Path) -> Path:
    """x BF16 [n] and w FP32 [n] -> y BF16 = x, s FP32 = float(x) + w."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["xf", "w"], ["s"]),
        ],
        "bf16_mixed",
        [
            helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["n"]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, ["n"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["n"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("onnx-edges")
    models = [
        ModelConfig("lookup", str(write_lookup(folder / "lookup.onnx")), "1"),
        ModelConfig("always_fails", str(write_always_fails(folder / "fails.onnx")), "1"),
        ModelConfig("mixed", str(write_bf16_mixed(folder / "mixed.onnx")), "1"),
        ModelConfig("broadcast", str(write_add_broadcast(folder / "broadcast.onnx")), "1"),
    ]
    app = server_app(models, max_request_bytes=1 << 20, load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


def lookup(client: TestClient, index: int) -> Any:
    body = {"inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [index]}]}
    return client.post("/v2/models/lookup/infer", json=body)


# --------------------------------------------------------------------------- run failures


def test_a_run_failure_on_the_input_reads_as_the_node_and_its_reason(client: TestClient) -> None:
    assert lookup(client, 1).status_code == 200
    response = lookup(client, 9)
    assert response.status_code == 400
    # The whole message: no status code, no C++ source, and an unnamed node said plainly.
    assert response.json() == {
        "error": "model 'lookup' cannot run on this input: Gather node: indices element out of "
        "data bounds, idx=9 must be within the inclusive range [-4,3]"
    }


def test_a_source_location_in_onnx_runtimes_reason_is_left_out(client: TestClient) -> None:
    """ONNX Runtime puts "/onnxruntime_src/...h:583 void f(...) axis == 1 was false." in front
    of a broadcast failure's reason: the client reads the node and the reason alone."""

    def pair(b_rows: int) -> dict[str, Any]:
        return {
            "inputs": [
                {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1.0] * 4},
                {"name": "b", "shape": [b_rows, 2], "datatype": "FP32", "data": [2.0] * b_rows * 2},
            ]
        }

    assert client.post("/v2/models/broadcast/infer", json=pair(1)).status_code == 200
    response = client.post("/v2/models/broadcast/infer", json=pair(3))
    assert response.json() == {
        "error": "model 'broadcast' cannot run on this input: Add node 'add': Attempting to "
        "broadcast an axis by a dimension other than 1. 2 by 3"
    }


def test_the_log_names_the_model_and_the_reason_for_a_clients_mistake(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert lookup(client, 1).status_code == 200
    with caplog.at_level(logging.INFO, logger="inferstack.models.onnx"):
        assert lookup(client, 9).status_code == 400
    (record,) = [r for r in caplog.records if r.name == "inferstack.models.onnx"]
    assert record.levelno == logging.INFO  # the client's mistake: no alarm-worthy error
    message = record.getMessage()
    assert message.startswith("model lookup failed on a request's input: ")
    assert "idx=9" in message


def test_the_log_keeps_the_traceback_of_a_models_fault(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    with caplog.at_level(logging.INFO, logger="inferstack.models.onnx"):
        assert client.post("/v2/models/always_fails/infer", json=body).status_code == 500
    (record,) = [r for r in caplog.records if r.name == "inferstack.models.onnx"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "inference failed in model always_fails"
    assert record.exc_info is not None  # ONNX Runtime's own error, for the operator
    assert "Reshape" in str(record.exc_info[1])


# --------------------------------------------------------------------------- BF16 and others


def mixed_request(outputs: list[str]) -> tuple[bytes, int]:
    x = triton.InferInput("x", [2], "BF16")
    x.set_data_from_numpy(np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16), binary_data=True)
    w = triton.InferInput("w", [2], "FP32")
    w.set_data_from_numpy(np.array([0.25, 10.0], dtype=np.float32), binary_data=False)
    requested = [triton.InferRequestedOutput(name, binary_data=True) for name in outputs]
    body, length = triton.InferenceServerClient.generate_request_body([x, w], requested)
    return body, length


@pytest.mark.parametrize("outputs", [["y", "s"], ["s"]], ids=["both-outputs", "one-output"])
def test_a_bf16_model_with_other_element_types_runs_as_asked(
    client: TestClient, outputs: list[str]
) -> None:
    body, length = mixed_request(outputs)
    response = client.post(
        "/v2/models/mixed/infer",
        content=body,
        headers={"inference-header-content-length": str(length)},
    )
    assert response.status_code == 200, response.text
    result = triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers["inference-header-content-length"])
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == outputs
    np.testing.assert_array_equal(result.as_numpy("s"), np.array([1.75, 8.0], dtype=np.float32))
    if "y" in outputs:
        y = result.as_numpy("y")
        np.testing.assert_array_equal(y.astype(np.float32), [1.5, -2.0])


# --------------------------------------------------------------------------- warm-up


def write_text_echo(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "text",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("kind", ["wine", "lookup", "text", "mixed"])
def test_loading_a_model_warms_it_up(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first request must not pay for ONNX Runtime's lazy initialization: loading runs
    the model once on zeros (here: a [-1, 13] float pipeline, INT64 indices, strings, BF16
    with FP32), and says so in the log when it cannot."""
    writers = {
        "lookup": write_lookup,
        "text": write_text_echo,
        "mixed": write_bf16_mixed,
    }
    path = DEMO_MODEL if kind == "wine" else writers[kind](tmp_path / f"{kind}.onnx")
    model = OnnxModel(kind, path)
    with caplog.at_level(logging.WARNING, logger="inferstack.models.onnx"):
        model.load()
    assert not [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]


def test_a_model_the_warm_up_cannot_run_is_served_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """x [N] reshaped to [2, 3]: the warm-up's guess (N = 1) cannot run, six values can.
    Until a run has worked, a failed run counts as the model's fault (500), then as the
    client's (400)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "to"], ["y"])],
        "six",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("to", TensorProto.INT64, [2], [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "six.onnx")
    with caplog.at_level(logging.WARNING, logger="inferstack.models.onnx"):
        app = server_app(
            [ModelConfig("six", str(tmp_path / "six.onnx"), "1")],
            max_request_bytes=1 << 20,
            load_in_background=False,
        )
        with TestClient(app) as fresh:
            body = {"inputs": [{"name": "x", "shape": [6], "datatype": "FP32", "data": [1] * 6}]}
            # Before any run has worked, a failed run may be the model's own fault: a 500.
            five = {"inputs": [{"name": "x", "shape": [5], "datatype": "FP32", "data": [1] * 5}]}
            never_ran = fresh.post("/v2/models/six/infer", json=five)
            response = fresh.post("/v2/models/six/infer", json=body)
            # Once it has run, the same mistake is the client's: a 400.
            after_a_run = fresh.post("/v2/models/six/infer", json=five)
    assert never_ran.status_code == 500, never_ran.text
    assert response.status_code == 200, response.text
    assert after_a_run.status_code == 400, after_a_run.text
    (warning,) = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
    assert warning.startswith("warm-up of model six skipped: Reshape node")
    assert "/" not in warning  # ONNX Runtime's reason, without its source paths


def test_a_clients_mistake_on_the_first_request_after_loading_is_a_400(tmp_path: Path) -> None:
    """The warm-up run proves the model runs, so even the first failing request is the
    client's (a model that never ran could be at fault itself: that is a 500)."""
    app = server_app(
        [ModelConfig("lookup", str(write_lookup(tmp_path / "lookup.onnx")), "1")],
        max_request_bytes=1 << 20,
        load_in_background=False,
    )
    with TestClient(app) as fresh:
        response = lookup(fresh, 9)
    assert response.status_code == 400, response.text


# --------------------------------------------------------------------------- load failures


def test_a_file_onnx_runtime_cannot_read_is_named_the_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError) as caught:
        OnnxModel("broken", path).load()
    assert caught.value.message == (
        "ONNX Runtime could not load the model: "
        "Load model from the model file failed:Protobuf parsing failed."
    )


def test_a_model_mixing_bf16_and_strings_is_refused_at_load_saying_why(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["t"], ["u"])],
        "bf16_and_text",
        [
            helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["n"]),
            helper.make_tensor_value_info("t", TensorProto.STRING, ["n"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["n"]),
            helper.make_tensor_value_info("u", TensorProto.STRING, ["n"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "mixed.onnx")
    with pytest.raises(ModelLoadError) as caught:
        OnnxModel("mixed", tmp_path / "mixed.onnx").load()
    assert caught.value.message == "models that mix BF16 and string tensors are not supported"
