"""`inferstack validate | push | releases | status | promote | rollback` (typer + rich), and
`inferstack drift baseline | check` (cli/drift.py, mounted here).

Every command that talks to AWS finds the environment's bucket, promoter and targets in
SSM under /inferstack/<env>/ (written by `cdk deploy`), unless flags name them; boto3
honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) for any other endpoint.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from inferstack.cli.drift import drift_app
from inferstack.cli.environment import DeployedEnvironment, EnvironmentError_, caller
from inferstack.names import UPLOADS_PREFIX, model_name_problem
from inferstack.release.exceptions import ReleaseError

if TYPE_CHECKING:
    from collections.abc import Callable

    from inferstack.release.records import Release
    from inferstack.release.store import ReleaseStore
    from inferstack.release.validate import ValidationReport

T = TypeVar("T")
POLL_S = 2.0

app = typer.Typer(
    name="inferstack",
    help="Serve ONNX models on AWS: validate, push and roll out releases, or serve locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(drift_app, name="drift")
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


EnvOption = Annotated[str, typer.Option("--env", help="environment (infra/environments/ENV.toml)")]
BucketOption = Annotated[
    str | None, typer.Option(help="model bucket (default: /inferstack/ENV/model-bucket in SSM)")
]
WaitOption = Annotated[bool, typer.Option(help="follow the rollout to its end")]
TimeoutOption = Annotated[float, typer.Option(help="seconds --wait follows before giving up")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
StateMachineOption = Annotated[
    str | None, typer.Option(help="rollout state machine ARN (default: from SSM)")
]


@app.command()
def push(
    model: Annotated[str, typer.Argument(help="the model's name in the environment")],
    file: Annotated[Path, typer.Argument(help="a .onnx file or a .tar.gz bundle", exists=True)],
    *,
    env: EnvOption,
    reference: Annotated[
        Path | None, typer.Option(help="reference sample to bundle with the model", exists=True)
    ] = None,
    allow_signature_change: Annotated[
        bool, typer.Option(help="a breaking signature change is intended")
    ] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = 1800.0,
    bucket: BucketOption = None,
) -> None:
    """Validate locally, upload to uploads/MODEL/ (the promoter takes it from there)."""
    import tempfile

    from inferstack.release.bundle import build_bundle, has_external_data, is_bundle
    from inferstack.release.validate import limits_for, validate_model

    problem = model_name_problem(model)
    if problem:
        raise typer.BadParameter(problem, param_hint="MODEL")
    deployed = _environment(env, bucket=bucket)
    target = _checked(lambda: deployed.target_of(model)).get("target", "lambda")
    with tempfile.TemporaryDirectory(prefix="inferstack-push-") as work:
        upload = file
        # A reference sample or external data files travel with the model in one bundle.
        if not is_bundle(file) and (reference is not None or has_external_data(file)):
            upload = build_bundle(file, Path(work) / f"{model}.tar.gz", reference=reference)
        report = validate_model(
            upload,
            reference=reference if is_bundle(upload) and reference else None,
            allow_signature_change=allow_signature_change,
            limits=limits_for(target),
        )
        print_report(report)
        if not report.passed:
            failed = report.check(report.failed_check or "")
            fail(f"not uploaded: check '{failed.name}' failed: {failed.detail}")
        key, version = _upload(deployed, model, upload, allow_signature_change)
    out.print(f"uploaded s3://{deployed.bucket}/{key} (version {version or 'none'})")
    if wait:
        _follow_upload(deployed, model, key, version, timeout)


def _upload(
    deployed: DeployedEnvironment, model: str, path: Path, allow_signature_change: bool
) -> tuple[str, str | None]:
    """Multipart for large files, a SHA-256 checksum on every part, a progress bar."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from inferstack.release.promote import META_ALLOW_SIGNATURE_CHANGE, META_PUSHED_BY

    key = f"{UPLOADS_PREFIX}{model}/{path.name}"
    metadata = {META_PUSHED_BY: caller()}
    if allow_signature_change:
        metadata[META_ALLOW_SIGNATURE_CHANGE] = "true"
    s3 = boto3.client("s3")
    config = TransferConfig(
        multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024
    )
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"uploading {path.name}", total=path.stat().st_size)
        try:
            s3.upload_file(
                str(path),
                deployed.bucket,
                key,
                Config=config,
                ExtraArgs={"Metadata": metadata, "ChecksumAlgorithm": "SHA256"},
                Callback=lambda sent: progress.advance(task, sent),
            )
        except Exception as exc:
            fail(f"upload to s3://{deployed.bucket}/{key} failed: {exc}")
    head = s3.head_object(Bucket=deployed.bucket, Key=key)
    return key, head.get("VersionId")


