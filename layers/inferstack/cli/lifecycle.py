"""`inferstack validate | push | releases | status | promote | rollback` (typer + rich).

Every command that talks to AWS finds the environment's bucket, promoter and targets in
SSM under /inferstack/<env>/ (written by `cdk deploy`), unless flags name them; boto3
honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) for any other endpoint.
"""

from __future__ import annotations

import json
from pathlib import Path  # noqa: TC003 (typer reads the annotations at run time)
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inferstack.release.exceptions import ReleaseError

if TYPE_CHECKING:
    from inferstack.release.validate import ValidationReport

app = typer.Typer(
    name="inferstack",
    help="Serve ONNX models on AWS: validate, push and roll out releases, or serve locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

TARGETS = ("lambda", "sagemaker", "ecs")
STATUS_MARKS = {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]", "skipped": "skipped"}


def run(argv: list[str]) -> int:
    """Run one command; its exit status (2 for usage errors, as click has it)."""
    try:
        app(args=argv, prog_name="inferstack", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve(context: typer.Context) -> None:
    """Serve ONNX models over the Open Inference Protocol (`inferstack serve --help`)."""
    from inferstack.cli.serve import main

    raise typer.Exit(main(context.args))


@app.command()
def validate(
    model: Annotated[Path, typer.Argument(help="a .onnx file or a .tar.gz bundle", exists=True)],
    *,
    reference: Annotated[
        Path | None,
        typer.Option(help="reference sample (.npy: the single input; .npz: by input name)"),
    ] = None,
    live: Annotated[
        Path | None, typer.Option(help="the live release's model: the signature must match it")
    ] = None,
    allow_signature_change: Annotated[
        bool, typer.Option(help="a breaking signature change is intended")
    ] = False,
    target: Annotated[str, typer.Option(help="whose size/time/memory bounds apply")] = "lambda",
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Run exactly the checks the promoter runs on an upload, and print each result."""
    from inferstack.release.validate import limits_for, validate_model

    if target not in TARGETS:
        raise typer.BadParameter(f"one of {', '.join(TARGETS)}", param_hint="--target")
    report = validate_model(
        model,
        reference=reference,
        live=live,
        allow_signature_change=allow_signature_change,
        limits=limits_for(target),
    )
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        print_report(report)
    if not report.passed:
        failed = report.check(report.failed_check or "")
        err.print(f"[red]rejected[/]: check '{failed.name}' failed: {failed.detail}")
        raise typer.Exit(1)


def print_report(report: ValidationReport) -> None:
    table = Table("check", "result", "seconds", "detail", title="validation")
    for check in report.checks:
        table.add_row(check.name, STATUS_MARKS[check.status], f"{check.seconds:.3f}", check.detail)
    out.print(table)
    if report.p50_ms is not None:
        out.print(f"smoke inference p50: {report.p50_ms:.2f} ms on {report.smoke_inputs} inputs")


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error[/]: {message}")
    raise typer.Exit(code)


def _json_default(value: Any) -> Any:
    return str(value)


__all__ = ["ReleaseError", "app", "run"]
