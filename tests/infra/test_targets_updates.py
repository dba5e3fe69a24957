"""Updates keep capacity, teardown ends cleanly, Lambda stops before the API gives up.

One full stack (every construct, cdk-nag applied) is synthesized for the module from a
configuration whose model names need mapping for AWS (`light_resnet50`, `Dense_Net.v2`); it
also passes cfn-lint. The shipped environments come from conftest.py's session synthesis.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import aws_cdk as cdk

    from infra.config import Environment
    from tests.infra.conftest import Synthesized

CONFIG: dict[str, Any] = {
    "name": "targets",
    "models": [
        {"name": "light_resnet50", "target": "lambda"},
        {
            "name": "Dense_Net.v2",
            "target": "sagemaker",
            "instance_type": "ml.g6.xlarge",
            "autoscaling": {"min_capacity": 2, "max_capacity": 4},
        },
        {
            "name": "yolo_v8",
            "target": "ecs",
            "instance_type": "g6.xlarge",
            "autoscaling": {"min_capacity": 2, "max_capacity": 3},
        },
    ],
}


@dataclass
class Built:
    config: Environment
    stack: cdk.Stack
    template: dict[str, Any]
    template_path: Path
    rollback_alarm: str  # logical id of the alarm handed to EcsGpuService.roll_back_on


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from infra.app import add_stack, feature_flags
    from infra.config import Environment
    from infra.constructs.monitoring import Monitoring

    config = Environment.model_validate(CONFIG)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk-targets")), context=feature_flags())
    stack = add_stack(app, config)
    monitoring = stack.node.find_child("Monitoring")
    assert isinstance(monitoring, Monitoring)
    alarm = monitoring.error_rate_alarms["yolo_v8"]
    cdk.Aspects.of(app).add(AwsSolutionsChecks())
    assembly = app.synth()
    path = Path(assembly.directory) / assembly.get_stack_artifact(stack.artifact_id).template_file
    logical_id = stack.get_logical_id(alarm.node.default_child)  # type: ignore[arg-type]
    return Built(config, stack, json.loads(path.read_text()), path, logical_id)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def only(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = of_type(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.items()))


def dependencies(template: dict[str, Any]) -> dict[str, set[str]]:
    """What each resource waits for on create and outlives on delete.

    Ref, Fn::GetAtt, Fn::Sub and DependsOn: the edges CloudFormation orders by.
    """
    resources = template["Resources"]
    graph: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        found: set[str] = set()

        def walk(node: Any, found: set[str] = found) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "Ref" and value in resources:
                        found.add(value)
                    elif key == "Fn::GetAtt":
                        target = value[0] if isinstance(value, list) else value.split(".")[0]
                        found.add(target)
                    elif key == "Fn::Sub":
                        text = value[0] if isinstance(value, list) else value
                        found.update(
                            n for n in re.findall(r"\$\{([^}.!]+)", text) if n in resources
                        )
                        walk(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(resource.get("Properties", {}))
        depends = resource.get("DependsOn", [])
        found.update([depends] if isinstance(depends, str) else depends)
        graph[logical_id] = found
    return graph


def waits_for(graph: dict[str, set[str]], start: str, target: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == target:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def ecs_templates(built: Built, synthesized: dict[str, Synthesized]) -> list[dict[str, Any]]:
    templates = [built.template]
    for env in synthesized.values():
        if of_type(env.template.to_json(), "AWS::ECS::Service"):
            templates.append(env.template.to_json())
    return templates


# ------------------------------------------------------------------ 11: updates keep capacity


def test_ecs_deploys_leave_the_task_count_to_autoscaling(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    """No DesiredCount: a deploy no longer resets a scaled-out service to min_capacity."""
    for template in ecs_templates(built, synthesized):
        for service in of_type(template, "AWS::ECS::Service").values():
            assert "DesiredCount" not in service["Properties"], service["Properties"]


def test_first_ecs_deploy_still_reaches_min_capacity(built: Built) -> None:
    """ECS starts a new service with 1 task; registering the scalable target raises it."""
    graph = dependencies(built.template)
    service_id, _ = only(built.template, "AWS::ECS::Service")
    targets = {
        k: r
        for k, r in of_type(built.template, "AWS::ApplicationAutoScaling::ScalableTarget").items()
        if r["Properties"]["ServiceNamespace"] == "ecs"
    }
    assert len(targets) == 1
    target_id, target = next(iter(targets.items()))
    assert target["Properties"]["MinCapacity"] == 2
    assert waits_for(graph, target_id, service_id)


def test_sagemaker_updates_keep_the_scaled_out_instance_count(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    templates = [built.template, synthesized["prod"].template.to_json()]
    for template in templates:
        for endpoint in of_type(template, "AWS::SageMaker::Endpoint").values():
            props = endpoint["Properties"]
            # UpdateEndpoint keeps DesiredInstanceCount (and weight); everything else comes
            # from the new endpoint config, and the template's DeploymentConfig applies.
            assert props["RetainAllVariantProperties"] is True
            assert props["RetainDeploymentConfig"] is False
            assert "ExcludeRetainedVariantProperties" not in props
            assert "BlueGreenUpdatePolicy" in props["DeploymentConfig"]


def _sagemaker_stacks(enabled_flags: tuple[bool, ...]) -> list[dict[str, Any]]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import feature_flags
    from infra.config import Environment, SageMakerModel
    from infra.constructs.model_store import ModelStore
    from infra.constructs.sagemaker_model import SageMakerEndpoint

    app = cdk.App(context=feature_flags())
    stacks = []
    for enabled in enabled_flags:
        model = dict(CONFIG["models"][1])
        model["autoscaling"] = {**model["autoscaling"], "enabled": enabled}
        config = Environment.model_validate({"name": "targets", "models": [model]})
        stack = cdk.Stack(app, f"Scaling{enabled}")
        store = ModelStore(stack, "Store", config=config)
        sagemaker_model = config.models[0]
        assert isinstance(sagemaker_model, SageMakerModel)
        SageMakerEndpoint(stack, "Sm", config=config, model=sagemaker_model, store=store)
        stacks.append(stack)
    # Template.from_stack synthesizes the whole app: build every stack first.
    return [Template.from_stack(stack).to_json() for stack in stacks]


def test_instance_type_change_procedure_step_one_leaves_the_endpoint_alone() -> None:
    """`autoscaling.enabled = false` deregisters the variant and changes nothing else.

    UpdateEndpoint refuses an instance-type change while the variant is registered with
    Application Auto Scaling; CloudFormation would deregister a removed target only after
    updating the endpoint. So step one removes the target alone; step two (new instance type,
    autoscaling back on) updates the endpoint first and registers the target after it.
    """
    on, off = _sagemaker_stacks((True, False))
    for kind in ("AWS::SageMaker::Endpoint", "AWS::SageMaker::EndpointConfig"):
        assert only(on, kind) == only(off, kind), kind
    assert not of_type(off, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert not of_type(off, "AWS::ApplicationAutoScaling::ScalingPolicy")
    target_id, target = only(on, "AWS::ApplicationAutoScaling::ScalableTarget")
    endpoint_id, _ = only(on, "AWS::SageMaker::Endpoint")
    assert target["Properties"]["ResourceId"] == (
        "endpoint/inferstack-targets-dense-net-v2/variant/live"
    )
    assert waits_for(dependencies(on), target_id, endpoint_id)


# ------------------------------------------------------------------ 12: teardown and rollback


def test_ecs_resources_delete_in_an_order_that_completes(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    """Service before the capacity provider association, that before the provider and group.

    CloudFormation deletes in reverse dependency order; without the service's dependency on
    the association, the association's delete fails while the service still uses the provider.
    """
    for template in ecs_templates(built, synthesized):
        graph = dependencies(template)
        association, _ = only(template, "AWS::ECS::ClusterCapacityProviderAssociations")
        for service_id in of_type(template, "AWS::ECS::Service"):
            assert waits_for(graph, service_id, association), service_id
        for provider_id, provider in of_type(template, "AWS::ECS::CapacityProvider").items():
            assert waits_for(graph, association, provider_id)
            group = provider["Properties"]["AutoScalingGroupProvider"]["AutoScalingGroupArn"]
            assert waits_for(graph, provider_id, group["Ref"])


def test_no_instance_is_protected_from_the_group_deletion(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    """Scale-in protected instances keep a deleted group waiting; draining replaces it."""
    for template in ecs_templates(built, synthesized):
        for provider in of_type(template, "AWS::ECS::CapacityProvider").values():
            settings = provider["Properties"]["AutoScalingGroupProvider"]
            assert settings["ManagedTerminationProtection"] == "DISABLED"
            assert settings["ManagedDraining"] == "ENABLED"
            assert settings["ManagedScaling"]["Status"] == "ENABLED"
        for group in of_type(template, "AWS::AutoScaling::AutoScalingGroup").values():
            assert group["Properties"].get("NewInstancesProtectedFromScaleIn") in (None, False)


# ------------------------------------------------------------------ 13: the deployment alarm


def _unhealthy_host_alarms(template: dict[str, Any]) -> set[str]:
    return {
        k
        for k, r in of_type(template, "AWS::CloudWatch::Alarm").items()
        if r["Properties"].get("MetricName") in ("UnHealthyHostCount", "HealthyHostCount")
    }


def test_slow_starting_tasks_are_not_rolled_back(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    """Health-based rollback waits out the grace period: no target-health deployment alarm."""
    for template in ecs_templates(built, synthesized):
        watched_by_deploys = {
            json.dumps(name)
            for service in of_type(template, "AWS::ECS::Service").values()
            for name in service["Properties"]["DeploymentConfiguration"]
            .get("Alarms", {})
            .get("AlarmNames", [])
        }
        for alarm in _unhealthy_host_alarms(template):
            assert not any(alarm in name for name in watched_by_deploys), alarm
        for service in of_type(template, "AWS::ECS::Service").values():
            props = service["Properties"]
            assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
                "Enable": True,
                "Rollback": True,
            }
            # Load balancer and container health checks are ignored this long after start.
            assert props["HealthCheckGracePeriodSeconds"] >= 600


def test_ecs_deploys_roll_back_when_the_models_5xx_rate_alarms(built: Built) -> None:
    """Tasks that start but answer errors fail the deployment (the circuit breaker only sees
    tasks that never start): the model's 5xx-rate alarm is the deployment alarm."""
    _, service = only(built.template, "AWS::ECS::Service")
    alarms = service["Properties"]["DeploymentConfiguration"]["Alarms"]
    assert alarms["Enable"] is True
    assert alarms["Rollback"] is True
    assert alarms["AlarmNames"] == [{"Ref": built.rollback_alarm}]


