"""Hosts for the data plane: the ASGI app and the uvicorn server that runs it.

`run` is how every long-running host serves the app (`inferstack serve`, the SageMaker
and ECS container), so shutdown behaves the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

# SageMaker sends SIGKILL 30 s after SIGTERM
# (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html),
# ECS after its stopTimeout (30 s by default,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html):
# in-flight requests get this long to finish, then are cancelled, then the process exits.
GRACEFUL_SHUTDOWN_S = 25


def run(app: FastAPI, *, host: str, port: int, access_log: bool = False) -> int:
    """Serve until SIGTERM or SIGINT; a SIGTERM lets in-flight requests finish, then
    the process exits 0 (uvicorn re-raises the signal once it has shut down)."""
    import signal

    import uvicorn

    from inferstack.server.http import CoalescingHttpToolsProtocol

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Per-request work nothing here uses: X-Forwarded-For rewriting (the client address
        # only shows in the access log) and a `server: uvicorn` header on every answer.
        proxy_headers=False,
        server_header=False,
        # Each answer leaves in one write (see inferstack.server.http).
        http=CoalescingHttpToolsProtocol,
    )
    uvicorn.Server(config).run()
    return 0
