"""Load and smoke-run a candidate model in a child process, so a bound can be enforced.

A model that hangs ONNX Runtime or blows up its memory must not take the promoter (or the
user's shell) with it: the parent kills the child when it runs past its time bound or its
resident memory passes the bound, and the child never has more address space than
`address_space_mb` (RLIMIT_AS, a backstop: virtual size runs ahead of resident memory with
thread stacks and allocator arenas, so the bound itself is measured on resident memory).

The child is `python -m inferstack.release.probe`, not multiprocessing: Lambda has no
/dev/shm, which multiprocessing's queues and pools need. It speaks JSON lines: the parent
sends the request, the child answers "started" (imports done), then "load"; on "smoke" it
runs the model and answers "smoke".
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from inferstack.models.onnx import OnnxModel

# Importing numpy and ONNX Runtime in the child is not the model's load time.
STARTUP_TIMEOUT_S = 60.0
_POLL_S = 0.01
SMOKE_SEED = 7


class ProbeError(Exception):
    """The child did not answer within its bound, or died; the message says which."""


class Probe:
    """The parent's side: one child per candidate model."""

    def __init__(
        self, model: Path, *, max_rss_mb: int, reference: Path | None = None, runs: int = 5
    ) -> None:
        self.max_rss_mb = max_rss_mb
        self.peak_rss_mb = 0.0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "inferstack.release.probe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(target=_pump, args=(stdout, self._lines), daemon=True).start()
        request = {
            "model": str(model),
            "reference": str(reference) if reference else None,
            "runs": runs,
            "address_space_mb": 2 * max_rss_mb + 1024,
        }
        self._send(json.dumps(request))

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def expect(self, stage: str, timeout_s: float) -> dict[str, Any]:
        """The child's next message, which must be `stage`, within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._watch_memory()
            try:
                line = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                if self._process.poll() is not None and self._lines.empty():
                    raise ProbeError(self._died()) from None
                if time.monotonic() > deadline:
                    self.close()
                    raise ProbeError(f"no answer within {timeout_s:g} s (stopped)") from None
                continue
            try:
                message: dict[str, Any] = json.loads(line)
            except ValueError:
                continue  # a native library's own print on stdout, not ours
            if message.get("stage") != stage:
                raise ProbeError(f"expected {stage!r}, the child said {message.get('stage')!r}")
            return message

    def smoke(self, timeout_s: float) -> dict[str, Any]:
        self._send("smoke")
        return self.expect("smoke", timeout_s)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()

    def _send(self, line: str) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone; expect() says why

    def _watch_memory(self) -> None:
        rss = _rss_mb(self._process.pid)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if rss > self.max_rss_mb:
            self.close()
            raise ProbeError(
                f"resident memory reached {rss:.0f} MB, over the {self.max_rss_mb} MB bound "
                "(stopped)"
            )

    def _died(self) -> str:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        code = self._process.returncode
        last = tail[-1] if tail else ""
        if code < 0:
            return f"the model process was killed by signal {-code} {last}".strip()
        return f"the model process exited with status {code}: {last}".strip()


def _pump(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    for line in stream:
        lines.put(line)


def _rss_mb(pid: int) -> float:
    """Resident memory of a live process (Linux /proc; 0 where there is none, e.g. macOS,
    where the child's own peak, reported after loading, is what is checked)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- the child


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes (getrusage(2)).
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _limit_address_space(megabytes: int) -> None:
    try:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform: the parent's resident-memory watch still applies


def _child() -> None:
    request = json.loads(sys.stdin.readline())
    _limit_address_space(int(request["address_space_mb"]))
    import numpy  # noqa: F401 - imported before the clock starts
    import onnxruntime  # noqa: F401

    from inferstack.models.onnx import OnnxModel

    _emit({"stage": "started"})
    model = OnnxModel("candidate", request["model"], warmup=False)
    start = time.perf_counter()
    try:
        model.load()
    except MemoryError:
        _emit({"stage": "load", "ok": False, "error": "ran out of memory while loading"})
        return
    except Exception as exc:  # ModelLoadError carries ORT's reason; anything else too
        _emit({"stage": "load", "ok": False, "error": _message(exc)})
        return
    _emit(
        {
            "stage": "load",
            "ok": True,
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": _peak_rss_mb(),
            "inputs": [spec.as_dict() for spec in model.inputs],
            "outputs": [spec.as_dict() for spec in model.outputs],
        }
    )
    if sys.stdin.readline().strip() != "smoke":
        return
    try:
        _emit({"stage": "smoke", **_smoke(model, request["reference"], request.get("runs", 5))})
    except Exception as exc:  # reported to the parent, which fails the check with it
        _emit({"stage": "smoke", "ok": False, "error": _message(exc)})


def _smoke(model: OnnxModel, reference: str | None, runs: int) -> dict[str, Any]:
    if reference is not None:
        source, attempts = "reference", [_reference_inputs(model, Path(reference))]
    else:
        # A dynamic first axis gets 2 (so the batch check means something), others 1; a
        # model whose named dims do not allow that gets 1 everywhere.
        source, attempts = "synthetic", [_synthetic(model, 2), _synthetic(model, 1)]
    error: Exception | None = None
    for feed in attempts:
        try:
            outputs = model.predict(feed)
        except Exception as exc:  # InferenceError; its cause is ORT's reason
            error = exc
            continue
        latencies = []
        for _ in range(runs):
            start = time.perf_counter()
            model.predict(feed)
            latencies.append((time.perf_counter() - start) * 1000)
        return {
            "ok": True,
            "source": source,
            "input_batch": _batch(model, feed),
            "outputs": [_summary(model, name, value) for name, value in outputs.items()],
            "latencies_ms": latencies,
        }
    assert error is not None
    return {"ok": False, "source": source, "error": _message(error)}


def _reference_inputs(model: OnnxModel, path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    from inferstack.protocol.datatypes import BYTES, NUMPY_DTYPES, datatype_of
    from inferstack.protocol.types import InferInput
    from inferstack.release.bundle import load_reference

    arrays = load_reference(path, [spec.name for spec in model.inputs])
    given = []
    for name, given_array in arrays.items():
        array = given_array
        spec = next((s for s in model.inputs if s.name == name), None)
        if spec is not None and spec.datatype != BYTES:
            # A float64 sample for an FP32 input is the same sample; int for float is not.
            wanted = NUMPY_DTYPES[spec.datatype]
            if array.dtype != wanted and np.can_cast(array.dtype, wanted, "same_kind"):
                array = array.astype(wanted)
        given.append(InferInput(name, datatype_of(array), tuple(array.shape), array))
    return model.validate(given, None)


def _synthetic(model: OnnxModel, first: int) -> dict[str, np.ndarray]:
    import numpy as np

    from inferstack.protocol.datatypes import BYTES, NUMPY_DTYPES

    rng = np.random.default_rng(SMOKE_SEED)
    feed: dict[str, np.ndarray] = {}
    for spec in model.inputs:
        shape = tuple(
            d if d >= 0 else (first if axis == 0 else 1) for axis, d in enumerate(spec.shape)
        )
        dtype = NUMPY_DTYPES[spec.datatype]
        if spec.datatype == BYTES:
            feed[spec.name] = np.full(shape, b"", dtype=object)
        elif dtype.kind == "f":
            # Positive values: a log or sqrt of the input stays finite on a sound model.
            feed[spec.name] = rng.uniform(0.1, 1.0, shape).astype(dtype)
        else:
            # Zeros: a valid index for gathers and embeddings, a valid bool.
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return feed


def _batch(model: OnnxModel, feed: dict[str, np.ndarray]) -> int | None:
    """The batch size when every input has a dynamic first axis, and they agree."""
    sizes = set()
    for spec in model.inputs:
        if not spec.shape or spec.shape[0] != -1:
            return None
        sizes.add(int(feed[spec.name].shape[0]))
    return sizes.pop() if len(sizes) == 1 else None


def _summary(model: OnnxModel, name: str, value: np.ndarray) -> dict[str, Any]:
    import numpy as np

    from inferstack.protocol.datatypes import BF16, bf16_to_float

    spec = model.output_spec(name)
    values = bf16_to_float(value) if spec.datatype == BF16 else np.asarray(value)
    floats = values.dtype.kind in "fc"
    nonfinite = int(values.size - np.count_nonzero(np.isfinite(values))) if floats else 0
    return {
        "name": name,
        "datatype": spec.datatype,
        "declared": list(spec.shape),
        "shape": list(values.shape),
        "nonfinite": nonfinite,
        "size": int(values.size),
    }


def _message(exc: BaseException) -> str:
    """ORT's reason where our error wraps it (InferenceError keeps it as the cause)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if cause is not exc:
        from inferstack.models.onnx import _reason

        text = f"{text}: {_reason(cause)}"
    return text[:1000] or type(exc).__name__


if __name__ == "__main__":
    _child()
