"""The stack serves releases: every target loads its model's live pointer, reads only that
model's releases and artifacts, comes up on an empty bucket, and the CLI finds the promoter
and the targets in SSM. Read from the three synthesized environments (conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.config import ConfigError, Target, load_environment

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

MODEL_ENV = "INFERSTACK_MODEL_NAME"
URI_ENV = "INFERSTACK_MODEL_URI"


# ------------------------------------------------------------------ template helpers


def resources(env: Synthesized, kind: str) -> dict[str, dict[str, Any]]:
    return dict(env.template.find_resources(kind))  # type: ignore[arg-type]


def model_bucket_id(env: Synthesized) -> str:
    (bucket_id,) = (
        logical_id
        for logical_id, bucket in resources(env, "AWS::S3::Bucket").items()
        if bucket["Properties"].get("VersioningConfiguration") == {"Status": "Enabled"}
    )
    return bucket_id


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def target_environments(env: Synthesized) -> dict[str, tuple[str, dict[str, Any]]]:
    """Model name -> (its target, the environment its serving code starts with)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for function in resources(env, "AWS::Lambda::Function").values():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if MODEL_ENV in variables:
            found[variables[MODEL_ENV]] = (Target.LAMBDA.value, variables)
    for model in resources(env, "AWS::SageMaker::Model").values():
        variables = model["Properties"]["PrimaryContainer"]["Environment"]
        found[variables[MODEL_ENV]] = (Target.SAGEMAKER.value, variables)
    for task in resources(env, "AWS::ECS::TaskDefinition").values():
        for container in task["Properties"]["ContainerDefinitions"]:
            variables = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
            if MODEL_ENV in variables:
                found[variables[MODEL_ENV]] = (Target.ECS.value, variables)
    return found


