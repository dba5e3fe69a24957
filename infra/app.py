"""The CDK app: `cdk deploy -c env=prod` (or `make deploy ENV=prod`) deploys one environment.

The app applies cdk-nag's AwsSolutions rules itself, so every `cdk synth` (and `make synth`)
prints their findings, and the CDK CLI fails synthesis on an unsuppressed error: errors are
error annotations in the cloud assembly, which the CLI reports and exits non-zero on unless
given --ignore-errors (CDK CLI reference, "cdk synth": https://docs.aws.amazon.com/cdk/v2/guide/ref-cli-cmd-synth.html).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import ConfigError, Environment, load_environment
from infra.stack import InferStackStack

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def feature_flags() -> dict[str, object]:
    """cdk.json's feature flags, for apps built outside the CLI (tests) to match it."""
    context: dict[str, object] = json.loads(CDK_JSON.read_text())["context"]
    return context


def build_app(env_name: str | None = None, *, outdir: str | None = None) -> cdk.App:
    app = cdk.App(outdir=outdir) if outdir else cdk.App()
    name = env_name or app.node.try_get_context("env") or "dev"
    config = load_environment(str(name))
    add_stack(app, config)
    apply_checks(app)
    return app


def apply_checks(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions rules on every stack of `app`, each finding with its reason.

    A finding is an error annotation unless the construct that owns the resource suppresses
    it with a written reason (NagSuppressions), so an unsuppressed one fails `cdk synth`.
    """
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))


def add_stack(app: cdk.App, config: Environment) -> InferStackStack:
    # Environment-agnostic unless the file pins account/region: the CLI's defaults apply.
    account = config.account.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = config.account.region or os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=account, region=region) if account or region else None
    return InferStackStack(
        app,
        f"InferStack-{config.name}",
        config=config,
        env=env,
        description=f"InferStack {config.name}: ONNX inference over the Open Inference Protocol",
    )


def main() -> int:
    try:
        app = build_app()
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
