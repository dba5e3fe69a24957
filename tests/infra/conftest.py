"""Synthesize every environment once per test session (jsii starts once, ~3 s) and share it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.config import Environment

ENVIRONMENTS = ("dev", "staging", "prod")


@dataclass
class Synthesized:
    config: Environment
    stack: cdk.Stack
    template: Template
    template_path: Path  # the CloudFormation JSON, for cfn-lint


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synthesized]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.app import add_stack, feature_flags
    from infra.config import load_environment

    result: dict[str, Synthesized] = {}
    for name in ENVIRONMENTS:
        outdir = tmp_path_factory.mktemp(f"cdk-{name}")
        app = cdk.App(outdir=str(outdir), context=feature_flags())
        config = load_environment(name)
        stack = add_stack(app, config)
        cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
        assembly = app.synth()
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        template_path = Path(assembly.directory) / artifact.template_file
        template = Template.from_json(json.loads(template_path.read_text()))
        result[name] = Synthesized(config, stack, template, template_path)
    return result


@pytest.fixture(scope="session", params=ENVIRONMENTS)
def env(request: pytest.FixtureRequest, synthesized: dict[str, Synthesized]) -> Synthesized:
    """Each environment in turn."""
    return synthesized[request.param]
