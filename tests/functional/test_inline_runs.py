"""When `inferstack serve` runs a tiny model on its event loop, and when it stops doing so.

A model that proves tiny runs inline (a thread hop costs more than a 5 us model); an inline
run that holds the loop past INLINE_LIMIT_S sends it back to its pool. One such run may be
the host stalling (a preempted vCPU), not the model: it must not cost the model its inline
runs for good (measured: one 8.7 ms stall cut `inferstack serve`'s throughput on a 64-float
model from 1.38x a minimal Starlette server's to 0.86x). INLINE_STRIKES of them do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inferstack.models.base import INLINE_AFTER, INLINE_LIMIT_S, INLINE_STRIKES
from inferstack.models.onnx import OnnxModel
from tests import batch_models

ROW = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


@pytest.fixture
def relu(tmp_path: Path) -> OnnxModel:
    served = OnnxModel("relu", batch_models.relu(tmp_path / "relu64.onnx"), threads=1)
    served.load()
    return served


def serve(model: OnnxModel, requests: int) -> bool:
    """`requests` predictions through apredict, as the server makes them; whether the next
    one would run inline on the loop."""

    async def run() -> None:
        for _ in range(requests):
            [out] = (await model.apredict({"x": ROW})).values()
            np.testing.assert_array_equal(out, np.maximum(ROW, 0))

    asyncio.run(run())
    return model._runs_inline({"x": ROW})


def test_a_tiny_model_runs_inline_once_it_has_proven_tiny(relu: OnnxModel) -> None:
    assert not serve(relu, INLINE_AFTER - 1)
    assert serve(relu, 1)


def test_one_stalled_inline_run_sends_it_back_to_the_pool_not_off_the_loop_for_good(
    relu: OnnxModel,
) -> None:
    assert serve(relu, INLINE_AFTER)
    relu._inline_took(INLINE_LIMIT_S * 1.7)  # the loop was held 8.5 ms by one run
    assert not serve(relu, INLINE_AFTER - 1)  # on the pool, qualifying again
    assert serve(relu, 1)


def test_repeated_long_inline_runs_keep_it_on_the_pool_for_good(relu: OnnxModel) -> None:
    for _ in range(INLINE_STRIKES):
        assert serve(relu, INLINE_AFTER)
        relu._inline_took(INLINE_LIMIT_S * 2)
    assert not serve(relu, 4 * INLINE_AFTER)
