"""Sampled traffic for the drift check, in SageMaker's data-capture record format.

Every serving host but SageMaker (which captures with its own DataCapture) calls
`Capture.offer` after a successful inference. A sampled request becomes ONE line on
stdout: a SageMaker data-capture record (one JSON object, no raw newline). stdout goes
to CloudWatch Logs on Lambda and on ECS (awslogs); a subscription filter sends the lines
to Amazon Data Firehose, which writes them to S3 under capture/<model>/yyyy/MM/dd/HH/
(infra/constructs/capture.py). Nothing is buffered in this process: memory stays bounded
by one record, and an abrupt end loses at most the record being written (README, "Drift").

Cheap by design (benchmarks/warm_overhead.py measures it on every request): the sampling
draw is one of 1,024 numbers from one os.urandom call (no `random` import on the
cold-start path, no system call per request, no draw at all at rate 1); a sampled record
embeds the bodies already in hand (no tensor re-encoding), is assembled as bytes (only the
bodies go through a JSON encoder) and written in one call. A record over
`MAX_RECORD_BYTES` is skipped and counted (CaptureSkipped).
"""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING

import orjson

from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_MODEL,
    DIM_SERVICE,
    METRIC_CAPTURE_SKIPPED,
)
from inferstack.telemetry import emit_count, metric_identity, write_line

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from inferstack.protocol.types import HttpResponse

# One CloudWatch Logs event is at most 256 KB, counting 26 bytes of overhead
# (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html);
# a longer line would be split into several events, none of them a whole record.
MAX_RECORD_BYTES = 256 * 1024 - 26
# SageMaker's Triton containers name a binary body's JSON header length in the content type;
# SageMaker's own capture of such a call records it so, and ours does the same, so one
# reader serves both (inferstack.sagemaker.TRITON_BINARY, not imported: it imports us).
BINARY_CONTENT_TYPE = "application/vnd.sagemaker-triton.binary+json;json-header-size="
_JSON_HEAD = b'{"observedContentType":"application/json","mode":"'
_BINARY_HEAD = b'{"observedContentType":"' + BINARY_CONTENT_TYPE.encode()
_DRAWS = 1 << 32
# Sampling draws come from a pool of random bytes, refilled with one os.urandom call: a
# system call per request costs more than the rest of the draw.
_POOL_BYTES = 4096
_COUNT_MASK = (1 << 48) - 1  # the eventId's last 12 hex digits


