"""Assemble a host from its settings: the Lambda function and the local server.

Kept apart from the modules it wires so each stays testable with explicit arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.aws_lambda import LambdaEntry
from inferstack.dataplane import DataPlane
from inferstack.models import ModelRepository, OnnxModel
from inferstack.settings import FunctionSettings, ModelConfig
from inferstack.telemetry import PowertoolsTelemetry, Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from fastapi import FastAPI


def lambda_entry_from_env(environ: Mapping[str, str] | None = None) -> LambdaEntry:
    """Load the function's model now (during Lambda's init phase) and return the handler."""
    settings = FunctionSettings.from_env(environ)
    telemetry = PowertoolsTelemetry() if settings.metrics else Telemetry()
    config = settings.model
    repository = ModelRepository([OnnxModel(config.name, config.uri, config.version)])
    repository.load_all()
    dataplane = DataPlane(
        repository, max_request_bytes=settings.max_request_bytes, telemetry=telemetry
    )
    return LambdaEntry(dataplane, base_path=settings.base_path, log=telemetry.logger)


def server_app(
    models: Sequence[ModelConfig],
    *,
    max_request_bytes: int,
    telemetry: Telemetry | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """The FastAPI app for `inferstack serve`; models load off the loop after start-up
    (readiness reports them as loading until then), each failure isolated."""
    import asyncio
    from contextlib import asynccontextmanager

    from inferstack.server.app import create_app

    repository = ModelRepository(OnnxModel(m.name, m.uri, m.version) for m in models)
    dataplane = DataPlane(repository, max_request_bytes=max_request_bytes, telemetry=telemetry)
    if not load_in_background:
        repository.load_all()
    app = create_app(dataplane)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(asyncio.to_thread(repository.load_all))
        yield
        await loading
        repository.close()

    if load_in_background:
        app.router.lifespan_context = lifespan
    return app