# ------------------------------------------------------------------ 16: Lambda vs the API


def test_functions_behind_the_api_stop_before_it_gives_up(
    built: Built, synthesized: dict[str, Synthesized]
) -> None:
    from infra.config import LAMBDA_TIMEOUT_MARGIN_S

    templates = [built.template, *(env.template.to_json() for env in synthesized.values())]
    for template in templates:
        integration_timeouts = {
            method["Properties"]["Integration"]["TimeoutInMillis"] / 1000
            for method in of_type(template, "AWS::ApiGateway::Method").values()
            if method["Properties"].get("Integration", {}).get("Type") == "AWS_PROXY"
        }
        assert integration_timeouts, "the Lambda models are integrated with a timeout"
        inference = [
            f["Properties"]
            for f in of_type(template, "AWS::Lambda::Function").values()
            if "INFERSTACK_MODEL_NAME"
            in f["Properties"].get("Environment", {}).get("Variables", {})
        ]
        assert inference
        for function in inference:
            assert function["Timeout"] + LAMBDA_TIMEOUT_MARGIN_S <= min(integration_timeouts)


# ------------------------------------------------------------------ 5: model names


def test_model_names_needing_a_mapping_deploy_on_every_target(built: Built) -> None:
    template = built.template
    _, endpoint = only(template, "AWS::SageMaker::Endpoint")
    # SageMaker endpoint names: letters, digits and '-' only (case-insensitive).
    assert endpoint["Properties"]["EndpointName"] == "inferstack-targets-dense-net-v2"
    served = {
        f["Properties"]["Environment"]["Variables"].get("INFERSTACK_MODEL_NAME")
        for f in of_type(template, "AWS::Lambda::Function").values()
        if "Environment" in f["Properties"]
    }
    assert "light_resnet50" in served  # the runtime and the URL keep the name as written
    _, sm_model = only(template, "AWS::SageMaker::Model")
    assert sm_model["Properties"]["PrimaryContainer"]["Environment"]["INFERSTACK_MODEL_NAME"] == (
        "Dense_Net.v2"
    )
    paths = {
        r["Properties"]["PathPart"] for r in of_type(template, "AWS::ApiGateway::Resource").values()
    }
    assert {"light_resnet50", "Dense_Net.v2", "yolo_v8"} <= paths


def test_the_mapped_stack_passes_cfn_lint_and_cdk_nag(built: Built) -> None:
    from aws_cdk.assertions import Annotations, Match
    from cfnlint.api import ManualArgs, lint_file

    from tests.infra.test_checks import KNOWN_WARNINGS

    matches = lint_file(built.template_path, ManualArgs(regions=["us-east-1"]))
    problems = [
        m
        for m in matches
        if m.rule.id.startswith("E")
        or (m.rule.id.startswith("W") and m.rule.id not in KNOWN_WARNINGS)
    ]
    assert not problems, "\n".join(str(m) for m in problems)
    pattern = Match.string_like_regexp("AwsSolutions-.*")
    annotations = Annotations.from_stack(built.stack)
    findings = [
        f"{a.id}: {a.entry.data}"
        for a in (*annotations.find_error("*", pattern), *annotations.find_warning("*", pattern))
    ]
    assert not findings, "\n".join(findings)
