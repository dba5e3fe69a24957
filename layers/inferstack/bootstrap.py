"""Assemble a host from its settings: the Lambda function and the local server.

Kept apart from the modules it wires so each stays testable with explicit arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.aws_lambda import LambdaEntry
from inferstack.capture import Capture
from inferstack.dataplane import DataPlane
from inferstack.models import ModelRepository, OnnxModel
from inferstack.settings import ModelConfig, Settings
from inferstack.telemetry import PowertoolsTelemetry, Telemetry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from fastapi import FastAPI


def lambda_entry_from_env(environ: Mapping[str, str] | None = None) -> LambdaEntry:
    """Load the function's model now (during Lambda's init phase) and return the handler.

    Everything is read from `environ` (default: os.environ), so a test can pass a mapping.
    """
    settings = Settings.from_env(environ)
    config = settings.model
    telemetry = telemetry_for(settings)
    repository = ModelRepository(
        [
            OnnxModel(
                config.name,
                config.uri,
                config.version,
                threads=settings.threads,
                cache_dir=settings.cache_dir,
            )
        ]
    )
    repository.load_all()
    dataplane = DataPlane(
        repository,
        max_request_bytes=settings.max_request_bytes,
        telemetry=telemetry,
        capture=capture_for(settings),
    )
    return LambdaEntry(dataplane, base_path=settings.base_path, log=telemetry.logger)


def telemetry_for(settings: Settings) -> Telemetry:
    """Powertools metrics, logs (and traces) when metrics are on; nothing otherwise."""
    if not settings.metrics:
        return Telemetry()
    return PowertoolsTelemetry(
        environment=settings.environment,
        namespace=settings.metrics_namespace,
        service=settings.service,
        tracing=settings.tracing,
    )


def capture_for(settings: Settings) -> Capture:
    """Drift capture at the settings' rate, its skips counted under the host's metrics."""
    return Capture(
        settings.capture_rate,
        identity=(settings.metrics_namespace, settings.service, settings.environment),
    )


def server_app(
    models: Sequence[ModelConfig],
    *,
    max_request_bytes: int,
    telemetry: Telemetry | None = None,
    capture: Capture | None = None,
    threads: int | None = None,
    cache_dir: str | None = None,
    load_in_background: bool = True,
) -> FastAPI:
    """The FastAPI app for `inferstack serve`; models load off the loop after start-up
    (readiness reports them as loading until then), each failure isolated."""
    import asyncio
    from contextlib import asynccontextmanager

    from inferstack.server.app import create_app

    repository = ModelRepository(
        (OnnxModel(m.name, m.uri, m.version, threads=threads, cache_dir=cache_dir) for m in models),
        recheck_in_background=True,
    )
    dataplane = DataPlane(
        repository, max_request_bytes=max_request_bytes, telemetry=telemetry, capture=capture
    )
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


def server_app_from_settings(settings: Settings) -> FastAPI:
    """`server_app` for every model and option `settings` names (`inferstack serve`)."""
    return server_app(
        settings.models,
        max_request_bytes=settings.max_request_bytes,
        telemetry=telemetry_for(settings),
        capture=capture_for(settings),
        threads=settings.threads,
        cache_dir=settings.cache_dir,
    )
