"""Closed-loop HTTP/1.1 load generator, run as its own process by server_load.py.

    python -m benchmarks.loadgen SPEC_JSON

SPEC: {"port", "path", "headers": {...}, "body_file", "concurrency", "warmup_s",
"duration_s", "server_pid"}. Each of `concurrency` keep-alive connections sends the
same pre-built request, waits for the whole response, and sends the next one. Only
responses completed inside the measured window count. Raw asyncio protocols on uvloop
(when installed) keep the client's CPU per request small: on a 2-core machine it
shares the cores with the server, so its CPU time is reported next to the server's.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class _Shared:
    def __init__(self, request: bytes, window: tuple[float, float]) -> None:
        self.request = request
        self.start, self.end = window
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.failures = 0
        self.stopping = False


class _Connection(asyncio.Protocol):
    def __init__(self, shared: _Shared, done: asyncio.Future[None]) -> None:
        self.shared = shared
        self.done = done
        self.buffer = bytearray()
        self.need = -1
        self.status = 0
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.buffer.clear()
        self.need = -1
        self.sent = time.perf_counter()
        self.transport.write(self.shared.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail()
                return
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end > 0 else None])
            self.need = end + 4 + length
        if len(self.buffer) < self.need:
            return
        now = time.perf_counter()
        shared = self.shared
        if shared.start <= now <= shared.end:
            shared.latencies.append(now - self.sent)
            shared.statuses[self.status] = shared.statuses.get(self.status, 0) + 1
        if now >= shared.end:
            shared.stopping = True
        if shared.stopping:
            self._close()
        else:
            self._send()

    def _fail(self) -> None:
        self.shared.failures += 1
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if not self.shared.stopping:
                self.shared.failures += 1
            self.done.set_result(None)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime, fields 14 and 15 of stat (11 and 12 after the command name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    body = Path(spec["body_file"]).read_bytes()
    headers = {"host": f"127.0.0.1:{spec['port']}", **spec["headers"]}
    headers["content-length"] = str(len(body))
    head = f"POST {spec['path']} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    request = head.encode("latin-1") + b"\r\n" + body
    loop = asyncio.get_running_loop()
    begin = time.perf_counter()
    start = begin + spec["warmup_s"]
    shared = _Shared(request, (start, start + spec["duration_s"]))
    futures = []
    for _ in range(spec["concurrency"]):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda done=done: _Connection(shared, done), "127.0.0.1", spec["port"]
        )
        futures.append(done)
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    server_cpu0, own_cpu0 = _cpu_seconds(spec["server_pid"]), time.process_time()
    await asyncio.sleep(max(0.0, shared.end - time.perf_counter()))
    server_cpu1, own_cpu1 = _cpu_seconds(spec["server_pid"]), time.process_time()
    await asyncio.wait_for(asyncio.gather(*futures), timeout=60)
    window = spec["duration_s"]
    latencies = np.asarray(shared.latencies) * 1e3
    ok = shared.statuses.get(200, 0)
    server_cpu = None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    return {
        "completed": len(shared.latencies),
        "ok": ok,
        "statuses": {str(k): v for k, v in shared.statuses.items()},
        "failures": shared.failures,
        "window_s": window,
        "throughput_rps": ok / window,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p90": float(np.percentile(latencies, 90)) if latencies.size else None,
            "p99": float(np.percentile(latencies, 99)) if latencies.size else None,
            "mean": float(latencies.mean()) if latencies.size else None,
        },
        "server_cpu_s": server_cpu,
        "loadgen_cpu_s": own_cpu1 - own_cpu0,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop

        result = uvloop.run(_main(spec))
        result["loop"] = "uvloop"
    except ImportError:
        result = asyncio.run(_main(spec))
        result["loop"] = "asyncio"
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
