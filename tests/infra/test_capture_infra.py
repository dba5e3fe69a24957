"""The synthesized capture path: every serving log group that captures is subscribed to a
Firehose stream writing capture/<model>/yyyy/MM/dd/HH/; SageMaker captures with DataCapture
at the model's rate; the hosts get the rate they sample at; 0 turns capture off everywhere."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.names import ENV_CAPTURE_RATE, ENV_MODEL_NAME
from infra.config import ConfigError, Environment, Target, load_environment
from infra.constructs.capture import CAPTURE_FILTER_PATTERN

if TYPE_CHECKING:
    from pathlib import Path

    from tests.infra.conftest import Synthesized

Resources = dict[str, dict[str, Any]]


def _resources(template: dict[str, Any], kind: str) -> Resources:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _streams_by_log_group(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """log group logical id -> the Firehose stream its capture subscription feeds."""
    streams = _resources(template, "AWS::KinesisFirehose::DeliveryStream")
    found = {}
    for sub in _resources(template, "AWS::Logs::SubscriptionFilter").values():
        props = sub["Properties"]
        assert props["FilterPattern"] == CAPTURE_FILTER_PATTERN
        stream_id = props["DestinationArn"]["Fn::GetAtt"][0]
        found[props["LogGroupName"]["Ref"]] = streams[stream_id]
    return found


def _assert_delivers_to_capture_prefix(stream: dict[str, Any], model: str, template: Any) -> None:
    destination = stream["Properties"]["ExtendedS3DestinationConfiguration"]
    assert destination["Prefix"] == f"capture/{model}/!{{timestamp:yyyy/MM/dd/HH}}/"
    assert not destination["ErrorOutputPrefix"].startswith("capture/")
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["FileExtension"] == ".jsonl.gz"
    processors = destination["ProcessingConfiguration"]["Processors"]
    assert [p["Type"] for p in processors] == [
        "Decompression",
        "CloudWatchLogProcessing",
        "AppendDelimiterToRecord",
    ]
    assert {"ParameterName": "DataMessageExtraction", "ParameterValue": "true"} in processors[1][
        "Parameters"
    ]
    # The delivery role writes this model's capture (and error) prefixes, nothing else.
    role_id = destination["RoleARN"]["Fn::GetAtt"][0]
    policies = [
        p
        for p in _resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    object_resources = [
        json.dumps(resource)
        for policy in policies
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(a).startswith("s3:Put") for a in _list(statement["Action"]))
        for resource in _list(statement["Resource"])
    ]
    assert object_resources
    for resource in object_resources:
        assert f"/capture/{model}/*" in resource or f"/capture-errors/{model}/*" in resource


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_capturing_target_is_wired_to_s3_at_its_rate(env: Synthesized) -> None:
    template = json.loads(env.template_path.read_text())
    streams = _streams_by_log_group(template)
    functions = {
        p["Properties"]["Environment"]["Variables"][ENV_MODEL_NAME]: p["Properties"]
        for p in _resources(template, "AWS::Lambda::Function").values()
        if ENV_MODEL_NAME in p["Properties"].get("Environment", {}).get("Variables", {})
    }
    containers = {}
    for task in _resources(template, "AWS::ECS::TaskDefinition").values():
        for container in task["Properties"]["ContainerDefinitions"]:
            variables = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
            if ENV_MODEL_NAME in variables:
                containers[variables[ENV_MODEL_NAME]] = (variables, container)
    for model in env.config.models_on(Target.LAMBDA):
        props = functions[model.name]
        assert props["Environment"]["Variables"][ENV_CAPTURE_RATE] == f"{model.capture_rate:g}"
        log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
        _assert_delivers_to_capture_prefix(streams[log_group], model.name, template)
    for model in env.config.models_on(Target.ECS):
        variables, container = containers[model.name]
        assert variables[ENV_CAPTURE_RATE] == f"{model.capture_rate:g}"
        options = container["LogConfiguration"]["Options"]
        assert options["mode"] == "non-blocking" and options["max-buffer-size"]
        log_group = options["awslogs-group"]["Ref"]
        _assert_delivers_to_capture_prefix(streams[log_group], model.name, template)
    sagemaker_models = env.config.models_on(Target.SAGEMAKER)
    assert len(streams) == len(functions) + len(containers)
    configs = _resources(template, "AWS::SageMaker::EndpointConfig").values()
    percents = sorted(
        c["Properties"]["DataCaptureConfig"]["InitialSamplingPercentage"] for c in configs
    )
    assert percents == sorted(round(m.capture_rate * 100) for m in sagemaker_models)
    for model in _resources(template, "AWS::SageMaker::Model").values():
        # SageMaker captures itself: its container must not capture a second time.
        assert ENV_CAPTURE_RATE not in model["Properties"]["PrimaryContainer"]["Environment"]


ZERO: dict[str, Any] = {
    "name": "zero",
    "models": [
        {"name": "wine", "target": "lambda", "capture_rate": 0},
        {
            "name": "resnet",
            "target": "sagemaker",
            "instance_type": "ml.g6.xlarge",
            "capture_rate": 0,
        },
        {"name": "dense", "target": "ecs", "instance_type": "g6.xlarge", "capture_rate": 0.3},
    ],
}


@pytest.fixture(scope="module")
def zero_template() -> dict[str, Any]:
    import aws_cdk as cdk

    from infra.app import add_stack, feature_flags

    app = cdk.App(context=feature_flags())
    stack = add_stack(app, Environment.model_validate(ZERO))
    artifact = app.synth().get_stack_artifact(stack.artifact_id)
    return dict(artifact.template)


def test_rate_zero_turns_capture_off_on_every_target(zero_template: dict[str, Any]) -> None:
    [function] = [
        f["Properties"]
        for f in _resources(zero_template, "AWS::Lambda::Function").values()
        if f["Properties"].get("Environment", {}).get("Variables", {}).get(ENV_MODEL_NAME) == "wine"
    ]
    assert function["Environment"]["Variables"][ENV_CAPTURE_RATE] == "0"
    [config] = _resources(zero_template, "AWS::SageMaker::EndpointConfig").values()
    assert "DataCaptureConfig" not in config["Properties"]
    # Only the ECS model (0.3) has a delivery stream; it samples at 0.3.
    streams = _streams_by_log_group(zero_template)
    assert len(streams) == 1
    _assert_delivers_to_capture_prefix(next(iter(streams.values())), "dense", zero_template)


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ('target = "lambda"\ncapture_rate = 1.5', ("capture_rate", "1")),
        ('target = "lambda"\ncapture_rate = -0.1', ("capture_rate", "0")),
        (
            'target = "sagemaker"\ninstance_type = "ml.g6.xlarge"\ncapture_rate = 0.005',
            ("capture_rate", "whole percentage"),
        ),
        ('target = "lambda"\n[models.drift]\nsample_percent = 10', ("capture_rate", "0.1")),
    ],
)
def test_a_bad_capture_rate_is_refused_naming_the_key(
    tmp_path: Path, model: str, words: tuple[str, ...]
) -> None:
    (tmp_path / "bad.toml").write_text(f'[[models]]\nname = "w"\n{model}\n')
    with pytest.raises(ConfigError) as caught:
        load_environment("bad", tmp_path)
    for word in words:
        assert word in str(caught.value)


def test_the_default_rate_is_ten_percent() -> None:
    config = Environment.model_validate(
        {"name": "d1", "models": [{"name": "w", "target": "lambda"}]}
    )
    assert config.models[0].capture_rate == 0.1
