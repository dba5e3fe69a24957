"""uvicorn's httptools protocol, with each response written to the socket in one piece.

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and the body in a second `transport.write` when it sends
`http.response.body`: two send() system calls and two TCP segments, and the client wakes
for each. For a small inference answer that is a large share of the server's cost (about a
tenth of its CPU per request on the 64-float benchmark, and more of the client's).

Here the transport holds what is written during one turn of the event loop and writes it
at the end of that turn: the head and the body of an answer sent back to back leave as one
segment. Large writes (a streamed or big body) go out at once, after anything held, so
nothing is copied twice and the order of bytes never changes; close() writes what is held
first; abort() drops it with the connection. Flow control is untouched: the protocol still
sees the real transport's pause_writing/resume_writing.

uvicorn takes a protocol class for its `http` setting (uvicorn.Config(http=...)), so this is
uvicorn's own protocol with one transport wrapped, not a server of our own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

# Writes up to this size are held until the end of the loop's turn; larger ones go at once
# (joining them would copy a large body for the sake of one system call).
HOLD_MAX_BYTES = 64 * 1024


class CoalescingTransport:
    """A transport that writes what it is given during one event-loop turn in one call."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) > HOLD_MAX_BYTES:
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes > HOLD_MAX_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what is held (a no-op when nothing is, as after an early flush)."""
        if not self._held:
            return
        held, self._held, self._held_bytes = self._held, [], 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, ...)
        # is the real transport's.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a CoalescingTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
