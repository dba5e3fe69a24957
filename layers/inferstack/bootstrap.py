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
    from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

    from fastapi import FastAPI

    from inferstack.models.base import Model
    from inferstack.models.batching import BatchPolicy, DynamicBatcher
    from inferstack.server.gpu_metrics import GpuSampler

# Models a server loads at once (each in its own daemon thread).
PARALLEL_LOADS = 4


def lambda_entry_from_env(environ: Mapping[str, str] | None = None) -> LambdaEntry:
    """Load the function's model now (during Lambda's init phase) and return the handler.

    Everything is read from `environ` (default: os.environ), so a test can pass a mapping.
    Under SnapStart the model is thus loaded and warmed before the snapshot, and the
    after-restore hook (inferstack.snapstart) refreshes what each environment needs its own of.
    """
    import os

    from inferstack import snapstart

    environ = os.environ if environ is None else environ
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
    snapstart.register(dataplane, environ)
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
    return Capture(settings.capture_rate, identity=metrics_identity(settings))


def metrics_identity(settings: Settings) -> tuple[str, str, str]:
    """(namespace, service, environment): what every metric the host emits is filed under."""
    return (settings.metrics_namespace, settings.service, settings.environment)


def gpu_sampler_for(settings: Settings) -> GpuSampler | None:
    """The GPU utilization publisher (ECS scales on it) when metrics are on; it stays off,
    saying why in the log, where NVML finds no GPU."""
    if not settings.metrics:
        return None
    from inferstack.server.gpu_metrics import GpuSampler

    names = [m.name for m in settings.models]
    return GpuSampler(lambda: names, metrics_identity(settings))


def server_app(
    models: Sequence[ModelConfig],
    *,
    max_request_bytes: int,
    telemetry: Telemetry | None = None,
    capture: Capture | None = None,
    threads: int | None = None,
    cache_dir: str | None = None,
    load_in_background: bool = True,
    batching: BatchPolicy | None = None,
    gpu_sampler: GpuSampler | None = None,
    backend: str = "auto",
    precision: str = "fp32",
) -> FastAPI:
    """The FastAPI app for `inferstack serve`; models load off the loop after start-up
    (readiness reports them as loading until then), each failure isolated. Each model runs
    on the backend `backend` picks (models/select.py: TensorRT on a GPU, else ONNX Runtime)
    behind a dynamic batcher (`install_batchers`; `batching` None: join nothing, the default
    queue bound)."""
    from contextlib import asynccontextmanager

    from inferstack.models.batching import BatchPolicy
    from inferstack.models.select import describe, make_models
    from inferstack.server.app import create_app

    if batching is None:
        batching = BatchPolicy()

    choices = make_models(
        models,
        backend=backend,
        precision=precision,
        threads=threads,
        cache_dir=cache_dir,
        max_batch_size=batching.max_batch_size,
    )
    repository = ModelRepository((c.model for c in choices), recheck_in_background=True)
    # BatchSize and QueueTime go wherever the host's request metrics go.
    batchers = install_batchers(
        repository, batching, identity=telemetry.identity if telemetry else None
    )
    dataplane = DataPlane(
        repository,
        max_request_bytes=max_request_bytes,
        telemetry=telemetry,
        capture=capture,
        # GET /v2 says which backend serves each model, and why.
        server_extra=describe(choices),
    )
    if not load_in_background:
        repository.load_all()
    app = create_app(dataplane)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for batcher in batchers:  # admitting again if this app was started before
            batcher.open()
        if load_in_background:
            load_in_daemon_threads(repository)
        sampling = gpu_sampler is not None and gpu_sampler.start() is None
        yield
        # Never wait for a load here: an engine build can take many minutes, and a SIGTERM
        # during it must end the process within the platform's 30 s, not at SIGKILL.
        await drain(batchers)
        repository.close()
        if sampling and gpu_sampler is not None:
            gpu_sampler.stop()  # publishes what it sampled since the last minute

    app.router.lifespan_context = lifespan
    return app


def load_in_daemon_threads(repository: ModelRepository) -> None:
    """Load every model, at most PARALLEL_LOADS at once, in daemon threads nobody joins:
    unlike the loop's executor (joined at interpreter exit), they never delay shutdown."""
    import threading

    slots = threading.BoundedSemaphore(PARALLEL_LOADS)

    def load(model: Model) -> None:
        with slots:
            model.load_safely()

    for model in repository:
        threading.Thread(target=load, args=(model,), name=f"load-{model.name}", daemon=True).start()


def install_batchers(
    models: Iterable[Model],
    policy: BatchPolicy,
    *,
    identity: tuple[str, str, str] | None = None,
) -> list[DynamicBatcher]:
    """Put a dynamic batcher in front of each model's apredict, its BatchSize and QueueTime
    published under `identity` (None: not published). With `max_batch_size` 1 it joins
    nothing and only bounds the model's requests in flight (`max_queue_size`, then 429), so
    a server that does not batch sheds load the same way.

    The Lambda host never calls this: it serves one request per environment.
    """
    from inferstack.models.batching import BatchMetrics, DynamicBatcher

    publish = identity if policy.max_batch_size > 1 else None
    batchers = []
    for model in models:
        metrics = BatchMetrics(publish, model.name) if publish is not None else None
        model.batcher = DynamicBatcher(model, policy, metrics=metrics)
        batchers.append(model.batcher)
    return batchers


async def drain(batchers: Iterable[DynamicBatcher]) -> None:
    """Stop admitting and finish what the batchers hold, within the shutdown's grace."""
    import asyncio

    from inferstack.server import GRACEFUL_SHUTDOWN_S

    # Off the loop: drain_and_close waits for batches that this loop's scheduler runs.
    await asyncio.gather(
        *(asyncio.to_thread(b.drain_and_close, GRACEFUL_SHUTDOWN_S) for b in batchers)
    )


def batch_policy(settings: Settings) -> BatchPolicy:
    """The dynamic batching and queue bound the settings ask for."""
    from inferstack.models.batching import BatchPolicy

    return BatchPolicy(
        settings.max_batch_size,
        settings.max_queue_delay_us,
        settings.max_queue_size,
        settings.queue_timeout_us,
    )


def server_app_from_settings(settings: Settings) -> FastAPI:
    """`server_app` for every model and option `settings` names (`inferstack serve`)."""
    return server_app(
        settings.models,
        max_request_bytes=settings.max_request_bytes,
        telemetry=telemetry_for(settings),
        capture=capture_for(settings),
        threads=settings.threads,
        cache_dir=settings.cache_dir,
        batching=batch_policy(settings),
        gpu_sampler=gpu_sampler_for(settings),
        backend=settings.backend,
        precision=settings.precision,
    )
