"""The dynamic batcher on real ONNX Runtime models (tests/batch_models.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from inferstack.dataplane import DataPlane
from inferstack.exceptions import BadRequestError, ModelNotReadyError, OverloadedError
from inferstack.models.batching import BatchMetrics, BatchPolicy, DynamicBatcher
from inferstack.models.onnx import OnnxModel
from inferstack.models.repository import ModelRepository
from inferstack.protocol.routes import match_route
from inferstack.protocol.types import HttpRequest
from inferstack.telemetry import PowertoolsTelemetry
from tests import batch_models

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from inferstack.models.base import Tensors

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch_models")


def _model(model_dir: Path, build: Callable[[Path], Path], name: str) -> OnnxModel:
    model = OnnxModel(name, build(model_dir / f"{name}.onnx"), threads=1)
    assert model.load_safely(), model.error
    return model


def _batched(model: OnnxModel, **policy: int) -> DynamicBatcher:
    model.batcher = DynamicBatcher(model, BatchPolicy(**policy))
    return model.batcher


def _floats(rows: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def _slow_inputs(trips: int, rows: int = 1, seed: int = 0) -> Tensors:
    return {"x": _floats(rows, 4, seed), "spin": np.full((rows, 1), trips, np.float32)}


# Loop trips that keep the slow model busy for a few hundred milliseconds on this machine.
SLOW_TRIPS = 300_000


def test_each_of_32_callers_gets_exactly_its_rows(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp")
    assert model.batchable
    batcher = _batched(model, max_batch_size=16, max_queue_delay_us=20_000)
    requests = [_floats(1 + i % 3, 64, seed=i) for i in range(32)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"x": x}, None) for x in requests))

    answers = asyncio.run(main())
    for x, answer in zip(requests, answers, strict=True):
        alone = model.predict({"x": x})
        assert answer["y"].shape == alone["y"].shape
        np.testing.assert_allclose(answer["y"], alone["y"], rtol=1e-5, atol=1e-6)
    stats = batcher.stats
    assert stats.max_rows > 1  # requests really were joined
    assert stats.batches < 32
    assert stats.rows == sum(len(x) for x in requests)


def test_a_full_batch_runs_without_waiting_out_the_delay(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_full")
    batcher = _batched(model, max_batch_size=4, max_queue_delay_us=30_000_000)

    async def main() -> float:
        began = time.monotonic()
        await asyncio.gather(*(model.apredict({"x": _floats(1, 64, i)}, None) for i in range(4)))
        return time.monotonic() - began

    assert asyncio.run(main()) < 5  # not the 30 s delay
    assert (batcher.stats.batches, batcher.stats.max_rows) == (1, 4)


def test_a_lone_request_returns_within_the_delay_plus_its_run(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_lone")
    _batched(model, max_batch_size=32, max_queue_delay_us=100_000)
    x = _floats(2, 64, 1)

    async def main() -> tuple[float, Tensors]:
        began = time.monotonic()
        answer = await model.apredict({"x": x}, None)
        return time.monotonic() - began, answer

    took, answer = asyncio.run(main())
    assert 0.09 <= took < 0.1 + 1.0
    np.testing.assert_allclose(answer["y"], model.predict({"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_a_full_queue_is_refused_with_429(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.slow, "slow_full")
    batcher = _batched(model, max_batch_size=8, max_queue_size=2)

    async def main() -> list[Any]:
        running = asyncio.ensure_future(model.apredict(_slow_inputs(SLOW_TRIPS), None))
        await asyncio.sleep(0.05)  # taken into a batch: running, no longer waiting
        queued = [
            asyncio.ensure_future(model.apredict(_slow_inputs(1, seed=i), None)) for i in (1, 2)
        ]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError) as refused:
            await model.apredict(_slow_inputs(1, seed=3), None)
        assert refused.value.status_code == 429
        assert "has 2 requests waiting (INFERSTACK_MAX_QUEUE_SIZE)" in refused.value.message
        return await asyncio.gather(running, *queued)

    answers = asyncio.run(main())
    assert len(answers) == 3
    assert batcher.stats.rejected_full == 1


def test_without_batching_the_requests_in_flight_are_bounded_too(model_dir: Path) -> None:
    """max_batch_size 1 joins nothing, but a server that does not batch still sheds load
    with 429 rather than queueing without limit in front of a busy model."""
    model = _model(model_dir, batch_models.slow, "slow_unbatched")
    batcher = _batched(model, max_batch_size=1, max_queue_size=2)

    async def main() -> list[Any]:
        held = [
            asyncio.ensure_future(model.apredict(_slow_inputs(SLOW_TRIPS, seed=i), None))
            for i in (1, 2)
        ]
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError) as refused:
            await model.apredict(_slow_inputs(1, seed=3), None)
        assert refused.value.status_code == 429
        assert "has 2 requests in flight (INFERSTACK_MAX_QUEUE_SIZE)" in refused.value.message
        answers = await asyncio.gather(*held)
        # Room again once they are answered.
        answers.append(await model.apredict(_slow_inputs(1, seed=4), None))
        return answers

    assert len(asyncio.run(main())) == 3
    assert batcher.stats.rejected_full == 1 and batcher.stats.batches == 0


def test_a_request_waiting_past_its_timeout_gets_429_and_is_not_run(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.slow, "slow_timeout")
    batcher = _batched(model, max_batch_size=8, queue_timeout_us=50_000)

    async def main() -> None:
        running = asyncio.ensure_future(model.apredict(_slow_inputs(SLOW_TRIPS), None))
        await asyncio.sleep(0.02)
        began = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            await model.apredict(_slow_inputs(1, rows=3), None)
        assert time.monotonic() - began < 0.5 * _run_time(model)
        assert "waited 50 ms in the batch queue" in refused.value.message
        await running  # taken before its timeout: answered however long it runs

    asyncio.run(main())
    assert batcher.stats.rejected_timeout == 1
    assert (batcher.stats.batches, batcher.stats.rows) == (1, 1)  # the 3 rows never ran


def _run_time(model: OnnxModel) -> float:
    began = time.monotonic()
    model.predict(_slow_inputs(SLOW_TRIPS))
    return time.monotonic() - began


def test_mixed_shapes_are_never_joined_and_each_gets_its_outputs(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.two_outputs, "two_outputs")
    batcher = _batched(model, max_batch_size=32, max_queue_delay_us=50_000)
    calls = [
        (_floats(1 + i % 2, 3 if i % 2 else 5, seed=i), ["squared"] if i % 3 == 0 else None)
        for i in range(12)
    ]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"x": x}, names) for x, names in calls))

    answers = asyncio.run(main())
    for (x, names), answer in zip(calls, answers, strict=True):
        assert sorted(answer) == (names or ["doubled", "squared"])
        np.testing.assert_allclose(answer["squared"], x * x, rtol=1e-6)
        if names is None:
            np.testing.assert_allclose(answer["doubled"], x + x, rtol=1e-6)
    # One batch per shape: widths 3 and 5 never ran together.
    assert batcher.stats.batches == 2
    assert batcher.stats.max_rows == sum(len(x) for x, _ in calls if x.shape[1] == 3)


def test_an_oversize_request_runs_alone(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_oversize")
    batcher = _batched(model, max_batch_size=4, max_queue_delay_us=20_000)
    requests = [_floats(10, 64, 0), *(_floats(1, 64, i) for i in range(1, 5))]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"x": x}, None) for x in requests))

    for x, answer in zip(requests, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(answer["y"], model.predict({"x": x})["y"], rtol=1e-5, atol=1e-6)
    assert batcher.stats.unjoined == 1
    assert batcher.stats.max_rows == 10
    assert batcher.stats.batches == 2  # the 10 rows alone, the four single rows together


def test_a_model_limit_on_rows_is_a_400_before_queueing(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_limit")
    batcher = _batched(model, max_batch_size=32)
    model.max_rows = 8
    with pytest.raises(
        BadRequestError, match="batch of 9 rows is over model 'mlp_limit''s maximum of 8"
    ):
        asyncio.run(model.apredict({"x": _floats(9, 64, 0)}, None))
    assert batcher.stats.batches == 0


def test_an_output_that_does_not_follow_the_batch_turns_batching_off(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.sum_over_batch, "sum_over_batch")
    assert model.batchable  # its signature says so
    batcher = _batched(model, max_batch_size=16, max_queue_delay_us=50_000)
    requests = [_floats(2, 4, seed=i) for i in range(4)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"x": x}, None) for x in requests))

    for x, answer in zip(requests, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(answer["y"], x.sum(axis=0, keepdims=True), rtol=1e-5)
    assert not model.batchable
    assert batcher.stats.max_rows == 8  # the one joined run, whose answer was thrown away
    # From now on requests go the model's own way.
    before = batcher.stats.batches
    asyncio.run(model.apredict({"x": requests[0]}, None))
    assert batcher.stats.batches == before


def test_a_bad_request_in_a_batch_fails_alone(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.gather, "gather")
    batcher = _batched(model, max_batch_size=16, max_queue_delay_us=50_000)
    data = [_floats(1, 4, seed=i) for i in range(6)]
    indexes = [np.array([[i % 4]], dtype=np.int64) for i in range(6)]
    indexes[3] = np.array([[9]], dtype=np.int64)  # out of range

    async def main() -> list[Any]:
        calls = [
            model.apredict({"data": d, "index": i}, None)
            for d, i in zip(data, indexes, strict=True)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(main())
    assert isinstance(answers[3], BadRequestError)
    assert "Out of range value in index tensor" in answers[3].message
    for k in (0, 1, 2, 4, 5):
        assert answers[k]["y"][0, 0] == data[k][0, k % 4]
    assert batcher.stats.max_rows == 6


def test_string_requests_are_joined(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.strings, "strings")
    batcher = _batched(model, max_batch_size=16, max_queue_delay_us=50_000)
    texts = [np.array([[f"a{i}".encode(), f"b{i}".encode()]], dtype=object) for i in range(5)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"text": t}, None) for t in texts))

    for i, answer in enumerate(asyncio.run(main())):
        assert [str(v) for v in answer["y"].reshape(-1)] == [f"a{i}", f"b{i}"]
    assert batcher.stats.max_rows == 5


def test_a_model_with_a_fixed_batch_is_admitted_and_run_as_before(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="inferstack")
    model = _model(model_dir, batch_models.fixed_batch, "fixed")
    assert not model.batchable
    assert "batching" not in caplog.text  # loading says nothing (Lambda never batches)
    batcher = _batched(model, max_batch_size=16, max_queue_delay_us=50_000)
    xs = [_floats(1, 4, seed=i) for i in range(4)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"x": x}, None) for x in xs))

    for x, answer in zip(xs, asyncio.run(main()), strict=True):
        np.testing.assert_array_equal(answer["y"], np.maximum(x, 0))
    assert batcher.stats.batches == 0
    # The server that asked for batching says once why this model is not batched.
    said = "batching off for 'fixed': input 'x' has a fixed first dimension of 1"
    assert caplog.text.count(said) == 1


def test_first_dimensions_with_different_names_do_not_batch(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.renamed_batch, "renamed")
    assert not model.batchable
    assert model.unbatchable_reason == "the first dimensions have different names ['batch', 'rows']"


def test_a_cancelled_caller_is_not_run(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.slow, "slow_cancel")
    batcher = _batched(model, max_batch_size=8)

    async def main() -> None:
        running = asyncio.ensure_future(model.apredict(_slow_inputs(SLOW_TRIPS), None))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(model.apredict(_slow_inputs(1, rows=5), None))
        kept = asyncio.ensure_future(model.apredict(_slow_inputs(1, rows=2), None))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(running, kept)
        assert gone.cancelled()

    asyncio.run(main())
    assert batcher.stats.cancelled == 1
    assert batcher.stats.rows == 1 + 2  # the 5 rows of the cancelled caller never ran


def test_draining_runs_what_is_queued_and_refuses_new_requests(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_drain")
    batcher = _batched(model, max_batch_size=32, max_queue_delay_us=30_000_000)

    async def main() -> None:
        queued = asyncio.ensure_future(model.apredict({"x": _floats(1, 64, 0)}, None))
        await asyncio.sleep(0.01)
        # As a host's shutdown calls it: off the loop, waiting until the queue has run.
        began = time.monotonic()
        await asyncio.to_thread(batcher.drain_and_close, 10.0)
        assert time.monotonic() - began < 5  # not the 30 s delay
        assert batcher.stats.batches == 1
        with pytest.raises(ModelNotReadyError, match="shutting down"):
            await model.apredict({"x": _floats(1, 64, 1)}, None)
        await asyncio.wait_for(queued, 1)

    asyncio.run(main())


def test_overload_is_a_429_error_document_counted_as_throttled(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(model_dir, batch_models.slow, "slow_http")
    _batched(model, max_batch_size=8, max_queue_size=1)
    telemetry = PowertoolsTelemetry(environment="functional-test", namespace="InferStack")
    plane = DataPlane(ModelRepository([model]), telemetry=telemetry)
    path = "/v2/models/slow_http/infer"
    route, params = match_route("POST", path)

    def body(trips: int) -> bytes:
        tensors = [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "spin", "shape": [1, 1], "datatype": "FP32", "data": [trips]},
        ]
        return json.dumps({"inputs": tensors}).encode()

    def call(trips: int) -> Any:
        request = HttpRequest("POST", path, {"content-type": "application/json"}, body(trips))
        return plane.ahandle(request, route, params)

    async def main() -> list[Any]:
        running = asyncio.ensure_future(call(SLOW_TRIPS))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(call(1))
        await asyncio.sleep(0)
        refused = await call(1)
        return [refused, await running, await queued]

    capsys.readouterr()
    refused, *answered = asyncio.run(main())
    assert [r.status for r in answered] == [200, 200]
    assert refused.status == 429
    assert "requests waiting" in json.loads(refused.body)["error"]
    docs = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    errors = [d for d in docs if "Errors" in d]
    assert [(d["ErrorClass"], d["Errors"]) for d in errors] == [("Throttled", [1.0])]


def test_a_normalised_light_model_batches_and_tells_inputs_apart(model_dir: Path) -> None:
    path = batch_models.normalised_light("light_squeezenet", model_dir / "squeezenet.onnx")
    model = OnnxModel("squeezenet", path, threads=1)
    assert model.load_safely(), model.error
    assert model.batchable
    batcher = _batched(model, max_batch_size=4, max_queue_delay_us=50_000)
    images = [_floats(3 * 224, 224, seed=i).reshape(1, 3, 224, 224) for i in range(3)]

    async def main() -> list[Tensors]:
        return await asyncio.gather(*(model.apredict({"data_0": x}, None) for x in images))

    answers = [a["softmaxout_1"] for a in asyncio.run(main())]
    assert batcher.stats.max_rows == 3
    for x, answer in zip(images, answers, strict=True):
        alone = model.predict({"data_0": x})["softmaxout_1"]
        np.testing.assert_allclose(answer, alone, rtol=1e-4, atol=1e-6)
    # Real weights, not the shipped constants: different images, clearly different answers.
    assert np.abs(answers[0] - answers[1]).max() > 10 * np.abs(answers[0]).mean() * 1e-2


def test_batch_sizes_and_queue_times_are_published_as_emf(model_dir: Path) -> None:
    model = _model(model_dir, batch_models.mlp, "mlp_metrics")
    lines: list[str] = []
    identity = ("InferStack", "inferstack", "functional-test")
    metrics = BatchMetrics(identity, model.name, write=lines.append)
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_us=50_000)
    model.batcher = DynamicBatcher(model, policy, metrics=metrics)

    async def main() -> None:
        await asyncio.gather(*(model.apredict({"x": _floats(1, 64, i)}, None) for i in range(8)))
        await asyncio.gather(*(model.apredict({"x": _floats(2, 64, i)}, None) for i in range(2)))

    asyncio.run(main())
    assert lines == []  # once a minute, not per batch
    model.batcher.drain_and_close(1.0)
    (doc,) = [json.loads(line) for line in lines]
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "InferStack"
    assert directive["Dimensions"] == [["service", "environment", "model"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "BatchSize": "Count",
        "QueueTime": "Milliseconds",
    }
    assert (doc["service"], doc["environment"], doc["model"]) == (
        "inferstack",
        "functional-test",
        "mlp_metrics",
    )
    assert doc["BatchSize"] == [8.0, 4.0]
    assert len(doc["QueueTime"]) == 10
    assert all(0 <= wait < 5_000 for wait in doc["QueueTime"])
    assert max(doc["QueueTime"][8:]) >= 40  # the two waited out most of the 50 ms delay