def _follow_upload(
    deployed: DeployedEnvironment, model: str, key: str, version: str | None, timeout: float
) -> None:
    from inferstack.release.records import source_identity

    store = deployed.store()
    etag = str(store.s3.head_object(Bucket=deployed.bucket, Key=key)["ETag"]).strip('"')
    identity = source_identity(deployed.bucket, key, version, etag)
    ends = time.monotonic() + timeout
    with err.status("waiting for the promoter to validate the upload"):
        while (outcome := store.source_outcome(model, identity)) is None:
            _poll(ends, "the promoter did not take the upload")
    if outcome.kind == "rejected":
        fail(f"rejected: {outcome.reason}")
    if outcome.kind == "unchanged":
        out.print(f"unchanged: release {outcome.release} is live with the same content")
        return
    if outcome.kind == "superseded":
        fail(f"superseded: {outcome.reason}")
    _follow_release(store, model, str(outcome.release), ends)


def _follow_release(
    store: ReleaseStore, model: str, release: str, ends: float, *, seen: int = 0
) -> None:
    """Print the release's new status entries until it is live or has failed. `seen`: the
    entries there before this rollout started (a release promoted again has a history)."""
    started = seen
    while True:
        history = store.history(model, release)
        for entry in history[seen:]:
            out.print(
                f"release {release}: {entry.state}" + (f" ({entry.reason})" if entry.reason else "")
            )
        seen = len(history)
        state = history[-1].state if len(history) > started else None
        if state == "live":
            return
        if state in ("failed", "rolled_back", "superseded"):
            fail(f"release {release} of {model} is {state}: {history[-1].reason}")
        _poll(ends, f"release {release} did not finish rolling out")


def _poll(ends: float, what: str) -> None:
    if time.monotonic() > ends:
        fail(f"gave up waiting: {what} (see `inferstack status`)")
    time.sleep(POLL_S)


@app.command()
def releases(
    model: Annotated[str, typer.Argument(help="the model's name")],
    *,
    env: EnvOption,
    as_json: JsonOption = False,
    bucket: BucketOption = None,
) -> None:
    """A model's releases (and rejected uploads), newest last."""
    deployed = _environment(env, bucket=bucket)
    store = deployed.store()
    found = _checked(lambda: store.releases(model))
    live = _checked(lambda: store.live(model))
    rejected = _checked(lambda: store.rejections(model))
    if as_json:
        rows = [_release_json(r, live.release if live else None) for r in found]
        out.print_json(
            json.dumps(
                {"model": model, "releases": rows, "rejected": [r.to_json() for r in rejected]}
            )
        )
        return
    table = Table("release", "state", "live", "created", "by", "sha256", "p50 ms", title=model)
    for r in found:
        validation = r.manifest.get("validation") or {}
        p50 = validation.get("p50_ms")
        table.add_row(
            r.release,
            r.state.state if r.state else "-",
            "[green]live[/]" if live and live.release == r.release else "",
            r.created_at,
            str(r.manifest.get("created_by", "")),
            r.artifact.sha256[:12],
            f"{p50:.2f}" if p50 is not None else "-",
        )
    out.print(table)
    for rejection in rejected:
        out.print(
            f"[red]rejected[/] {rejection.at} s3://{rejection.source.bucket}/"
            f"{rejection.source.key}: {_rejection_reason(rejection.report)}"
        )


