"""Every synthesized template passes cfn-lint and cdk-nag's AwsSolutions rules.

A cfn-lint warning may stay only with its reason in KNOWN_WARNINGS; a cdk-nag finding
only as a suppression that carries a specific reason (in the construct that owns it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

# cfn-lint rule id -> why the warning is left in place.
KNOWN_WARNINGS: dict[str, str] = {
    "W3005": "The CDK adds DependsOn entries that repeat a Ref/GetAtt dependency (ECS service on "
    "its listener, the VPC's default-security-group custom resource); CloudFormation orders by "
    "both, so the duplicates are harmless and not ours to edit.",
}

GENERIC_REASONS = {"n/a", "not needed", "ok", "false positive", "suppressed", "todo"}


def test_cfn_lint_finds_no_errors(env: Synthesized) -> None:
    from cfnlint.api import ManualArgs, lint_file

    # The environment's region when its file pins one; else us-east-1, where the cost table
    # in the README is priced (instance types differ by region: g6 is not everywhere).
    region = env.config.account.region or "us-east-1"
    matches = lint_file(env.template_path, ManualArgs(regions=[region]))
    errors = [m for m in matches if m.rule.id.startswith("E")]
    warnings = [m for m in matches if m.rule.id.startswith("W") and m.rule.id not in KNOWN_WARNINGS]
    assert not errors, "\n".join(str(m) for m in errors)
    assert not warnings, "\n".join(str(m) for m in warnings)


def test_cdk_nag_has_no_unsuppressed_findings(env: Synthesized) -> None:
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(env.stack)
    pattern = Match.string_like_regexp("AwsSolutions-.*")
    findings = [
        f"{a.id}: {a.entry.data}"
        for a in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))
    ]
    assert not findings, "\n".join(findings)


def test_every_nag_suppression_carries_a_real_reason(env: Synthesized) -> None:
    template = json.loads(env.template_path.read_text())
    suppressions = [
        (logical_id, rule)
        for logical_id, resource in template.get("Resources", {}).items()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    for logical_id, rule in suppressions:
        reason = str(rule.get("reason", "")).strip()
        assert len(reason) >= 25 and reason.lower() not in GENERIC_REASONS, (logical_id, rule)


@pytest.mark.parametrize("name", ["prod"])
def test_make_synth_through_the_cdk_cli(name: str) -> None:
    """`make synth ENV=prod` as a user runs it: the pinned CDK CLI from npm drives infra.app."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    if shutil.which("npm") is None or shutil.which("make") is None:
        pytest.fail("make synth needs npm and make on the machine")
    result = subprocess.run(
        ["make", "synth", f"ENV={name}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = root / "cdk.out" / f"InferStack-{name}.template.json"
    assert "AWS::ApiGateway::RestApi" in template.read_text()


def test_the_app_applies_cdk_nag_and_reports_errors(tmp_path: Path) -> None:
    """The app's own synth (what `cdk synth` runs) carries cdk-nag errors as error messages.

    One synth of the real dev environment plus a deliberately non-compliant bucket: the only
    errors are the bucket's, so the real environment passes and the bad resource fails.
    """
    import aws_cdk.cx_api as cxapi
    from aws_cdk import aws_s3 as s3

    from infra.app import build_app

    app = build_app("dev", outdir=str(tmp_path))
    stack = app.node.find_child("InferStack-dev")
    s3.Bucket(stack, "NonCompliant")  # no access logs, no TLS-only policy
    assembly = app.synth()
    errors = [
        (message.id, str(message.entry.data))
        for artifact in assembly.stacks
        for message in artifact.messages
        if message.level == cxapi.SynthesisMessageLevel.ERROR
    ]
    assert errors, "cdk-nag did not run in the app"
    assert {path for path, _ in errors} == {"/InferStack-dev/NonCompliant/Resource"}
    assert any(text.startswith("AwsSolutions-S1:") for _, text in errors), errors


def test_cdk_synth_fails_on_an_unsuppressed_finding(tmp_path: Path) -> None:
    """`cdk synth` with the pinned CLI prints the finding and exits non-zero."""
    root = Path(__file__).resolve().parents[2]
    cli = root / "node_modules" / ".bin" / "cdk"
    if not cli.exists():
        pytest.skip("the CDK CLI is not installed (make synth runs npm ci)")
    app = tmp_path / "bad_app.py"
    app.write_text(
        "import aws_cdk as cdk\n"
        "from aws_cdk import aws_s3 as s3\n"
        "from infra.app import apply_checks\n"
        "app = cdk.App()\n"
        "s3.Bucket(cdk.Stack(app, 'Bad'), 'Open')\n"
        "apply_checks(app)\n"
        "app.synth()\n"
    )
    result = subprocess.run(
        [
            str(cli),
            "synth",
            "--app",
            f"{sys.executable} {app}",
            "-o",
            str(tmp_path / "out"),
            "--quiet",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "AwsSolutions-S1" in output, output[-3000:]
