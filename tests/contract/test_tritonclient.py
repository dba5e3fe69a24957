"""Contract: NVIDIA's own `tritonclient.http` against a live `inferstack serve` process.

tritonclient is the reference client of the protocol: these tests use it the way a user
would (health, metadata, binary and JSON tensors, compression, request ids, errors).
Every inference result is checked against a direct ONNX Runtime run of the same file.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.contract.conftest import (
    BROKEN_MODELS,
    GOOD_MODELS,
    SESSION_MAX_REQUEST_BYTES,
    SPIN_WIDTH,
    http_get,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.contract.conftest import ModelFiles, ServerProcess

    Reference = Callable[..., dict[str, np.ndarray]]

SQUEEZENET_SHAPE = [1, 3, 224, 224]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=server.url)
    yield triton
    triton.close()


def features(rows: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def squeezenet_input(seed: int) -> tuple[httpclient.InferInput, np.ndarray]:
    data = np.random.default_rng(seed).standard_normal(SQUEEZENET_SHAPE).astype(np.float32)
    tensor = httpclient.InferInput("data_0", SQUEEZENET_SHAPE, "FP32")
    tensor.set_data_from_numpy(data)
    return tensor, data


def assert_wine_result(
    result: httpclient.InferResult,
    rows: np.ndarray,
    reference: Reference,
    outputs: tuple[str, ...] = ("label", "probabilities"),
) -> None:
    expected = reference("wine", features=rows)
    served = {o["name"] for o in result.get_response()["outputs"]}
    assert served == set(outputs)
    if "label" in outputs:
        label = result.as_numpy("label")
        assert label.dtype == np.int64
        np.testing.assert_array_equal(label, expected["label"])
    if "probabilities" in outputs:
        probabilities = result.as_numpy("probabilities")
        assert probabilities.dtype == np.float32
        assert probabilities.shape == (len(rows), 3)
        np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-6, atol=1e-7)


def binary_outputs(result: httpclient.InferResult) -> dict[str, bool]:
    """Which outputs came back as binary tensor data (True) or JSON `data` (False)."""
    return {
        o["name"]: "binary_data_size" in o.get("parameters", {}) and "data" not in o
        for o in result.get_response()["outputs"]
    }


# --------------------------------------------------------------------------- health


def test_server_is_live(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()


def test_good_models_are_ready_and_broken_ones_are_not(
    client: httpclient.InferenceServerClient,
) -> None:
    for name in GOOD_MODELS:
        assert client.is_model_ready(name), name
        assert client.is_model_ready(name, "1"), name
    for name in BROKEN_MODELS:
        assert not client.is_model_ready(name), name
    assert not client.is_model_ready("wine", "2")
    assert not client.is_model_ready("no_such_model")


def test_server_is_not_ready_while_a_configured_model_failed_to_load(
    client: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    """Server readiness means "every configured model is ready": one broken model makes
    the whole server not ready (so an orchestrator keeps traffic away), while the good
    models still serve. The positive case is in test_serve_cli.py (good models only)."""
    assert not client.is_server_ready()
    status, body = http_get(f"{server.base}/v2/health/ready")
    assert status == 503
    named = set(re.findall(r"'(\w+)'", body["error"]))
    assert named == set(BROKEN_MODELS)
    assert client.is_model_ready("wine")


# --------------------------------------------------------------------------- metadata


def test_server_metadata_advertises_binary_tensor_data(
    client: httpclient.InferenceServerClient,
) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "inferstack"
    assert metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("version", ["", "1"])
def test_wine_metadata(client: httpclient.InferenceServerClient, version: str) -> None:
    metadata = client.get_model_metadata("wine", model_version=version)
    assert metadata["name"] == "wine"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_squeezenet_metadata_keeps_fixed_dims(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("squeezenet")
    assert metadata["inputs"] == [{"name": "data_0", "datatype": "FP32", "shape": SQUEEZENET_SHAPE}]
    assert metadata["outputs"] == [
        {"name": "softmaxout_1", "datatype": "FP32", "shape": [1, 1000, 1, 1]}
    ]


def test_metadata_of_broken_model_is_an_error(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("broken")
    assert caught.value.status() == "503"
    assert "'broken' is not ready" in caught.value.message()


# --------------------------------------------------------------------------- inference


def test_infer_binary_in_and_out(
    client: httpclient.InferenceServerClient, wine_sample: np.ndarray, reference: Reference
) -> None:
    """tritonclient's defaults: binary inputs, and with no outputs named, all outputs
    binary (it sets binary_data_output)."""
    rows = wine_sample[:32]
    result = client.infer("wine", [features(rows)])
    assert binary_outputs(result) == {"label": True, "probabilities": True}
    assert result.get_response()["model_name"] == "wine"
    assert result.get_response()["model_version"] == "1"
    assert_wine_result(result, rows, reference)
    # The rows cover every class, so a label mix-up could not pass unnoticed.
    assert set(result.as_numpy("label").tolist()) == {0, 1, 2}


def test_infer_json_in_and_out(
    client: httpclient.InferenceServerClient, wine_sample: np.ndarray, reference: Reference
) -> None:
    rows = wine_sample[32:48]
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("wine", [features(rows, binary=False)], outputs=outputs)
    assert binary_outputs(result) == {"label": False, "probabilities": False}
    assert_wine_result(result, rows, reference)


def test_infer_on_explicit_version(
    client: httpclient.InferenceServerClient, wine_sample: np.ndarray, reference: Reference
) -> None:
    rows = wine_sample[48:52]
    result = client.infer("wine", [features(rows)], model_version="1")
    assert_wine_result(result, rows, reference)


@pytest.mark.parametrize("name", ["label", "probabilities"])
def test_infer_returns_only_the_requested_output(
    client: httpclient.InferenceServerClient,
    wine_sample: np.ndarray,
    reference: Reference,
    name: str,
) -> None:
    rows = wine_sample[52:60]
    result = client.infer("wine", [features(rows)], outputs=[httpclient.InferRequestedOutput(name)])
    assert_wine_result(result, rows, reference, outputs=(name,))
    other = {"label", "probabilities"} - {name}
    assert result.as_numpy(other.pop()) is None


def test_infer_mixed_binary_and_json_outputs(
    client: httpclient.InferenceServerClient, wine_sample: np.ndarray, reference: Reference
) -> None:
    rows = wine_sample[60:72]
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
    ]
    result = client.infer("wine", [features(rows)], outputs=outputs)
    assert binary_outputs(result) == {"label": False, "probabilities": True}
    assert_wine_result(result, rows, reference)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_compressed_request(
    client: httpclient.InferenceServerClient,
    wine_sample: np.ndarray,
    reference: Reference,
    algorithm: str,
    binary: bool,
) -> None:
    rows = wine_sample[72:104]
    result = client.infer(
        "wine", [features(rows, binary=binary)], request_compression_algorithm=algorithm
    )
    assert_wine_result(result, rows, reference)


def test_request_id_is_echoed(
    client: httpclient.InferenceServerClient, wine_sample: np.ndarray, reference: Reference
) -> None:
    rows = wine_sample[104:106]
    result = client.infer("wine", [features(rows)], request_id="order-42/retry-1")
    assert result.get_response()["id"] == "order-42/retry-1"
    assert_wine_result(result, rows, reference)


def test_squeezenet_binary_infer(
    client: httpclient.InferenceServerClient, reference: Reference
) -> None:
    tensor, data = squeezenet_input(seed=3)
    result = client.infer("squeezenet", [tensor])
    served = result.as_numpy("softmaxout_1")
    expected = reference("squeezenet", data_0=data)["softmaxout_1"]
    assert served.shape == (1, 1000, 1, 1)
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)


def test_spin_model_output_depends_on_its_inputs(
    client: httpclient.InferenceServerClient, reference: Reference
) -> None:
    """The generated Loop model serves correctly (INT64 scalar input, shape [])."""
    x = np.random.default_rng(5).standard_normal((1, SPIN_WIDTH)).astype(np.float32)
    results = []
    for count in (0, 3, 50):
        iterations = httpclient.InferInput("iterations", [], "INT64")
        iterations.set_data_from_numpy(np.array(count, dtype=np.int64))
        x_input = httpclient.InferInput("x", [1, SPIN_WIDTH], "FP32")
        x_input.set_data_from_numpy(x)
        served = client.infer("spin", [iterations, x_input]).as_numpy("y")
        expected = reference("spin", iterations=np.array(count, dtype=np.int64), x=x)["y"]
        np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)
        results.append(served)
    np.testing.assert_array_equal(results[0], x)  # zero rounds: y is x
    assert not np.allclose(results[1], results[2])


# --------------------------------------------------------------------------- errors


def _shape_mismatch(rows: np.ndarray) -> dict[str, Any]:
    return {"model_name": "wine", "inputs": [features(rows[:, :12])]}


def _fp64(rows: np.ndarray) -> dict[str, Any]:
    tensor = httpclient.InferInput("features", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows.astype(np.float64))
    return {"model_name": "wine", "inputs": [tensor]}


def _unknown_model(rows: np.ndarray) -> dict[str, Any]:
    return {"model_name": "no_such_model", "inputs": [features(rows)]}


def _unknown_version(rows: np.ndarray) -> dict[str, Any]:
    return {"model_name": "wine", "model_version": "7", "inputs": [features(rows)]}


def _unknown_output(rows: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": "wine",
        "inputs": [features(rows)],
        "outputs": [httpclient.InferRequestedOutput("no_such_output")],
    }


def _unknown_input(rows: np.ndarray) -> dict[str, Any]:
    tensor = httpclient.InferInput("feature", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return {"model_name": "wine", "inputs": [tensor]}


def _classification(rows: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": "wine",
        "inputs": [features(rows)],
        "outputs": [httpclient.InferRequestedOutput("probabilities", class_count=2)],
    }


def _broken_model(rows: np.ndarray) -> dict[str, Any]:
    return {"model_name": "broken", "inputs": [features(rows)]}


def _too_large(rows: np.ndarray) -> dict[str, Any]:
    many = np.resize(rows, (SESSION_MAX_REQUEST_BYTES // (13 * 4) + 1, 13))
    return {"model_name": "wine", "inputs": [features(many)]}


def _too_large_after_gzip(rows: np.ndarray) -> dict[str, Any]:
    """Small on the wire, over the limit once inflated: refused, not decompressed."""
    zeros = np.zeros((SESSION_MAX_REQUEST_BYTES // (13 * 4) + 1, 13), np.float32)
    return {
        "model_name": "wine",
        "inputs": [features(zeros)],
        "request_compression_algorithm": "gzip",
    }


ERROR_CASES = {
    "wrong-shape": (_shape_mismatch, "400", ["features", "shape", "[4, 12]", "[-1, 13]"]),
    "wrong-datatype": (_fp64, "400", ["features", "FP64", "expects FP32"]),
    "unknown-model": (_unknown_model, "404", ["no_such_model", "not served"]),
    "unknown-version": (_unknown_version, "404", ["wine", "no version '7'"]),
    "unknown-output": (_unknown_output, "400", ["no_such_output", "label", "probabilities"]),
    "unknown-input": (_unknown_input, "400", ["'feature'", "features"]),
    "classification": (_classification, "400", ["classification", "not supported"]),
    "broken-model": (_broken_model, "503", ["broken", "not ready"]),
    "too-large": (_too_large, "413", ["over", str(SESSION_MAX_REQUEST_BYTES)]),
    "gzip-bomb": (_too_large_after_gzip, "413", ["decompressed", "over"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_carry_the_server_message(
    client: httpclient.InferenceServerClient,
    wine_sample: np.ndarray,
    reference: Reference,
    case: str,
) -> None:
    build, status, words = ERROR_CASES[case]
    rows = wine_sample[:4]
    with pytest.raises(InferenceServerException) as caught:
        client.infer(**build(rows))
    error = caught.value
    assert error.status() == status, error
    for word in words:
        assert word in error.message(), f"{word!r} not in {error.message()!r}"
    # The server stays up and keeps serving correct results.
    assert client.is_server_live()
    assert_wine_result(client.infer("wine", [features(rows)]), rows, reference)


# --------------------------------------------------------------------------- repository


def _no_filesystem_path(text: str, model_files: ModelFiles) -> None:
    assert str(model_files.directory) not in text
    assert re.search(r"(^|[\s\"'(:=])/[^\s\"']*/", text) is None, text


def test_repository_index_lists_broken_model_without_leaking_its_path(
    client: httpclient.InferenceServerClient, model_files: ModelFiles
) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert set(index) == set(GOOD_MODELS) | set(BROKEN_MODELS)
    for name in GOOD_MODELS:
        assert index[name]["state"] == "READY", index[name]
        assert "reason" not in index[name]
    broken = index["broken"]
    assert broken["state"] == "UNAVAILABLE"
    assert "could not load" in broken["reason"]
    _no_filesystem_path(broken["reason"], model_files)


def test_missing_external_weights_reason_does_not_leak_path(
    client: httpclient.InferenceServerClient, model_files: ModelFiles
) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    entry = index["no_weights"]
    assert entry["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no_weights")
    _no_filesystem_path(caught.value.message(), model_files)
    _no_filesystem_path(entry["reason"], model_files)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_clients_get_their_own_results(
    server: ServerProcess, wine_sample: np.ndarray, reference: Reference
) -> None:
    """16 threads, each with its own client, infer at once (squeezenet, plus wine on
    rows only that thread sends); each gets its own answer, and the server answers
    health checks while they run."""
    threads_count, rounds = 16, 3
    start = threading.Barrier(threads_count + 1)
    errors: list[BaseException] = []
    finished: list[int] = []
    expected_squeezenet = reference("squeezenet", data_0=squeezenet_input(0)[1])

    def work(index: int) -> None:
        triton = httpclient.InferenceServerClient(url=server.url)
        rows = wine_sample[index * 8 : (index + 1) * 8]
        try:
            start.wait()
            for turn in range(rounds):
                tensor, _ = squeezenet_input(seed=0)
                image = triton.infer("squeezenet", [tensor], request_id=f"s{index}-{turn}")
                assert image.get_response()["id"] == f"s{index}-{turn}"
                np.testing.assert_allclose(
                    image.as_numpy("softmaxout_1"), expected_squeezenet["softmaxout_1"]
                )
                result = triton.infer("wine", [features(rows)], request_id=f"w{index}-{turn}")
                assert result.get_response()["id"] == f"w{index}-{turn}"
                assert_wine_result(result, rows, reference)
            finished.append(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            triton.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=30)
        checks = 0
        while any(worker.is_alive() for worker in workers) or checks == 0:
            assert http_get(f"{server.base}/v2/health/live") == (200, {"live": True})
            checks += 1
    finally:
        for worker in workers:
            worker.join(timeout=120)
    assert not errors, errors[:3]
    assert sorted(finished) == list(range(threads_count))


def test_event_loop_answers_while_an_inference_runs(
    server: ServerProcess, reference: Reference
) -> None:
    """A long inference must run off the event loop: health checks sent after the
    request reached the server are answered before its result comes back.

    The spin model runs a million rounds (about a second); the request is written
    in full before the first health check is sent, so on a server that ran models
    on its event loop no check sent afterwards could be answered until it ended.
    No timing threshold: only the order of events is asserted.
    """
    iterations = 1_000_000
    x = np.random.default_rng(11).standard_normal((1, SPIN_WIDTH)).astype(np.float32)
    body = json.dumps(
        {
            "id": "spin",
            "inputs": [
                {"name": "iterations", "shape": [], "datatype": "INT64", "data": [iterations]},
                {"name": "x", "shape": [1, SPIN_WIDTH], "datatype": "FP32", "data": x.tolist()},
            ],
        }
    )
    sent, answered = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def long_inference() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            connection.request(
                "POST", "/v2/models/spin/infer", body, {"Content-Type": "application/json"}
            )
            sent.set()
            response = connection.getresponse()
            outcome["status"], outcome["body"] = response.status, json.loads(response.read())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            answered.set()
            connection.close()

    worker = threading.Thread(target=long_inference)
    worker.start()
    assert sent.wait(timeout=30), outcome
    answered_during = 0
    while answered_during < 3 and not answered.is_set():
        reply = http_get(f"{server.base}/v2/health/live", timeout=60)
        if not answered.is_set():
            assert reply == (200, {"live": True})
            answered_during += 1
    worker.join(timeout=120)
    assert "error" not in outcome, outcome
    assert outcome["status"] == 200, outcome
    assert answered_during == 3, "health checks waited for the inference to finish"
    served = np.asarray(outcome["body"]["outputs"][0]["data"], np.float32).reshape(1, -1)
    expected = reference("spin", iterations=np.array(iterations, np.int64), x=x)["y"]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