@app.command()
def status(*, env: EnvOption, as_json: JsonOption = False, bucket: BucketOption = None) -> None:
    """Each model: its target, live release, rollout in progress and last result."""
    deployed = _environment(env, bucket=bucket)
    store = deployed.store()
    models = sorted(set(deployed.targets) | set(_checked(store.models)))
    rows = [_checked(partial(_model_status, store, deployed, model)) for model in models]
    if as_json:
        out.print_json(json.dumps({"environment": env, "models": rows}))
        return
    table = Table("model", "target", "live", "rolling out", "latest", "state", title=env)
    for row in rows:
        moving = row["rolling_out"]
        table.add_row(
            row["model"],
            row["target"],
            row["live"] or "no release yet",
            f"{moving['action']} to {moving['release']}" if moving else "-",
            row["latest"] or "-",
            row["latest_state"] or "-",
        )
    out.print(table)


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="the model's name")],
    release: Annotated[str, typer.Argument(help="the release to make live")],
    *,
    env: EnvOption,
    wait: WaitOption = False,
    timeout: TimeoutOption = 3600.0,
    bucket: BucketOption = None,
    state_machine: StateMachineOption = None,
) -> None:
    """Roll MODEL's target to RELEASE (validated earlier) and make it live."""
    deployed = _environment(env, bucket=bucket, state_machine=state_machine)
    store = deployed.store()
    found = _checked(lambda: store.get_release(model, release))
    if not found.validated:
        fail(f"release {release} of {model} did not pass validation")
    request = {"action": "promote", "model": model, "release": release, "by": caller()}
    _roll(deployed, store, request, release, timeout if wait else None)


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="the model's name")],
    *,
    env: EnvOption,
    to: Annotated[
        str | None, typer.Option(help="release to go back to (default: the one live before)")
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 3600.0,
    bucket: BucketOption = None,
    state_machine: StateMachineOption = None,
) -> None:
    """Roll MODEL back to the release live before the current one (or to --to)."""
    deployed = _environment(env, bucket=bucket, state_machine=state_machine)
    store = deployed.store()
    target = _checked(lambda: store.rollback_target(model, to))
    request = {"action": "rollback", "model": model, "to": target.release, "by": caller()}
    out.print(f"rolling {model} back to release {target.release}")
    _roll(deployed, store, request, target.release, timeout if wait else None)


def _roll(
    deployed: DeployedEnvironment,
    store: ReleaseStore,
    request: dict[str, Any],
    release: str,
    wait_s: float | None,
) -> None:
    """Start the rollout; with `wait_s`, follow what it adds to the release's history."""
    before = len(_checked(lambda: store.history(request["model"], release)))
    _start(deployed, request)
    if wait_s is not None:
        ends = time.monotonic() + wait_s
        _follow_release(store, request["model"], release, ends, seen=before)


def _start(deployed: DeployedEnvironment, request: dict[str, Any]) -> None:
    """Start the rollout state machine: the same code path (and permissions) as uploads."""
    import boto3

    if not deployed.state_machine:
        fail(
            f"environment {deployed.name!r} has no rollout state machine in SSM "
            "(redeploy it, or pass --state-machine)"
        )
    try:
        started = boto3.client("stepfunctions").start_execution(
            stateMachineArn=deployed.state_machine, input=json.dumps(request)
        )
    except Exception as exc:
        fail(f"could not start the rollout: {exc}")
    out.print(f"started {request['action']} of {request['model']}: {started['executionArn']}")


def _environment(name: str, **flags: str | None) -> DeployedEnvironment:
    try:
        return DeployedEnvironment.resolve(name, **flags)
    except EnvironmentError_ as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def _checked(call: Callable[[], T]) -> T:
    """A store call; its ReleaseError becomes a one-line error and exit 1."""
    try:
        return call()
    except (ReleaseError, EnvironmentError_) as exc:
        fail(str(exc))
        raise  # unreachable


def _model_status(store: ReleaseStore, deployed: DeployedEnvironment, model: str) -> dict[str, Any]:
    live = store.live(model)
    found = store.releases(model)
    latest = found[-1] if found else None
    return {
        "model": model,
        "target": deployed.targets.get(model, {}).get("target", "-"),
        "live": live.release if live else None,
        "rolling_out": store.rollout_in_progress(model),
        "latest": latest.release if latest else None,
        "latest_state": latest.state.state if latest and latest.state else None,
        "reason": latest.state.reason if latest and latest.state else None,
    }


def _release_json(release: Release, live: str | None) -> dict[str, Any]:
    return {
        "release": release.release,
        "state": release.state.state if release.state else None,
        "live": release.release == live,
        "created_at": release.created_at,
        "created_by": release.manifest.get("created_by"),
        "sha256": release.artifact.sha256,
        "validation": release.manifest.get("validation"),
    }


def _rejection_reason(report: dict[str, Any]) -> str:
    failed = report.get("failed_check")
    detail = next(
        (c.get("detail") for c in report.get("checks", []) if c.get("name") == failed), None
    )
    return f"check '{failed}' failed: {detail}" if failed else str(report.get("detail", "rejected"))


def print_report(report: ValidationReport) -> None:
    table = Table("check", "result", "seconds", "detail", title="validation")
    for check in report.checks:
        table.add_row(check.name, STATUS_MARKS[check.status], f"{check.seconds:.3f}", check.detail)
    out.print(table)
    if report.p50_ms is not None:
        out.print(f"smoke inference p50: {report.p50_ms:.2f} ms on {report.smoke_inputs} inputs")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error[/]: {message}")
    raise typer.Exit(code)