class Capture:
    """Samples a share `rate` (0..1) of a host's inferences into data-capture records."""

    __slots__ = (
        "_at",
        "_draws",
        "_event_prefix",
        "_events",
        "_second",
        "_stamp",
        "_threshold",
        "identity",
        "max_record_bytes",
        "rate",
        "skipped",
        "write",
    )

    def __init__(
        self,
        rate: float = 0.0,
        *,
        identity: tuple[str, str, str] | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
        write: Callable[[str], object] | None = None,
    ) -> None:
        """`identity` is the (namespace, service, environment) CaptureSkipped is published
        under (telemetry.metric_identity; None: not published); `write` takes one line
        (default: stdout, in one write call)."""
        self.rate = rate
        self._threshold = int(rate * _DRAWS)
        self.identity = identity
        self.max_record_bytes = max_record_bytes
        # Not flushed: both hosts' stdout writes through (Lambda's runtime flushes each
        # write, the container sets PYTHONUNBUFFERED), so a record is in the log pipe when
        # the answer leaves.
        self.write = write or write_line
        self.skipped = 0
        self._draws: Sequence[int] = ()
        self._at = 0
        self._second, self._stamp = -1, b""
        # Both drawn at first use, not here: a SnapStart snapshot taken after init must not
        # give every restored environment the same draws and event ids.
        self._event_prefix, self._events = b"", 0

    def reset(self) -> None:
        """Draw again: called after a SnapStart restore (inferstack.snapstart), so that
        environments restored from one snapshot neither sample the same requests nor write
        the same eventIds, whatever was drawn before the snapshot."""
        self._draws, self._at = (), 0
        self._event_prefix, self._events = b"", 0

    def sampled(self) -> bool:
        """One draw: True for a share `rate` of calls."""
        # Hosts draw from one thread (the Lambda handler, the server's event loop).
        threshold = self._threshold
        if threshold >= _DRAWS:  # every request: no draw to make
            return True
        at = self._at
        if at >= len(self._draws):  # 1,024 draws from one os.urandom call
            self._draws, at = memoryview(os.urandom(_POOL_BYTES)).cast("I"), 0
        self._at = at + 1
        return self._draws[at] < threshold

    def offer(
        self,
        model: str,
        body: bytes,
        header_length: int | None,
        response: HttpResponse,
        inference_id: str | None = None,
    ) -> bool:
        """Write the record of one answered inference if it is sampled; True if written.

        `body` is the request as decoded (decompressed), `header_length` the binary
        extension's JSON header length (None: a JSON body)."""
        if not self._threshold or not self.sampled():
            return False
        if len(body) + len(response.body) > self.max_record_bytes:  # cheap early refusal
            return self._skip(model)
        answer_length = response.headers.get("inference-header-content-length")
        # Assembled from pieces: only the bodies go through a JSON encoder (as strings).
        line = b"".join(
            (
                b'{"captureData":{"endpointInput":',
                _payload(body, header_length, b"INPUT"),
                b',"endpointOutput":',
                _payload(
                    response.body,
                    None if answer_length is None else int(answer_length),
                    b"OUTPUT",
                ),
                b'},"eventMetadata":',
                self._metadata(inference_id),
                b',"eventVersion":"0"}',
            )
        )
        if len(line) > self.max_record_bytes:  # JSON escaping grew it past the cap
            return self._skip(model)
        self.write(line.decode())
        return True

    def _metadata(self, inference_id: str | None) -> bytes:
        """eventMetadata: eventId, inferenceTime and the request's own id if it sent one."""
        # eventId: version-4-shaped, this capture's random 80 bits then a count: unique per
        # record at a fraction of uuid4()'s cost.
        if not self._event_prefix:
            self._event_prefix = b'{"eventId":"' + _event_prefix()
        self._events += 1
        now = int(time.time())
        if now != self._second:  # formatted once a second
            # SageMaker writes whole seconds in UTC: "2022-02-14T17:25:49Z".
            self._second = now
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)).encode()
            self._stamp = b'","inferenceTime":"' + stamp
        tail = b'","inferenceId":' + orjson.dumps(inference_id) + b"}" if inference_id else b'"}'
        count = b"%012x" % (self._events & _COUNT_MASK)
        return b"".join((self._event_prefix, count, self._stamp, tail))

    def _skip(self, model: str) -> bool:
        self.skipped += 1
        if self.identity is not None:
            _publish_skipped(self.identity, model)
        return False


def capture_from_env(environ: Mapping[str, str] | None = None) -> Capture:
    """The capture a host's environment asks for (INFERSTACK_CAPTURE_RATE, read by
    inferstack.settings; unset: off), its skips published under the host's metric identity."""
    from inferstack.settings import capture_rate_from_env

    env = os.environ if environ is None else environ
    return Capture(capture_rate_from_env(env), identity=metric_identity(env))


def _payload(data: bytes, header_length: int | None, mode: bytes) -> bytes:
    """SageMaker's endpointInput/endpointOutput: JSON as text, anything else base64."""
    if header_length is None:
        return b"".join(
            (
                _JSON_HEAD,
                mode,
                b'","data":',
                orjson.dumps(data.decode()),
                b',"encoding":"JSON"}',
            )
        )
    return b"".join(
        (
            _BINARY_HEAD,
            str(header_length).encode(),
            b'","mode":"',
            mode,
            b'","data":"',
            base64.b64encode(data),
            b'","encoding":"BASE64"}',
        )
    )


def _event_prefix() -> bytes:
    """ "xxxxxxxx-xxxx-4xxx-Nxxx-": a random version 4 UUID's first 20 hex digits (version
    nibble 4, variant bits 10), the rest left to a per-record count."""
    raw = bytearray(os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-".encode()


def _publish_skipped(identity: tuple[str, str, str], model: str) -> None:
    """CaptureSkipped = 1 as EMF, with infra/constructs/monitoring.py's dimension set."""
    namespace, service, environment = identity
    emit_count(
        METRIC_CAPTURE_SKIPPED,
        namespace,
        {DIM_SERVICE: service, DIM_ENVIRONMENT: environment, DIM_MODEL: model},
    )
