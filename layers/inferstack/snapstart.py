"""Lambda SnapStart: what an execution environment does before its snapshot and after a restore.

With SnapStart, Lambda initializes the function once, when a version is published (the model
is downloaded, loaded and warmed then, by `bootstrap.lambda_entry_from_env`), snapshots the
whole microVM, and resumes every new environment from that one snapshot. Whatever init made
that must be unique or fresh per environment is therefore made again here, once, by the
after-restore hook; the request path is untouched and pays nothing for it.

The hooks go through `snapshot_restore_py`, the registry that the Lambda Python base image
ships and its runtime interface client runs: before-snapshot hooks in reverse order of
registration, after-restore hooks in order, the latter within 10 seconds
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.dataplane import DataPlane

# Lambda sets it to "snap-start" while it initializes an environment to snapshot
# (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime);
# the runtime interface client runs the hooks only then.
ENV_INITIALIZATION_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"
SNAP_START = "snap-start"


def register(dataplane: DataPlane, environ: Mapping[str, str]) -> bool:
    """Register the hooks for `dataplane` when this init is for a snapshot; True if it is.

    Elsewhere (on-demand or provisioned inits, the local server, tests) nothing is imported
    or registered: the hooks would never run, and the registry would keep `dataplane` alive.
    """
    if environ.get(ENV_INITIALIZATION_TYPE) != SNAP_START:
        return False
    # Two functions that append (func, args, kwargs) to a list (untyped: pyproject's mypy
    # overrides).
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore, dataplane)
    return True


def before_snapshot() -> None:
    """Leave nothing half-written in the snapshot: a line still buffered would be written
    again by every environment restored from it."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def after_restore(dataplane: DataPlane) -> None:
    """Make again, once, what init made that must not be shared between restored
    environments (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-uniqueness.html:
    unique ids and the entropy behind pseudorandom numbers; and, per
    https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-custom.html,
    cached credentials)."""
    from inferstack.sources import forget_aws_clients

    # The next request is this environment's first: ColdStart and RestoredStart, once.
    dataplane.telemetry.restored()
    # New sampling draws and eventId prefix for the drift capture.
    dataplane.capture.reset()
    _reseed_random()
    # The SDK session made at init (and the credentials it resolved, and its connections)
    # is dropped: the next client resolves its own.
    forget_aws_clients()
    # ONNX Runtime needs nothing: its session and thread pool are process memory and
    # threads, restored with the rest of the microVM; it holds no connection or credential.
    # One thing is not refreshed: an unseeded random operator (RandomNormal, Multinomial...)
    # seeds its generator when the session is made, so restored environments repeat its
    # draws; making the session again would cost what SnapStart saves (README, SnapStart).


def _reseed_random() -> None:
    """Reseed the generators the process has imported (from os.urandom, which draws from the
    restored kernel's entropy): each was seeded once, at init, so every environment restored
    from the snapshot would otherwise draw the same numbers. Not imported if not in use."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
