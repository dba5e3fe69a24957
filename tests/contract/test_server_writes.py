"""Each answer of `inferstack serve` reaches the client in one TCP segment.

uvicorn writes a response's head and body separately (two send() calls, two segments the
client wakes for); inferstack.server.http holds both until the end of the event loop's turn.
Counted on the client's own socket with Linux's TCP_INFO (tcpi_data_segs_in: segments
that carried data, acknowledgements excluded), so the test reads what the network did.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.contract.conftest import ServerProcess

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="counts segments with Linux's TCP_INFO"
)

# struct tcp_info (include/uapi/linux/tcp.h): tcpi_data_segs_in is the __u32 at byte 152
# (after the u8 flags, 21 u32 counters, the u64 pacing rates and byte counts, segs_out,
# segs_in, notsent_bytes and min_rtt); Linux 4.6 and later.
DATA_SEGS_IN_OFFSET = 152


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, DATA_SEGS_IN_OFFSET)[0])


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request and read its whole answer (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    time.sleep(0.05)  # a second segment, if any, has arrived by now
    return head + b"\r\n\r\n" + body


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_each_answer_arrives_in_one_segment(server: ServerProcess) -> None:
    body = json.dumps(
        {"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP32", "data": [0.5] * 13}]}
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        calls = [
            request("POST", "/v2/models/wine/infer", body),  # inference
            request("GET", "/v2/models/wine"),  # metadata
            request("GET", "/v2/models/nope/ready"),  # an error answer
            request("POST", "/v2/models/wine/infer", body),  # again, on the same connection
        ]
        for call in calls:
            before = data_segments_in(sock)
            answer = exchange(sock, call)
            assert answer.startswith(b"HTTP/1.1 "), answer[:80]
            assert data_segments_in(sock) - before == 1, answer[:200]


def test_large_answers_and_closing_connections_lose_no_bytes(server: ServerProcess) -> None:
    """Answers over the held size go out at once, in order; a closing connection writes
    what is held before it closes."""
    rows = 4000  # ~150 KB of JSON out: more than the 64 KiB a turn may hold
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [rows, 13],
                    "datatype": "FP32",
                    "data": [0.5] * (rows * 13),
                }
            ]
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):  # keep-alive: the second answer follows the first intact
            answer = exchange(sock, request("POST", "/v2/models/wine/infer", body))
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert len(payload) > 64 * 1024
            outputs = {o["name"]: o for o in json.loads(payload)["outputs"]}
            assert outputs["label"]["shape"] == [rows]
        closing = request("GET", "/v2/models/wine").replace(
            b"host: 127.0.0.1\r\n", b"host: 127.0.0.1\r\nconnection: close\r\n"
        )
        sock.sendall(closing)
        received = b""
        while chunk := sock.recv(65536):  # until the server closes
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(payload)["name"] == "wine"
