"""`inferstack` command line: `inferstack serve` runs the API locally on any ONNX files."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from inferstack.constants import DEFAULT_MODEL_VERSION, SERVER_MAX_REQUEST_BYTES
from inferstack.settings import ModelConfig

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inferstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve ONNX models over the Open Inference Protocol")
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to serve (repeatable; PATH may be s3://bucket/key?versionId=v). "
        "Default: the bundled demo model.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--max-request-bytes", type=int, default=SERVER_MAX_REQUEST_BYTES, metavar="N"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--metrics", action="store_true", help="print CloudWatch EMF metrics")
    args = parser.parse_args(argv)
    try:
        models = parse_models(args.model)
    except ValueError as exc:
        serve.error(str(exc))
    return serve_models(models, args)


def parse_models(specs: Sequence[str]) -> list[ModelConfig]:
    if not specs:
        from inferstack.demo import DEMO_MODEL_NAME, demo_model_path

        return [ModelConfig(DEMO_MODEL_NAME, str(demo_model_path()), DEFAULT_MODEL_VERSION)]
    models: list[ModelConfig] = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        if not sep or not name or not uri:
            raise ValueError(f"--model takes NAME=PATH, got {spec!r}")
        if any(m.name == name for m in models):
            raise ValueError(f"--model {name} is given twice")
        if not uri.startswith("s3://") and not Path(uri).is_file():
            raise ValueError(f"--model {name}: no file at {uri}")
        models.append(ModelConfig(name, uri, DEFAULT_MODEL_VERSION))
    return models


def serve_models(models: list[ModelConfig], args: argparse.Namespace) -> int:
    import uvicorn

    from inferstack.bootstrap import server_app
    from inferstack.telemetry import PowertoolsTelemetry, Telemetry

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = server_app(
        models,
        max_request_bytes=args.max_request_bytes,
        telemetry=PowertoolsTelemetry() if args.metrics else Telemetry(),
    )
    base = f"http://{args.host}:{args.port}"
    names = ", ".join(m.name for m in models)
    print(f"inferstack: serving {names} at {base} (docs: {base}/docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
