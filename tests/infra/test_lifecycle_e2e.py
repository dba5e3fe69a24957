"""Upload to live, end to end, through moto's HTTP server with real boto3 clients and the real
`inferstack` CLI: push -> S3 event under the synthesized rule's pattern -> the promoter ->
release and pointer -> a new execution environment of the alias serves the release.
Then a rejected upload, duplicates, promote/rollback through the CLI, and a re-synthesized
stack that still points every target at the live release (tests/lifecycle_world.py names
the seams where moto cannot act).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.functional import bad_models
from tests.lifecycle_world import (
    BUCKET,
    CREDENTIALS,
    LifecycleWorld,
    moto_server,
    upload_rule_pattern,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.infra.conftest import Synthesized

DEMO = Path(__file__).resolve().parents[2] / "layers" / "inferstack" / "demo"
CLI = Path(sys.executable).with_name("inferstack")


@pytest.fixture
def world(
    synthesized: dict[str, Synthesized], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[LifecycleWorld]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("INFERSTACK_CACHE_DIR", str(tmp_path / "cache"))
    template = json.loads(synthesized["dev"].template_path.read_text())
    for endpoint in moto_server():
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield LifecycleWorld(endpoint, upload_rule_pattern(template, BUCKET))


def cli(world: LifecycleWorld, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args, "--env", "dev"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=world.cli_env(),
    )


def releases(world: LifecycleWorld) -> dict[str, object]:
    listing = cli(world, "releases", "wine", "--json")
    assert listing.returncode == 0, listing.stderr
    return dict(json.loads(listing.stdout))


def test_push_to_live_then_reject_then_rollback(world: LifecycleWorld, tmp_path: Path) -> None:
    # A first deploy: the alias serves, the model has no release yet.
    assert "has no release yet" in world.served_version()

    pushed = cli(
        world,
        "push",
        "wine",
        str(DEMO / "wine.onnx"),
        "--reference",
        str(DEMO / "reference_sample.npy"),
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "uploaded s3://acme-dev-models/uploads/wine/wine.tar.gz" in pushed.stdout
    assert world.pump() >= 1
    assert world.served_version() == "1"
    listed = releases(world)
    assert [(r["release"], r["state"], r["live"]) for r in listed["releases"]] == [
        ("1", "live", True)
    ]
    manifest = world.store.get_release("wine", "1").manifest
    assert manifest["reference"]["key"].endswith("/reference.npy")
    assert manifest["created_by"].startswith("arn:aws:")  # the pusher's identity

    # A bad model is refused by push itself, before anything is uploaded...
    bad = bad_models.nan_outputs(tmp_path / "nan.onnx")
    refused = cli(world, "push", "wine", str(bad))
    assert refused.returncode == 1
    assert "not uploaded: check 'smoke' failed" in " ".join(refused.stderr.split())
    # ...and by the promoter when it arrives by a plain S3 upload.
    world.s3.put_object(Bucket=BUCKET, Key="uploads/wine/nan.onnx", Body=bad.read_bytes())
    world.pump()
    assert world.served_version() == "1"
    assert [r["source"]["key"] for r in releases(world)["rejected"]] == ["uploads/wine/nan.onnx"]

    # A second release, then back to the first with the CLI.
    retrained = bad_models.tiny(tmp_path / "tiny.onnx", input_name="features", shape=("n", 13))
    world.s3.put_object(
        Bucket=BUCKET,
        Key="uploads/wine/v2.onnx",
        Body=retrained.read_bytes(),
        Metadata={"inferstack-allow-signature-change": "true"},
    )
    world.pump()
    assert world.served_version() == "2"
    back = cli(world, "rollback", "wine")
    assert back.returncode == 0, back.stderr
    assert "rolling wine back to release 1" in back.stdout
    world.pump()
    assert world.served_version() == "1"
    # Promote release 2 again and wait: its old entries ("rolled_back") are not this rollout's.
    waiting = subprocess.Popen(
        [str(CLI), "promote", "wine", "2", "--env", "dev", "--wait", "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=world.cli_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while waiting.poll() is None and time.monotonic() < deadline:
        world.pump()  # the state machine's part, once the CLI has started the execution
        time.sleep(0.5)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "release 2: live" in out
    assert world.served_version() == "2"
    back_again = cli(world, "rollback", "wine", "--to", "1", "--wait", "--timeout", "1")
    assert back_again.returncode == 1  # nothing runs the rollout: --wait gives up, and says so
    assert "gave up waiting" in " ".join(back_again.stderr.split())
    world.pump()
    status = cli(world, "status", "--json")
    (row,) = json.loads(status.stdout)["models"]
    assert (row["live"], row["rolling_out"], row["target"]) == ("1", None, "lambda")


def test_duplicate_events_make_one_release(world: LifecycleWorld) -> None:
    body = (DEMO / "wine.onnx").read_bytes()
    world.s3.put_object(Bucket=BUCKET, Key="uploads/wine/model.onnx", Body=body)
    # moto emits every event of the upload (and "Object Tags Added"); deliver them twice.
    messages = world.sqs.receive_message(QueueUrl=world.queue, MaxNumberOfMessages=10)["Messages"]
    for message in messages:
        world.sqs.send_message(QueueUrl=world.queue, MessageBody=message["Body"])
        world.sqs.change_message_visibility(
            QueueUrl=world.queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    world.pump()
    assert [r.release for r in world.store.releases("wine")] == ["1"]
    outcomes = sorted(r["outcome"] for r in world.results)
    assert outcomes.count("release") == 1 and "duplicate" in outcomes


def test_a_redeploy_keeps_the_promoted_release(
    world: LifecycleWorld, synthesized: dict[str, Synthesized]
) -> None:
    """What `cdk deploy` writes into every target is the live pointer, never an artifact:
    after a promotion, a redeployed function's new environments load the live release."""
    world.s3.put_object(
        Bucket=BUCKET, Key="uploads/wine/model.onnx", Body=(DEMO / "wine.onnx").read_bytes()
    )
    world.pump()
    template = json.loads(synthesized["dev"].template_path.read_text())
    (function,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and "INFERSTACK_MODEL_NAME" in r["Properties"].get("Environment", {}).get("Variables", {})
    ]
    uri = function["Environment"]["Variables"]["INFERSTACK_MODEL_URI"]
    # The deploy resets $LATEST to the template's environment, then publishes it.
    world.lambda_.update_function_configuration(
        FunctionName="inferstack-dev-wine",
        Environment={
            "Variables": {
                "INFERSTACK_MODEL_NAME": "wine",
                "INFERSTACK_MODEL_URI": _resolved(uri, BUCKET),
                "INFERSTACK_METRICS": "off",
            }
        },
    )
    version = world.lambda_.publish_version(FunctionName="inferstack-dev-wine")["Version"]
    world.lambda_.update_alias(
        FunctionName="inferstack-dev-wine", Name="live", FunctionVersion=version
    )
    assert world.served_version() == "1"


def _resolved(value: object, bucket: str) -> str:
    """A template value (Fn::Join over the bucket's Ref) with the bucket name filled in."""
    if isinstance(value, str):
        return value
    assert isinstance(value, dict) and "Fn::Join" in value, value
    separator, parts = value["Fn::Join"]
    return separator.join(p if isinstance(p, str) else bucket for p in parts)
