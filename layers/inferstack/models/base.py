"""The backend-agnostic model interface (KServe's shape: load -> ready -> predict).

Hosts call `apredict` from an event loop; the default runs `predict` on the model's
own thread pool, or inline when the model has proven tiny; a host that batches installs a
`DynamicBatcher` as `Model.batcher`, and `apredict` goes through it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from time import monotonic, perf_counter, thread_time
from typing import TYPE_CHECKING, Any, ClassVar

from inferstack.exceptions import BadRequestError, InferStackError, NoReleaseYet

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from inferstack.models.batching import DynamicBatcher
    from inferstack.protocol.types import InferInput, TensorSpec

logger = logging.getLogger(__name__)

Tensors = dict[str, "np.ndarray"]

# Running a model on the event loop (see Model.apredict): what counts as tiny.
INLINE_BUDGET_S = 0.0005
INLINE_AFTER = 64
INLINE_LIMIT_S = 0.005
# Inline runs over INLINE_LIMIT_S before a model stays on its pool for good: one alone may
# be the host (a preempted vCPU, a page fault) stalling a 5 us run, not the model.
INLINE_STRIKES = 3
_FLOATS = frozenset({"FP16", "BF16", "FP32", "FP64"})


class Model(ABC):
    """A named, versioned model with a fixed signature."""

    platform: ClassVar[str] = "unknown"

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        self.ready = False
        self.error: str | None = None
        # No release to load yet (not a failure); when the pointer was last looked at.
        self.awaiting_release = False
        self.release_checked = 0.0
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._executor: ThreadPoolExecutor | None = None
        self._fast_runs = 0  # runs in a row under INLINE_BUDGET_S on the pool; -1: never inline
        self._fast_bytes = 0  # the largest input those runs had, in bytes
        self._inline_strikes = 0  # inline runs over INLINE_LIMIT_S so far
        # Set by load(): every input and output has a dynamic first dimension, so requests
        # can be joined into one run (the batcher turns it off if an output disagrees).
        self.batchable = False
        self.unbatchable_reason: str | None = None  # why not, once loaded (for the batcher's log)
        # The most rows one run can take (a TensorRT profile's maximum); None: no limit.
        self.max_rows: int | None = None
        # Installed by a host that batches (never on Lambda): apredict goes through it.
        self.batcher: DynamicBatcher | None = None

    @property
    def state(self) -> str:
        """READY, LOADING (not tried or under way) or UNAVAILABLE (failed: see `error`)."""
        if self.ready:
            return "READY"
        return "UNAVAILABLE" if self.error else "LOADING"

    @abstractmethod
    def load(self) -> None:
        """Fetch and load the model, fill `inputs`/`outputs`, warm it up."""

    @abstractmethod
    def predict(self, inputs: Tensors, output_names: list[str] | None = None) -> Tensors:
        """Run on validated inputs; returns the requested outputs (all when None)."""

    async def apredict(self, inputs: Tensors, output_names: list[str] | None = None) -> Tensors:
        """`predict` for an event loop: through the model's batcher when the host installed
        one, else `apredict_unbatched`."""
        if self.batcher is not None:
            return await self.batcher.submit(inputs, output_names)
        return await self.apredict_unbatched(inputs, output_names)

    async def apredict_unbatched(
        self, inputs: Tensors, output_names: list[str] | None = None
    ) -> Tensors:
        """`predict` on the model's thread pool, or inline on the loop when this model has
        proven tiny (see `_runs_inline`), which saves the thread hop that costs more than
        the model itself."""
        if self._runs_inline(inputs):
            began = perf_counter()
            try:
                return self.predict(inputs, output_names)
            finally:
                self._inline_took(perf_counter() - began)
        # asyncio and the pool are imported here: the Lambda path never needs them.
        import asyncio

        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency(), thread_name_prefix=f"model-{self.name}"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, inputs, output_names)

    # -- running tiny models inline ------------------------------------------------------
    # A model runs on the event loop only after INLINE_AFTER runs in a row under
    # INLINE_BUDGET_S, and only on inputs no larger than those runs had; any run over the
    # budget sends it back to the pool for INLINE_AFTER runs, and INLINE_STRIKES inline runs
    # over INLINE_LIMIT_S (an input whose cost the size did not show, such as a loop count)
    # keep it on the pool for good; models with integer or boolean inputs never run inline.
    # So a slow model never blocks the loop for long, and a fast one at most a few times.
    # Qualifying runs on the pool are timed in the thread's CPU time (on a busy host, wall
    # time would count preemption and waits for the GIL as model time); an inline run by the
    # wall time it held the loop, which is what health checks wait for (and a clock read
    # costs 0.1 us where a CPU-time read costs 1.4 us, on every request).

    def _runs_inline(self, inputs: Tensors) -> bool:
        if self._fast_runs < INLINE_AFTER:
            return False
        return sum(array.nbytes for array in inputs.values()) <= self._fast_bytes

    def _timed(self, inputs: Tensors, output_names: list[str] | None) -> Tensors:
        began = thread_time()
        outputs = self.predict(inputs, output_names)
        took = thread_time() - began
        if took < INLINE_BUDGET_S:
            if self._fast_runs >= 0:  # negative: inline is off for good
                self._fast_runs += 1
                size = sum(array.nbytes for array in inputs.values())
                self._fast_bytes = max(self._fast_bytes, size)
                if self._fast_runs == INLINE_AFTER and not self._cost_follows_size():
                    self._fast_runs = -1
        elif self._fast_runs >= 0:
            self._fast_runs = self._fast_bytes = 0
        return outputs

    def _cost_follows_size(self) -> bool:
        """Floating-point inputs only: an integer or boolean input may be a count or a
        switch (a Loop's trip count) that makes one run of the same size take seconds."""
        return all(spec.datatype in _FLOATS for spec in self.inputs)

    def _inline_took(self, took: float) -> None:
        if took > INLINE_LIMIT_S:
            self._inline_strikes += 1
            if self._inline_strikes >= INLINE_STRIKES:
                logger.warning(
                    "model %s held the event loop %.1f ms (%d times): it runs on its thread "
                    "pool from now on",
                    self.name,
                    took * 1e3,
                    self._inline_strikes,
                )
                self._fast_runs = -1
                return
            # Back to the pool, where runs are timed in CPU time: a stalled host does not
            # count there, a model that is really slow on such inputs does.
            self._fast_runs = self._fast_bytes = 0
        elif took > INLINE_BUDGET_S:
            self._fast_runs = self._fast_bytes = 0

    def concurrency(self) -> int:
        """How many predictions may run at once on this host."""
        return 4

    def load_safely(self) -> bool:
        """Load, recording (not raising) a failure, so one bad model leaves the others up."""
        self.awaiting_release = False
        try:
            self.load()
        except NoReleaseYet as exc:
            # Deployed before its first release: up, not ready, and nothing is wrong.
            self.awaiting_release, self.ready, self.error = True, False, exc.message
            self.release_checked = monotonic()
            logger.info("model %s: %s", self.name, exc.message)
        except InferStackError as exc:
            self._fail(exc.message)
        except Exception as exc:
            logger.exception("model %s failed to load", self.name)
            self._fail(f"{type(exc).__name__} while loading the model")
        else:
            self.ready, self.error = True, None
        return self.ready

    def _fail(self, reason: str) -> None:
        self.ready, self.error = False, reason
        logger.error("model %s is not ready: %s", self.name, reason)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
        }
        if self.version is not None:
            meta["versions"] = [self.version]
        return meta

    def validate(self, inputs: list[InferInput], output_names: list[str] | None) -> Tensors:
        """Check inputs against the signature; returns them keyed by name."""
        expected = {spec.name: spec for spec in self.inputs}
        given: Tensors = {}
        for tensor in inputs:
            spec = expected.get(tensor.name)
            if spec is None:
                raise BadRequestError(
                    f"model '{self.name}' has no input '{tensor.name}'; "
                    f"its inputs are {sorted(expected)}"
                )
            if tensor.name in given:
                raise BadRequestError(f"input '{tensor.name}' is given twice")
            if tensor.datatype != spec.datatype:
                raise BadRequestError(
                    f"input '{tensor.name}' has datatype {tensor.datatype}; "
                    f"model '{self.name}' expects {spec.datatype}"
                )
            if not _shape_fits(tensor.shape, spec.shape):
                raise BadRequestError(
                    f"input '{tensor.name}' has shape {list(tensor.shape)}; "
                    f"model '{self.name}' expects {list(spec.shape)} (-1: any size)"
                )
            given[tensor.name] = tensor.data
        missing = [name for name in expected if name not in given]
        if missing:
            raise BadRequestError(f"model '{self.name}' needs inputs {missing} that are missing")
        if output_names is not None:
            known = {spec.name for spec in self.outputs}
            unknown = [name for name in output_names if name not in known]
            if unknown:
                raise BadRequestError(
                    f"model '{self.name}' has no outputs {unknown}; its outputs are {sorted(known)}"
                )
        return given

    def output_spec(self, name: str) -> TensorSpec:
        return next(spec for spec in self.outputs if spec.name == name)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(
        want < 0 or got == want for got, want in zip(shape, expected, strict=True)
    )
