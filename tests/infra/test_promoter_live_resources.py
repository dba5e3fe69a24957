"""The promoter may describe the SageMaker model and endpoint config the stack deployed.

CloudFormation names them itself (they must be unique for replacements), outside the
promoter's `inferstack-<env>-*` scope; a rollout copies the live variant from them.
The promoter role's policy is evaluated for the ARNs those resources get in an account.
"""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}


def _resolve(value: Any, refs: dict[str, str]) -> str:
    """A policy resource with Ref/Fn::Join resolved as CloudFormation would in one account."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"]) or refs.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_resolve(part, refs) for part in parts)
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    raise AssertionError(f"unexpected intrinsic {value}")


def _allowed(statements: list[dict[str, Any]], action: str, arn: str, refs: dict[str, str]) -> bool:
    for statement in statements:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        if (
            statement["Effect"] == "Allow"
            and action in actions
            and any(fnmatch.fnmatchcase(arn, _resolve(r, refs)) for r in resources)
        ):
            return True
    return False


def test_promoter_can_describe_the_deployed_model_and_endpoint_config(
    synthesized: dict[str, Synthesized],
) -> None:
    template = json.loads(synthesized["prod"].template_path.read_text())
    resources = template["Resources"]
    promoter_role = next(
        r["Properties"]["Role"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function"
        and "INFERSTACK_TARGETS" in r["Properties"].get("Environment", {}).get("Variables", {})
    )
    statements = [
        statement
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy"
        and {"Ref": promoter_role} in r["Properties"].get("Roles", [])
        for statement in r["Properties"]["PolicyDocument"]["Statement"]
    ]
    # Names as CloudFormation generates them (logical id + random suffix), as ARNs (lower case).
    live = {
        logical_id: (kind, f"{logical_id}-Ab12Cd34Ef56".lower())
        for logical_id, r in resources.items()
        for kind in [r["Type"].removeprefix("AWS::SageMaker::")]
        if kind in ("Model", "EndpointConfig")
    }
    assert {kind for kind, _ in live.values()} == {"Model", "EndpointConfig"}
    arn = "arn:aws:sagemaker:us-east-1:123456789012:{}/{}"
    refs = {
        logical_id: arn.format("model" if kind == "Model" else "endpoint-config", name)
        for logical_id, (kind, name) in live.items()
    }
    for logical_id, (kind, _) in live.items():
        action = f"sagemaker:Describe{kind}"
        assert _allowed(statements, action, refs[logical_id], refs), (action, refs[logical_id])
    # Its own releases stay within its scope; anything else stays out.
    own = arn.format("endpoint-config", "inferstack-prod-resnet50-0007")
    assert _allowed(statements, "sagemaker:DescribeEndpointConfig", own, refs)
    other = arn.format("model", "someone-elses-model")
    assert not _allowed(statements, "sagemaker:DescribeModel", other, refs)
