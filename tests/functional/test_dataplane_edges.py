"""The data plane at its edges, through both hosts' entry points (Lambda's synchronous
`handle`, the server's `ahandle`) with real ONNX Runtime models: media types and
encodings, the decompression bound, exact client messages, what operators see in logs,
metrics and traces."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from inferstack.dataplane import DataPlane
from inferstack.models import ModelRepository, OnnxModel
from inferstack.protocol.routes import match_route
from inferstack.protocol.types import HttpRequest
from inferstack.telemetry import PowertoolsTelemetry, Telemetry

from . import protocol_models
from .conftest import DEMO_MODEL, json_infer_body, reference_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

INFER = "/v2/models/wine/infer"
pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'environment' has already been added")


def plane(
    *models: OnnxModel, telemetry: Telemetry | None = None, limit: int = 1 << 20
) -> DataPlane:
    repository = ModelRepository(models)
    repository.load_all()
    return DataPlane(repository, max_request_bytes=limit, telemetry=telemetry)


def wine() -> OnnxModel:
    return OnnxModel("wine", DEMO_MODEL)


def post(path: str, body: bytes | str, **headers: str) -> HttpRequest:
    data = body.encode() if isinstance(body, str) else body
    return HttpRequest("POST", path, {"content-type": "application/json", **headers}, data)


def served(dataplane: DataPlane, request: HttpRequest, *, server: bool) -> tuple[int, Any]:
    """The answer through Lambda's path (`handle`) or the server's (`ahandle`)."""
    if server:
        route, params = match_route(request.method, request.path)
        # A loop of its own, never set as the thread's: asyncio.run would leave the main
        # thread with no event loop, and Mangum (the Lambda tests) asks for one.
        loop = asyncio.new_event_loop()
        try:
            response = loop.run_until_complete(dataplane.ahandle(request, route, params))
        finally:
            loop.close()
    else:
        response = dataplane.handle(request)
    return response.status, json.loads(response.body)


HOSTS = pytest.mark.parametrize("server", [False, True], ids=["lambda", "server"])
BODY = json_infer_body(reference_rows(2))


# ------------------------------------------------------------------ media types, encodings


@HOSTS
@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON ; charset=utf-8; q=1"],
)
def test_a_content_type_with_parameters_is_read(server: bool, content_type: str) -> None:
    request = post(INFER, BODY, **{"content-type": content_type})
    assert served(plane(wine()), request, server=server)[0] == 200


@HOSTS
def test_an_empty_content_encoding_means_none(server: bool) -> None:
    request = post(INFER, BODY, **{"content-encoding": ""})
    assert served(plane(wine()), request, server=server)[0] == 200


def test_zlib_data_labelled_gzip_is_refused() -> None:
    request = post(INFER, zlib.compress(BODY.encode()), **{"content-encoding": "gzip"})
    status, body = served(plane(wine()), request, server=False)
    assert (status, body) == (400, {"error": "request body is not valid gzip data"})


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_body_that_decompresses_to_exactly_the_limit_is_accepted(encoding: str) -> None:
    plain = BODY.encode()
    padded = plain[:-1] + b" " * 10 + plain[-1:]  # JSON allows the whitespace
    body = gzip.compress(padded) if encoding == "gzip" else zlib.compress(padded)
    at_limit = plane(wine(), limit=len(padded))
    assert (
        served(at_limit, post(INFER, body, **{"content-encoding": encoding}), server=False)[0]
        == 200
    )
    over = plane(wine(), limit=len(padded) - 1)
    status, answer = served(over, post(INFER, body, **{"content-encoding": encoding}), server=False)
    assert (status, answer) == (
        413,
        {"error": f"decompressed request body is over {len(padded) - 1} bytes"},
    )


# ------------------------------------------------------------------ exact client messages


def test_a_length_header_that_is_not_a_number_is_named() -> None:
    request = post(INFER, BODY, **{"inference-header-content-length": "12a"})
    assert served(plane(wine()), request, server=False) == (
        400,
        {"error": "Inference-Header-Content-Length must be a whole number"},
    )


def test_a_raw_binary_request_to_a_two_input_model_says_why(tmp_path: Path) -> None:
    model = OnnxModel("add", protocol_models.write_add_shared(tmp_path / "add.onnx"))
    request = HttpRequest(
        "POST",
        "/v2/models/add/infer",
        {"content-type": "application/octet-stream", "inference-header-content-length": "0"},
        np.zeros((1, 2), np.float32).tobytes(),
    )
    assert served(plane(model), request, server=False) == (
        400,
        {
            "error": "a raw binary request (Inference-Header-Content-Length: 0) needs a "
            "single-input model; 'add' has 2 inputs"
        },
    )


@HOSTS
def test_requested_outputs_are_the_only_outputs(server: bool) -> None:
    body = json_infer_body(reference_rows(2), outputs=[{"name": "label"}])
    status, answer = served(plane(wine()), post(INFER, body), server=server)
    assert status == 200
    assert [o["name"] for o in answer["outputs"]] == ["label"]


# ------------------------------------------------------------------ what operators see


@HOSTS
def test_a_server_fault_is_logged_with_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, server: bool
) -> None:
    model = OnnxModel(
        "broken", protocol_models.write_always_fails(tmp_path / "broken.onnx"), warmup=False
    )
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    with caplog.at_level(logging.ERROR, logger="inferstack.dataplane"):
        status, answer = served(plane(model), post("/v2/models/broken/infer", body), server=server)
    assert status == 500
    (record,) = [r for r in caplog.records if r.name == "inferstack.dataplane"]
    assert record.getMessage() == f"POST /v2/models/broken/infer -> 500: {answer['error']}"


def test_a_bug_is_logged_with_its_traceback_and_hidden_from_the_client(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataplane = plane(wine())
    monkeypatch.setattr(dataplane, "server_metadata", lambda: 1 / 0)  # a bug in an endpoint
    with caplog.at_level(logging.ERROR, logger="inferstack.dataplane"):
        response = dataplane.handle(HttpRequest("GET", "/v2", {}, b""))
    assert (response.status, json.loads(response.body)) == (500, {"error": "internal server error"})
    (record,) = [r for r in caplog.records if r.name == "inferstack.dataplane"]
    assert record.getMessage() == "unhandled error on GET /v2"
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError


class Traced(Telemetry):
    """The telemetry interface, recording the segments the data plane opens."""

    def __init__(self) -> None:
        self.segments: list[str] = []

    @contextmanager
    def _segment(self, name: str) -> Iterator[None]:
        self.segments.append(name)
        yield

    def trace(self, name: str) -> Any:
        return self._segment(name)


def test_inference_is_traced_as_model_predict() -> None:
    traced = Traced()
    assert served(plane(wine(), telemetry=traced), post(INFER, BODY), server=False)[0] == 200
    assert traced.segments == ["model.predict"]


def emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


@HOSTS
def test_latency_metrics_are_milliseconds_of_this_request(
    server: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that takes milliseconds: ModelLatency is those milliseconds, within the
    request's Latency, and Latency is this request's (not seconds since start-up)."""
    import onnx

    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)
    # A real architecture the onnx package ships (about 6 ms a run here).
    path = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    model = OnnxModel("squeezenet", path)
    dataplane = plane(model, telemetry=PowertoolsTelemetry(environment="test"), limit=8 << 20)
    data = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    body = json.dumps(
        {"inputs": [{"name": "data_0", "shape": list(data.shape),
                     "datatype": "FP32", "data": data.ravel().tolist()}]}
    )  # fmt: skip
    capsys.readouterr()
    status, _ = served(dataplane, post("/v2/models/squeezenet/infer", body), server=server)
    assert status == 200
    (doc,) = emf(capsys.readouterr().out)
    model_ms, total_ms = doc["ModelLatency"][0], doc["Latency"][0]
    assert 1.0 <= model_ms <= total_ms < 60_000.0, doc
