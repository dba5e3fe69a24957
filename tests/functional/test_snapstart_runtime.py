"""The Lambda function under SnapStart: hooks registered with the published snapshot_restore_py,
run by awslambdaric's own hook runner, and what a restored environment then does.

The function module is imported as a new execution environment does (import_function_module),
with AWS_LAMBDA_INITIALIZATION_TYPE=snap-start as Lambda sets it for a snapshot's init; the
restore is simulated in this process (same memory, as a Firecracker restore has it) or, for
"several environments from one snapshot", in forked children (each a copy of that memory).
tests/contract/test_snapstart_ric.py runs the real runtime client against a loopback Runtime API.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
import snapshot_restore_py
from awslambdaric.lambda_runtime_hooks_runner import run_after_restore, run_before_snapshot

from .conftest import (
    EXAMPLE_REQUEST,
    HTTP,
    demo_env,
    http_event,
    import_function_module,
    invoke,
)
from .deployed import use_fake_aws

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INFER = "/v2/models/wine/infer"
SNAP_START = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}
# Powertools keeps one metric set per process; each function module imported here sets the
# "environment" default dimension again (a deployed environment imports it once).
pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'environment' has already been added")


@pytest.fixture(autouse=True)
def hook_registry() -> Iterator[None]:
    """snapshot_restore_py's registries (module-level lists), empty for each test and given
    back as they were: the hooks of one test's function must not run in another's."""
    before, after = (
        snapshot_restore_py.get_before_snapshot(),
        snapshot_restore_py.get_after_restore(),
    )
    saved = list(before), list(after)
    before.clear()
    after.clear()
    yield
    before[:], after[:] = saved


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if '"_aws"' in line]


def start_metrics(doc: dict[str, Any]) -> dict[str, list[float]]:
    return {name: doc[name] for name in ("ColdStart", "RestoredStart") if name in doc}


def infer_event() -> dict[str, Any]:
    return http_event(HTTP, "POST", INFER, body=EXAMPLE_REQUEST.read_text())


def test_restored_environment_counts_its_first_request_as_a_restored_cold_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], metrics_on: None
) -> None:
    function = import_function_module(
        monkeypatch, demo_env(INFERSTACK_ENV="snapstart-test", **SNAP_START)
    )
    assert snapshot_restore_py.get_before_snapshot(), "no before-snapshot hook registered"
    assert snapshot_restore_py.get_after_restore(), "no after-restore hook registered"

    # What the runtime client does after a SnapStart init (awslambdaric's on_init_complete).
    run_before_snapshot()
    assert snapshot_restore_py.get_before_snapshot() == []  # each ran, once
    run_after_restore()
    capsys.readouterr()

    first = invoke(function.handler, infer_event())
    second = invoke(function.handler, infer_event())
    assert (first.status, second.status) == (200, 200)
    assert first.json()["outputs"] == second.json()["outputs"]
    docs = [d for d in emf_documents(capsys.readouterr().out) if "Requests" in d]
    assert len(docs) == 2, docs
    assert start_metrics(docs[0]) == {"ColdStart": [1.0], "RestoredStart": [1.0]}
    assert start_metrics(docs[1]) == {}
    # Both metrics are declared to CloudWatch under the request's dimensions.
    declared = {m["Name"] for d in docs[0]["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"ColdStart", "RestoredStart"} <= declared
    assert docs[0]["environment"] == "snapstart-test"


def test_initialized_environment_reports_a_cold_start_that_is_not_restored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], metrics_on: None
) -> None:
    # On-demand init: Lambda sets no snap-start, the runtime runs no hooks, none are registered.
    function = import_function_module(monkeypatch, demo_env(INFERSTACK_ENV="snapstart-test"))
    assert snapshot_restore_py.get_before_snapshot() == []
    assert snapshot_restore_py.get_after_restore() == []
    capsys.readouterr()

    for _ in range(2):
        assert invoke(function.handler, infer_event()).status == 200
    docs = [d for d in emf_documents(capsys.readouterr().out) if "Requests" in d]
    assert [start_metrics(d) for d in docs] == [{"ColdStart": [1.0]}, {}]


def restored_child(function: Any, write_fd: int, random_state: tuple[Any, ...]) -> None:
    """In a forked child (an environment restored from the parent's memory): the
    after-restore hooks, one request, then what it wrote to stdout and a random draw."""
    import random

    try:
        out = os.fdopen(write_fd, "w")
        sys.stdout = out
        # Python reseeds `random` in a forked child (os.register_at_fork); a restore from a
        # snapshot does not: the generator's state is the snapshot's.
        random.setstate(random_state)
        run_after_restore()
        invoke(function.handler, infer_event())
        out.write(json.dumps({"random": random.random()}) + "\n")
        out.flush()
    finally:
        os._exit(0)


def event_ids(lines: str) -> list[str]:
    records = [json.loads(line) for line in lines.splitlines() if '"captureData"' in line]
    return [r["eventMetadata"]["eventId"] for r in records]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to copy an environment")
def test_environments_restored_from_one_snapshot_draw_their_own_ids_and_numbers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Capture every request; one intra-op thread, so the forked copies need no thread pool.
    env = demo_env(INFERSTACK_CAPTURE_RATE="1", INFERSTACK_INTRA_OP_THREADS="1", **SNAP_START)
    function = import_function_module(monkeypatch, env)
    # Whatever was drawn before the snapshot (here: a request that drew an eventId prefix)...
    assert invoke(function.handler, infer_event()).status == 200
    (before,) = event_ids(capsys.readouterr().out)
    run_before_snapshot()
    import random

    random_state = random.getstate()  # seeded once, at init, like everything in the snapshot

    outputs = []
    for _ in range(2):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            restored_child(function, write_fd, random_state)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            outputs.append(pipe.read())
        os.waitpid(pid, 0)

    ids = [event_ids(text) for text in outputs]
    draws = [json.loads(text.splitlines()[-1])["random"] for text in outputs]
    assert all(len(i) == 1 for i in ids), outputs
    # ...is drawn again in each restored environment: eventIds (80 random bits, then a count)
    # share no prefix with the snapshot's or each other's, and random numbers differ.
    prefixes = {before[:24], ids[0][0][:24], ids[1][0][:24]}
    assert len(prefixes) == 3, (before, ids)
    assert draws[0] != draws[1]


def test_clients_made_after_restore_use_the_restored_environments_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3
    from moto import mock_aws

    from inferstack.sources import S3ModelCache

    from .conftest import DEMO_MODEL

    use_fake_aws(monkeypatch)
    monkeypatch.setenv("INFERSTACK_CACHE_DIR", str(tmp_path))
    with mock_aws():
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAINITPHASEKEY0001")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="wine.onnx", Body=DEMO_MODEL.read_bytes())
        # Init downloads the model from S3 with the credentials of the init phase.
        function = import_function_module(
            monkeypatch, demo_env(INFERSTACK_MODEL_URI="s3://models/wine.onnx", **SNAP_START)
        )
        assert invoke(function.handler, infer_event()).status == 200
        run_before_snapshot()

        # A restored environment has credentials of its own (the snapshot's have expired).
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIARESTOREDKEY00002")
        run_after_restore()
        # The next S3 client the runtime makes (a release re-check's download) signs with them.
        url = S3ModelCache(tmp_path).client.generate_presigned_url(
            "get_object", Params={"Bucket": "models", "Key": "wine.onnx"}
        )
    assert "ASIARESTOREDKEY00002" in url
