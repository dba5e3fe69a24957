"""`inferstack serve`: the API on any ONNX files, locally and in the GPU container.

`serve` reads the same settings as every host (INFERSTACK_* variables, see
inferstack.settings); a flag overrides its variable. The SageMaker/ECS container runs
exactly this command with no flags.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstack.names import ENV_MODEL_NAME, ENV_MODEL_URI
from inferstack.settings import (
    BACKENDS,
    PORT_RANGE,
    PRECISIONS,
    ConfigurationError,
    ModelConfig,
    Settings,
    check_range,
    model_config,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """`inferstack serve [FLAGS]`; argv holds the flags (after "serve")."""
    serve = parser()
    args = serve.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigurationError as exc:
        serve.error(exc.message)
    return serve_models(settings)


def parser() -> argparse.ArgumentParser:
    """The flags of `inferstack serve`.

    argparse, not typer: the serving image runs this and ships neither typer nor rich.
    """
    serve = argparse.ArgumentParser(
        prog="inferstack serve",
        description="Serve ONNX models. Each flag overrides its environment variable.",
    )
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to serve (repeatable; PATH may be s3://bucket/key?versionId=v). "
        f"Default: {ENV_MODEL_NAME}={ENV_MODEL_URI} from the environment, else the bundled "
        "demo model.",
    )
    # Flags default to None: "not given", so the environment's value stands.
    serve.add_argument("--host", help="address to listen on (INFERSTACK_HOST; 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        help="port, 1-65535 (INFERSTACK_PORT, or SAGEMAKER_BIND_TO_PORT; 8080)",
    )
    serve.add_argument("--max-request-bytes", type=int, metavar="N")
    serve.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime threads per model")
    serve.add_argument(
        "--max-batch-size", type=int, metavar="N", help="rows per batch; 1: no batching"
    )
    serve.add_argument(
        "--max-queue-delay-us", type=int, metavar="US", help="longest a batch waits to fill"
    )
    serve.add_argument(
        "--max-queue-size",
        type=int,
        metavar="N",
        help="requests waiting (batching) or in flight per model before 429 "
        "(INFERSTACK_MAX_QUEUE_SIZE; 128)",
    )
    serve.add_argument(
        "--queue-timeout-us",
        type=int,
        metavar="US",
        help="longest a request waits to run before 429; 0: no limit (INFERSTACK_QUEUE_TIMEOUT_US)",
    )
    serve.add_argument(
        "--backend", choices=BACKENDS, help="who runs the models (INFERSTACK_BACKEND; auto)"
    )
    serve.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="which release variant to load (INFERSTACK_PRECISION; fp32)",
    )
    on_off = argparse.BooleanOptionalAction
    serve.add_argument("--access-log", action=on_off, help="log every request")
    serve.add_argument("--metrics", action=on_off, help="print CloudWatch EMF metrics")
    serve.add_argument("--tracing", action=on_off, help="X-Ray subsegments (needs --metrics)")
    return serve


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings with every given flag laid over them, validated."""
    settings = Settings.from_env(server=True)
    flags: dict[str, Any] = {
        field: getattr(args, field)
        for field in (
            "host",
            "port",
            "max_request_bytes",
            "threads",
            "max_batch_size",
            "max_queue_delay_us",
            "max_queue_size",
            "queue_timeout_us",
            "backend",
            "precision",
            "access_log",
            "metrics",
            "tracing",
        )
        if getattr(args, field) is not None
    }
    minimums = {
        "max_request_bytes": 1,
        "threads": 1,
        "max_batch_size": 1,
        "max_queue_delay_us": 0,
        "max_queue_size": 1,
        "queue_timeout_us": 0,
    }
    for field, minimum in minimums.items():
        if field in flags:
            check_range(flags[field], _flag(field), minimum)
    if "port" in flags:
        check_range(flags["port"], "--port", *PORT_RANGE)
    models = parse_models(args.model) if args.model else settings.models or default_models()
    return settings._replace(models=tuple(models), **flags)


def parse_models(specs: Sequence[str]) -> list[ModelConfig]:
    models: list[ModelConfig] = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri:
            raise ConfigurationError(f"--model takes NAME=PATH, got {spec!r}")
        model = model_config(name, uri, source=f"--model {spec}")
        if any(m.name == name for m in models):
            raise ConfigurationError(f"--model {name} is given twice")
        if not uri.startswith("s3://") and not Path(uri).is_file():
            raise ConfigurationError(f"--model {name}: no file at {uri}")
        models.append(model)
    return models


def default_models() -> list[ModelConfig]:
    from inferstack.demo import DEMO_MODEL_NAME, demo_model_path

    return [model_config(DEMO_MODEL_NAME, str(demo_model_path()), source="demo model")]


def serve_models(settings: Settings) -> int:
    from inferstack.bootstrap import server_app_from_settings
    from inferstack.server import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = server_app_from_settings(settings)
    base = f"http://{settings.host}:{settings.port}"
    names = ", ".join(m.name for m in settings.models)
    print(f"inferstack: serving {names} at {base} (docs: {base}/docs)", file=sys.stderr)
    print(f"inferstack: settings {settings.summary()}", file=sys.stderr)
    # The shared runner: SIGTERM lets in-flight requests finish, then exits 0.
    return run(app, host=settings.host, port=settings.port, access_log=settings.access_log)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
