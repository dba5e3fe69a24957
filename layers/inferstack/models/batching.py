"""Dynamic batching in front of any `Model`: concurrent requests joined into one run.

After Triton's dynamic batcher and queue policy
(https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/batcher.html):
a bounded queue per model (full -> 429), a per-request queue timeout (-> 429), batches of at
most `max_batch_size` rows formed within `max_queue_delay_us` of the oldest request. Only
requests whose inputs match beyond the batch dimension are joined, never padded (padding
changes the answers of models without masks), and each caller gets exactly its rows back.

Hosts on an event loop install one per model (`Model.batcher`); Lambda never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from inferstack.exceptions import BadRequestError, ModelNotReadyError, OverloadedError
from inferstack.names import (
    ENV_MAX_QUEUE_SIZE,
    METRIC_BATCH_SIZE,
    METRIC_QUEUE_TIME,
)
from inferstack.settings import DEFAULT_MAX_QUEUE_SIZE
from inferstack.telemetry import MAX_EMF_VALUES, emf_document, write_line

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from inferstack.models.base import Model, Tensors

logger = logging.getLogger(__name__)


class BatchPolicy(NamedTuple):
    """A model's batching and queue bound (Settings' fields of the same names)."""

    max_batch_size: int = 1  # 1: join nothing (the queue bound still holds)
    max_queue_delay_us: int = 0
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    queue_timeout_us: int = 0  # 0: wait as long as it takes


@dataclass(slots=True)
class BatchStats:
    batches: int = 0  # model runs the batcher made (a joined batch or a request alone)
    rows: int = 0
    max_rows: int = 0  # the largest batch run, in rows
    rejected_full: int = 0
    rejected_timeout: int = 0
    cancelled: int = 0  # callers gone before their request was taken into a batch
    unjoined: int = 0  # requests that could never be joined (dim 0 disagrees, oversize)


PUBLISH_SECONDS = 60.0
# An EMF metric's value array holds at most 100 values
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html);
# telemetry.emf_document keeps one under Powertools' own flush at 100.
MAX_VALUES = MAX_EMF_VALUES


class BatchMetrics:
    """BatchSize (rows per run) and QueueTime (ms each request waited) of one model as EMF:
    one document with value arrays per PUBLISH_SECONDS, or sooner when an array is full,
    under (namespace, service, environment) + model, the dimensions the dashboard reads."""

    def __init__(
        self,
        identity: tuple[str, str, str],
        model: str,
        *,
        publish_seconds: float = PUBLISH_SECONDS,
        write: Callable[[str], object] = write_line,
    ) -> None:
        self.identity, self.model = identity, model
        self.publish_seconds, self.write = publish_seconds, write
        self._sizes: list[float] = []
        self._waits: list[float] = []
        self._since = time.monotonic()

    def record(self, rows: int, waits_ms: list[float]) -> None:
        if not self._sizes:
            self._since = time.monotonic()
        self._sizes.append(float(rows))
        for wait in waits_ms:
            if len(self._waits) >= MAX_VALUES:
                self.publish()
            self._waits.append(round(wait, 3))
        full = len(self._sizes) >= MAX_VALUES
        if full or time.monotonic() - self._since >= self.publish_seconds:
            self.publish()

    def publish(self) -> None:
        if not self._sizes and not self._waits:
            return
        document = emf_document(
            self.identity,
            self.model,
            {
                METRIC_BATCH_SIZE: ("Count", self._sizes),
                METRIC_QUEUE_TIME: ("Milliseconds", self._waits),
            },
            int(time.time() * 1000),
        )
        self._sizes, self._waits = [], []
        self.write(orjson.dumps(document).decode())


_QUEUED, _TAKEN, _DROPPED = 0, 1, 2


@dataclass(slots=True, eq=False)
class _Item:
    inputs: Tensors
    rows: int
    names: list[str] | None
    future: asyncio.Future[Tensors]
    enqueued: float
    state: int = _QUEUED


@dataclass(slots=True)
class _Queue:
    """What runs on one event loop: the queues by join key and the scheduler task."""

    loop: asyncio.AbstractEventLoop
    arrived: asyncio.Event
    by_key: dict[Hashable, deque[_Item]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class DynamicBatcher:
    """Joins concurrent `submit`s for one model into batches run one at a time."""

    def __init__(
        self, model: Model, policy: BatchPolicy, *, metrics: BatchMetrics | None = None
    ) -> None:
        """`metrics`: where BatchSize and QueueTime go (None: not published)."""
        if policy.max_batch_size < 1 or policy.max_queue_size < 1:
            raise ValueError(f"max_batch_size and max_queue_size must be >= 1: {policy}")
        if policy.max_queue_delay_us < 0 or policy.queue_timeout_us < 0:
            raise ValueError(f"delays must be >= 0: {policy}")
        self.model = model
        self.policy = policy
        self.stats = BatchStats()
        self.metrics = metrics
        self._waiting = 0  # admitted and not yet taken into a run (or running, when unbatched)
        self._queue: _Queue | None = None
        # One batch at a time: ONNX Runtime already uses every CPU inside one run, and a
        # TensorRT engine has one context and one stream.
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._running = False  # a batch is on the executor
        self._idle = threading.Event()  # nothing queued or running (drain_and_close waits)
        self._idle.set()
        self._said_why_not = False

    @property
    def batching(self) -> bool:
        """Checked per request: models load after the host installs their batcher."""
        return self.policy.max_batch_size > 1 and self.model.batchable

    async def submit(self, inputs: Tensors, output_names: list[str] | None) -> Tensors:
        """The model's outputs for these (validated) inputs, run alone or in a batch."""
        self._admit()
        if not self.batching:
            if not self._said_why_not and self.policy.max_batch_size > 1:
                self._said_why_not = True  # once, where batching was asked for
                why = self.model.unbatchable_reason or "its signature does not allow it"
                logger.info("batching off for '%s': %s", self.model.name, why)
            # Admission only, then the model's own path: the CPU server's concurrency stays.
            self._waiting += 1
            try:
                return await self.model.apredict_unbatched(inputs, output_names)
            finally:
                self._waiting -= 1
        rows = _rows(inputs)
        limit = self.model.max_rows
        if limit is not None and rows is not None and rows > limit:
            raise BadRequestError(
                f"batch of {rows} rows is over model '{self.model.name}''s maximum of {limit}"
            )
        key: Hashable
        if rows is None or rows > self.policy.max_batch_size:
            key, rows = object(), rows or 0  # its own batch, never joined
            self.stats.unjoined += 1
        else:
            key = tuple(
                (name, inputs[name].dtype.str, inputs[name].shape[1:]) for name in sorted(inputs)
            )
        queue = self._on_this_loop()
        item = _Item(inputs, rows, output_names, queue.loop.create_future(), time.monotonic())
        queue.by_key.setdefault(key, deque()).append(item)
        self._waiting += 1
        self._idle.clear()
        queue.arrived.set()
        return await self._wait(item)

    def _admit(self) -> None:
        if self._closed:
            raise ModelNotReadyError(f"model '{self.model.name}' is shutting down")
        if self._waiting >= self.policy.max_queue_size:
            self.stats.rejected_full += 1
            held = "waiting" if self.batching else "in flight"
            raise OverloadedError(
                f"model '{self.model.name}' has {self._waiting} requests {held} "
                f"({ENV_MAX_QUEUE_SIZE}): retry later"
            )

    async def _wait(self, item: _Item) -> Tensors:
        timeout_us = self.policy.queue_timeout_us
        try:
            if timeout_us:
                remaining = item.enqueued + timeout_us / 1e6 - time.monotonic()
                try:
                    return await asyncio.wait_for(asyncio.shield(item.future), remaining)
                except TimeoutError:
                    if item.state == _QUEUED:
                        self._drop(item)
                        self.stats.rejected_timeout += 1
                        raise OverloadedError(
                            f"model '{self.model.name}': waited {timeout_us / 1000:g} ms in the "
                            "batch queue: retry later"
                        ) from None
                    # Taken into a run: the work is under way and its answer still comes.
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            # The caller went away (client disconnect): its rows are not run if not yet taken.
            if item.state == _QUEUED:
                self._drop(item)
                self.stats.cancelled += 1
            else:  # its run goes on: nobody will read a failure, so do not log it as lost
                item.future.add_done_callback(_consume)
            raise

    def _drop(self, item: _Item) -> None:
        item.state = _DROPPED
        item.future.cancel()
        self._left_queue()

    def _left_queue(self) -> None:
        self._waiting -= 1
        if self._waiting == 0 and not self._running:
            self._idle.set()

    def _on_this_loop(self) -> _Queue:
        loop = asyncio.get_running_loop()
        queue = self._queue
        if queue is None or queue.loop is not loop:
            queue = self._queue = _Queue(loop, asyncio.Event())
        if queue.task is None or queue.task.done():
            queue.task = loop.create_task(self._schedule(queue), name=f"batcher-{self.model.name}")
        return queue

    # -- the scheduler: one task per model ---------------------------------------------

    async def _schedule(self, queue: _Queue) -> None:
        delay = self.policy.max_queue_delay_us / 1e6
        while True:
            picked = self._oldest(queue)
            if picked is None:
                if self._closed:
                    return
                queue.arrived.clear()
                await queue.arrived.wait()
                continue
            key, items = picked
            due = items[0].enqueued + delay
            now = time.monotonic()
            full = sum(item.rows for item in items) >= self.policy.max_batch_size
            if not (full or now >= due or self._closed):
                queue.arrived.clear()
                # Until the oldest is due, or a new arrival may fill the batch.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.arrived.wait(), due - now)
                continue
            self._running = True
            try:
                batch = self._take(items)
                if not items:
                    del queue.by_key[key]
                await self._run(batch)
            finally:
                self._running = False
                if self._waiting == 0:
                    self._idle.set()

    @staticmethod
    def _oldest(queue: _Queue) -> tuple[Hashable, deque[_Item]] | None:
        best: tuple[Hashable, deque[_Item]] | None = None
        for key, items in list(queue.by_key.items()):
            while items and items[0].state != _QUEUED:
                items.popleft()  # gone while queued
            if not items:
                del queue.by_key[key]
            elif best is None or items[0].enqueued < best[1][0].enqueued:
                best = (key, items)
        return best

    def _take(self, items: deque[_Item]) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while items:
            item = items[0]
            if item.state != _QUEUED:
                items.popleft()
                continue
            if batch and rows + item.rows > self.policy.max_batch_size:
                break
            items.popleft()
            item.state = _TAKEN
            self._left_queue()
            batch.append(item)
            rows += item.rows
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        if self.metrics is not None:
            now = time.monotonic()
            waits = [(now - item.enqueued) * 1e3 for item in batch]
            self.metrics.record(sum(item.rows for item in batch), waits)
        try:
            if len(batch) == 1:
                await self._run_alone(batch[0])
            else:
                await self._run_joined(batch)
        except BaseException as exc:  # a bug here must fail the callers, not hang them
            for item in batch:
                _settle(item, exc=exc)
            if not isinstance(exc, Exception):
                raise
            logger.exception("batcher of model %s failed", self.model.name)

    async def _call(self, inputs: Tensors, names: list[str] | None, rows: int) -> Tensors:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{self.model.name}")
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.max_rows = max(self.stats.max_rows, rows)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.model.predict, inputs, names)

    async def _run_alone(self, item: _Item) -> None:
        try:
            outputs = await self._call(item.inputs, item.names, item.rows)
        except Exception as exc:
            _settle(item, exc=exc)
        else:
            _settle(item, outputs)

    async def _run_joined(self, batch: list[_Item]) -> None:
        names = _union([item.names for item in batch])
        inputs = {
            name: np.concatenate([item.inputs[name] for item in batch], axis=0)
            for name in batch[0].inputs
        }
        total = sum(item.rows for item in batch)
        try:
            outputs = await self._call(inputs, names, total)
        except BadRequestError:
            # Some request's values: rerun alone so only the culprit hears of it.
            for item in batch:
                await self._run_alone(item)
            return
        except Exception as exc:
            for item in batch:
                _settle(item, exc=exc)
            return
        wrong = {n: a.shape for n, a in outputs.items() if a.ndim == 0 or a.shape[0] != total}
        if wrong:
            # An output does not follow the batch (a sum over dim 0): never hand out mixed rows.
            self.model.batchable = False
            logger.warning(
                "batching off for '%s': output shapes %s do not follow a batch of %d rows",
                self.model.name,
                wrong,
                total,
            )
            for item in batch:
                await self._run_alone(item)
            return
        start = 0
        for item in batch:
            end = start + item.rows
            wanted = item.names or list(outputs)
            _settle(item, {name: outputs[name][start:end] for name in wanted})
            start = end

    # -- start and shutdown --------------------------------------------------------------

    def open(self) -> None:
        """Admit requests (again, after `drain_and_close`): the server's start-up."""
        self._closed = False

    def drain_and_close(self, timeout_s: float) -> None:
        """Stop admitting (503) and run what is queued at once; off the serving loop, wait
        up to `timeout_s` for the queue to empty. The model's executor stops afterwards."""
        self._closed = True
        queue = self._queue
        if queue is not None and not queue.loop.is_closed():
            queue.loop.call_soon_threadsafe(queue.arrived.set)
            try:
                on_loop = asyncio.get_running_loop() is queue.loop
            except RuntimeError:
                on_loop = False
            if not on_loop:
                self._idle.wait(timeout_s)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self.metrics is not None:
            self.metrics.publish()


def _rows(inputs: Tensors) -> int | None:
    """The batch size the inputs share on dim 0; None when they do not agree."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1:
        return None
    return sizes.pop()


def _union(wanted: list[list[str] | None]) -> list[str] | None:
    if any(names is None for names in wanted):
        return None
    seen: dict[str, None] = {}
    for names in wanted:
        seen.update(dict.fromkeys(names or ()))
    return list(seen)


def _consume(future: asyncio.Future[Tensors]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(item: _Item, outputs: Any = None, *, exc: BaseException | None = None) -> None:
    if item.future.done():  # the caller went away
        return
    if exc is not None:
        item.future.set_exception(exc)
    else:
        item.future.set_result(outputs)