def role_statements(env: Synthesized, role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in resources(env, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def serving_roles(env: Synthesized) -> dict[str, str]:
    """Model name -> the logical id of the role its serving code runs with."""
    roles: dict[str, str] = {}
    for function in resources(env, "AWS::Lambda::Function").values():
        props = function["Properties"]
        name = props.get("Environment", {}).get("Variables", {}).get(MODEL_ENV)
        if name:
            roles[name] = props["Role"]["Fn::GetAtt"][0]
    for model in resources(env, "AWS::SageMaker::Model").values():
        props = model["Properties"]
        name = props["PrimaryContainer"]["Environment"][MODEL_ENV]
        roles[name] = props["ExecutionRoleArn"]["Fn::GetAtt"][0]
    for task in resources(env, "AWS::ECS::TaskDefinition").values():
        props = task["Properties"]
        for container in props["ContainerDefinitions"]:
            variables = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
            if MODEL_ENV in variables:
                roles[variables[MODEL_ENV]] = props["TaskRoleArn"]["Fn::GetAtt"][0]
    return roles


def bucket_keys(bucket_id: str, statement: dict[str, Any]) -> set[str]:
    """The object-key patterns of the model bucket a statement names."""
    arn = {"Fn::GetAtt": [bucket_id, "Arn"]}
    keys = set()
    for resource in as_list(statement["Resource"]):
        parts = resource.get("Fn::Join", ["", []])[1] if isinstance(resource, dict) else []
        if len(parts) == 2 and parts[0] == arn:
            keys.add(parts[1].removeprefix("/"))
    return keys


def promoter(env: Synthesized) -> tuple[str, dict[str, Any]]:
    """The promoter function's logical id and properties (the one given INFERSTACK_TARGETS)."""
    (found,) = (
        (logical_id, props)
        for logical_id, function in resources(env, "AWS::Lambda::Function").items()
        if "INFERSTACK_TARGETS"
        in (props := function["Properties"]).get("Environment", {}).get("Variables", {})
    )
    return found


def promoter_statements(env: Synthesized) -> list[dict[str, Any]]:
    _, props = promoter(env)
    return role_statements(env, props["Role"]["Fn::GetAtt"][0])


def lambda_ids(env: Synthesized) -> dict[str, tuple[str, str]]:
    """Lambda model name -> (function logical id, alias `live` logical id)."""
    functions = {
        function["Properties"]["Environment"]["Variables"][MODEL_ENV]: logical_id
        for logical_id, function in resources(env, "AWS::Lambda::Function").items()
        if MODEL_ENV in function["Properties"].get("Environment", {}).get("Variables", {})
    }
    aliases = {
        alias["Properties"]["FunctionName"]["Ref"]: logical_id
        for logical_id, alias in resources(env, "AWS::Lambda::Alias").items()
    }
    return {name: (fid, aliases[fid]) for name, fid in functions.items()}


def rendered(value: Any) -> str:
    """A CloudFormation string value as text, each deploy-time reference as `<ref>`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(rendered(p) for p in parts)
    return "<ref>"


# ------------------------------------------------------------------ live pointer


def test_every_target_loads_the_live_pointer_of_its_model(env: Synthesized) -> None:
    served = target_environments(env)
    assert {name: target for name, (target, _) in served.items()} == {
        m.name: m.target.value for m in env.config.models
    }
    bucket = {"Ref": model_bucket_id(env)}
    for name, (_, variables) in served.items():
        expected = {"Fn::Join": ["", ["s3://", bucket, f"/releases/{name}/live.json"]]}
        assert variables[URI_ENV] == expected, name


# ------------------------------------------------------------------ read grants


def test_targets_read_only_their_own_releases_and_artifacts(env: Synthesized) -> None:
    bucket_id = model_bucket_id(env)
    roles = serving_roles(env)
    assert set(roles) == {m.name for m in env.config.models}
    targets = {m.name: m.target.value for m in env.config.models}
    for name, role_id in roles.items():
        statements = role_statements(env, role_id)
        readers = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
        read_keys = set().union(*(bucket_keys(bucket_id, s) for s in readers))
        # GPU targets also read (and write) their TensorRT engine cache, engines/<model>/.
        engines = set() if targets[name] == "lambda" else {f"engines/{name}/*"}
        assert read_keys == {f"releases/{name}/*", f"models/{name}/*", *engines}, name
        for statement in readers:
            assert sorted(as_list(statement["Action"])) == ["s3:GetObject", "s3:GetObjectVersion"]
        # The only other bucket access: listing (so a missing live pointer is a 404, not a
        # 403) and, on the GPU targets, writes of sampled traffic to capture/<model>/ and
        # of built engines to engines/<model>/.
        (listing,) = (s for s in statements if "s3:ListBucket" in as_list(s["Action"]))
        assert as_list(listing["Action"]) == ["s3:ListBucket"]
        assert listing["Resource"] == {"Fn::GetAtt": [bucket_id, "Arn"]}
        assert "Condition" not in listing
        writers = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
        written = set().union(*(bucket_keys(bucket_id, s) for s in writers))
        assert written <= {f"capture/{name}/*", *engines}, name


# ------------------------------------------------------------------ promoter


def test_promoter_smoke_invokes_only_the_versions_of_inference_functions(
    env: Synthesized,
) -> None:
    statements = promoter_statements(env)
    invokes = [s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"])]
    resources_invoked = [r for s in invokes for r in as_list(s["Resource"])]
    expected = [
        {"Fn::Join": ["", [{"Fn::GetAtt": [function_id, "Arn"]}, ":*"]]}
        for function_id, _ in lambda_ids(env).values()
    ]
    assert sorted(map(json.dumps, resources_invoked)) == sorted(map(json.dumps, expected))
    assert all(as_list(s["Action"]) == ["lambda:InvokeFunction"] for s in invokes)


def test_promoter_reads_provisioned_concurrency_of_the_aliases_that_have_it(
    env: Synthesized,
) -> None:
    statements = promoter_statements(env)
    readers = [
        s for s in statements if "lambda:GetProvisionedConcurrencyConfig" in as_list(s["Action"])
    ]
    ids = lambda_ids(env)
    expected = [
        {"Ref": ids[m.name][1]}
        for m in env.config.models_on(Target.LAMBDA)
        if getattr(m, "provisioned_concurrency", 0) > 0
    ]
    assert [r for s in readers for r in as_list(s["Resource"])] == expected
    if env.config.name == "prod":
        assert expected, "prod's wine has provisioned concurrency"


def test_promoter_lists_the_bucket(env: Synthesized) -> None:
    # (Its metric reads, for Lambda canaries only: tests/infra/test_canary_infra.py.)
    statements = promoter_statements(env)
    (listing,) = (s for s in statements if "s3:ListBucket" in as_list(s["Action"]))
    assert listing["Resource"] == {"Fn::GetAtt": [model_bucket_id(env), "Arn"]}


# ------------------------------------------------------------------ SSM for the CLI


def parameter(env: Synthesized, name: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = (
        p["Properties"]
        for p in resources(env, "AWS::SSM::Parameter").values()
        if p["Properties"]["Name"] == f"/inferstack/{env.config.name}/{name}"
    )
    return found


def test_ssm_names_the_promoter_function_for_the_cli(env: Synthesized) -> None:
    function_id, _ = promoter(env)
    assert parameter(env, "promoter-function")["Value"] == {"Ref": function_id}
    env.template.has_output("PromoterFunctionName", {"Value": {"Ref": function_id}})


def test_ssm_targets_are_the_promoters_targets_as_json(env: Synthesized) -> None:
    from aws_cdk.assertions import Capture

    _, props = promoter(env)
    targets = props["Environment"]["Variables"]["INFERSTACK_TARGETS"]
    value = parameter(env, "targets")["Value"]
    assert value == targets
    output = Capture()
    env.template.has_output("Targets", {"Value": output})
    assert output.as_object() == targets
    # What the CLI gets once CloudFormation fills in the names: JSON, one entry per model.
    parsed = json.loads(rendered(value))
    assert {name: entry["target"] for name, entry in parsed.items()} == {
        m.name: m.target.value for m in env.config.models
    }
    fields = {"lambda": {"function", "alias"}, "sagemaker": {"endpoint"}, "ecs": {"cluster"}}
    for name, entry in parsed.items():
        assert fields[entry["target"]] <= set(entry), name
        if entry["target"] == "ecs":
            assert "service" in entry
        if entry["target"] == "lambda":
            assert entry["alias"] == "live"
    # The validation gate's per-model size bound, where the configuration sets one.
    bounds = {m.name: m.max_model_mb * 2**20 for m in env.config.models if m.max_model_mb}
    assert {n: e["max_model_bytes"] for n, e in parsed.items() if "max_model_bytes" in e} == bounds
    if env.config.name == "dev":
        assert bounds == {"wine": 64 * 2**20}


def test_ssm_parameter_names_match_the_stack_constants() -> None:
    from inferstack.names import SSM_PROMOTER_FUNCTION, SSM_TARGETS, ssm_parameter_name

    assert ssm_parameter_name("prod", SSM_PROMOTER_FUNCTION) == "/inferstack/prod/promoter-function"
    assert ssm_parameter_name("prod", SSM_TARGETS) == "/inferstack/prod/targets"


# ------------------------------------------------------------------ first deploy


# aws-cdk-lib's own custom resources in these stacks; none reads a model object, so none
# waits for a release (README notes: "What each platform checks on a first deploy").
DEPLOY_TIME_CUSTOM_RESOURCES = {
    "Custom::S3AutoDeleteObjects",  # empties the buckets on delete (non-retained envs)
    "Custom::S3BucketNotifications",  # turns on EventBridge delivery for the bucket
    "Custom::VpcRestrictDefaultSG",  # strips the ECS VPC's default security group
}


def test_no_deploy_step_needs_a_release(env: Synthesized) -> None:
    """Nothing at deploy time reads the bucket's objects: a first deploy on an empty bucket
    creates every target, which then answers 503 "no release yet"."""
    template = json.loads(env.template_path.read_text())
    custom = {
        r["Type"]
        for r in template["Resources"].values()
        if r["Type"].startswith("Custom::") or r["Type"] == "AWS::CloudFormation::CustomResource"
    }
    assert custom <= DEPLOY_TIME_CUSTOM_RESOURCES
    # SageMaker downloads nothing itself (no ModelDataUrl): the container reads the pointer.
    for model in resources(env, "AWS::SageMaker::Model").values():
        assert "ModelDataUrl" not in model["Properties"]["PrimaryContainer"]


def test_gpu_health_checks_use_the_server_up_path_the_container_answers() -> None:
    from inferstack.names import PING_PATH
    from infra.constructs.gpu_serving import SERVER_UP_PATH

    assert SERVER_UP_PATH == PING_PATH


def test_ecs_health_checks_pass_before_the_first_release(env: Synthesized) -> None:
    """The NLB target group asks /ping (200 while the server is up, also with no release
    yet) and the container health check liveness (200 also while an engine builds), not
    /v2/health/ready (503 until a release serves), so the first deployment on an empty
    bucket becomes healthy."""
    if not env.config.models_on(Target.ECS):
        pytest.skip("no ECS model in this environment")
    for group in resources(env, "AWS::ElasticLoadBalancingV2::TargetGroup").values():
        assert group["Properties"]["HealthCheckPath"] == "/ping"
    for task in resources(env, "AWS::ECS::TaskDefinition").values():
        for container in task["Properties"]["ContainerDefinitions"]:
            command = " ".join(container["HealthCheck"]["Command"])
            assert "/v2/health/live'" in command
            assert "/v2/health/ready" not in command


# ------------------------------------------------------------------ configuration


def test_an_old_environment_file_with_artifact_says_where_uploads_go(tmp_path: Path) -> None:
    (tmp_path / "old.toml").write_text(
        '[[models]]\nname = "wine"\ntarget = "lambda"\nartifact = "wine/model.onnx"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_environment("old", tmp_path)
    message = str(caught.value)
    assert "old.toml: models.0: artifact: this key is gone; delete it" in message
    assert "s3://<bucket>/uploads/wine/" in message
    assert "inferstack push wine FILE --env ENV" in message
    assert "Extra inputs are not permitted" not in message
