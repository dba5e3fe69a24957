"""InferenceApi and Monitoring: isolated stacks (one small app) plus every real environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from infra.config import Environment

if TYPE_CHECKING:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from tests.infra.conftest import Synthesized

ENDPOINT = "inferstack-resnet-endpoint"


def _config(**overrides: Any) -> Environment:
    raw: dict[str, Any] = {
        "name": "test",
        "alarms": {"email": "oncall@example.com"},
        "models": [
            {"name": "wine", "target": "lambda"},
            {
                "name": "resnet",
                "target": "sagemaker",
                "instance_type": "ml.g5.xlarge",
                "alarms": {"p99_latency_ms": 250, "error_rate_percent": 2},
            },
            {
                "name": "dense",
                "target": "ecs",
                "instance_type": "g5.xlarge",
            },
        ],
    }
    raw.update(overrides)
    return Environment.model_validate(raw)


@dataclass
class Built:
    stack: cdk.Stack
    template: Template
    api: Any
    monitoring: Any


@dataclass
class Isolated:
    iam: Built  # IAM auth, one model on each target, with monitoring
    keys: Built  # API keys with a quota, one Lambda model


@pytest.fixture(scope="module")
def isolated() -> Isolated:
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_elasticloadbalancingv2 as elbv2
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from infra.constructs.api import InferenceApi
    from infra.constructs.monitoring import Monitoring

    app = cdk.App()
    env = cdk.Environment(account="123456789012", region="us-east-1")

    def lambda_target(stack: cdk.Stack) -> tuple[lambda_.Function, lambda_.Alias]:
        function = lambda_.Function(
            stack,
            "Fn",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="index.handler",
            code=lambda_.Code.from_inline("def handler(event, context):\n    return {}\n"),
        )
        alias = lambda_.Alias(stack, "Live", alias_name="live", version=function.current_version)
        return function, alias

    config = _config()
    stack = cdk.Stack(app, "Test", env=env)
    function, alias = lambda_target(stack)
    vpc = ec2.Vpc(
        stack,
        "Vpc",
        max_azs=2,
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        ],
    )
    nlb = elbv2.NetworkLoadBalancer(stack, "Nlb", vpc=vpc, internet_facing=False)
    cluster = ecs.Cluster(stack, "Cluster", vpc=vpc)
    task = ecs.FargateTaskDefinition(stack, "Task")
    task.add_container("app", image=ecs.ContainerImage.from_registry("example/app:1"))
    service = ecs.FargateService(stack, "Service", cluster=cluster, task_definition=task)

    monitoring = Monitoring(stack, "Monitoring", config=config)
    api = InferenceApi(stack, "Api", config=config)
    wine, resnet, dense = config.models
    api.add_lambda_model(wine, alias)
    api.add_sagemaker_model(resnet, ENDPOINT)
    api.add_ecs_model(dense, nlb, 8080)
    monitoring.watch_function("promoter", function)
    monitoring.add_lambda_model(wine, function, alias)
    monitoring.add_sagemaker_model(resnet, ENDPOINT, "AllTraffic")
    monitoring.add_ecs_model(dense, service, nlb)
    for model in config.models:
        monitoring.add_drift_alarm(model)
    monitoring.add_promotion_alarm()

    keys_config = _config(
        name="keyed",
        api={"auth": "api_key", "throttle_rate": 5, "throttle_burst": 10, "quota": {"limit": 1000}},
        models=[config.models[0].model_dump(mode="json")],
    )
    keys_stack = cdk.Stack(app, "Keys", env=env)
    _, keys_alias = lambda_target(keys_stack)
    keys_api = InferenceApi(keys_stack, "Api", config=keys_config)
    keys_api.add_lambda_model(keys_config.models[0], keys_alias)

    cdk.Aspects.of(app).add(AwsSolutionsChecks())
    app.synth()
    return Isolated(
        iam=Built(stack, Template.from_stack(stack), api, monitoring),
        keys=Built(keys_stack, Template.from_stack(keys_stack), keys_api, None),
    )


def _methods(template: Template) -> dict[str, dict[str, Any]]:
    return template.find_resources("AWS::ApiGateway::Method")


def _resource_paths(template: Template) -> set[str]:
    """Every resource's full path, rebuilt from the PathPart/ParentId chain."""
    resources = template.find_resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            parent_id = parent.get("Ref") if isinstance(parent, dict) else None
            prefix = path_of(parent_id) if parent_id in resources else ""
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    return {path_of(logical_id) for logical_id in resources}


def _resolve(stack: cdk.Stack, value: object) -> str:
    return json.dumps(stack.resolve(value))


# -- the API -----------------------------------------------------------------------------------


def test_every_method_requires_iam(isolated: Isolated) -> None:
    methods = _methods(isolated.iam.template)
    assert methods
    assert {m["Properties"]["AuthorizationType"] for m in methods.values()} == {"AWS_IAM"}


def test_api_keys_on_every_method_and_usage_plan(isolated: Isolated) -> None:
    from aws_cdk.assertions import Match

    template = isolated.keys.template
    assert all(m["Properties"].get("ApiKeyRequired") for m in _methods(template).values())
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Quota": {"Limit": 1000, "Period": "MONTH"},
            "Throttle": {"RateLimit": 5, "BurstLimit": 10},
            "ApiStages": [Match.object_like({"Stage": Match.any_value()})],
        },
    )
    keys = template.find_resources("AWS::ApiGateway::ApiKey")
    assert keys and all("Value" not in k["Properties"] for k in keys.values())
    template.has_resource_properties("AWS::ApiGateway::UsagePlanKey", {"KeyType": "API_KEY"})
    assert isolated.keys.api.api_key is not None and isolated.iam.api.usage_plan is None


def test_stage_throttling_logging_and_metrics(isolated: Isolated) -> None:
    from aws_cdk.assertions import Capture, Match

    template = isolated.iam.template
    log_format = Capture()
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "test",
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": log_format},
            "MethodSettings": [
                Match.object_like(
                    {
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                        "ThrottlingRateLimit": 100,
                        "ThrottlingBurstLimit": 200,
                        "MetricsEnabled": True,
                        "LoggingLevel": "ERROR",
                        "DataTraceEnabled": False,
                    }
                )
            ],
        },
    )
    fields = json.loads(log_format.as_string())
    assert fields["status"] == "$context.status"
    assert fields["integrationLatency"] == "$context.integrationLatency"
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_binary_media_types_pass_every_body_through(isolated: Isolated) -> None:
    isolated.iam.template.has_resource_properties(
        "AWS::ApiGateway::RestApi",
        {"BinaryMediaTypes": ["*/*"], "EndpointConfiguration": {"Types": ["REGIONAL"]}},
    )


def test_protocol_routes_exist_for_every_target(isolated: Isolated) -> None:
    paths = _resource_paths(isolated.iam.template)
    for name in ("wine", "resnet", "dense"):
        assert {f"/v2/models/{name}/infer", f"/v2/models/{name}/ready"} <= paths
        assert f"/v1/models/{name}:predict" in paths
    assert "/v2/models/wine/versions/{version}/{proxy+}" in paths
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/repository/index"} <= paths


def test_liveness_is_answered_by_api_gateway(isolated: Isolated) -> None:
    from aws_cdk.assertions import Match

    isolated.iam.template.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "GET",
            "Integration": Match.object_like(
                {
                    "Type": "MOCK",
                    "IntegrationResponses": [
                        Match.object_like(
                            {"ResponseTemplates": {"application/json": '{"live": true}'}}
                        )
                    ],
                }
            ),
        },
    )


def test_gateway_errors_use_the_protocol_error_body(isolated: Isolated) -> None:
    isolated.iam.template.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse",
        {
            "ResponseType": "DEFAULT_5XX",
            "ResponseTemplates": {"application/json": '{"error": $context.error.messageString}'},
        },
    )


def test_lambda_permission_is_for_the_alias_only(isolated: Isolated) -> None:
    built = isolated.iam
    permissions = built.template.find_resources("AWS::Lambda::Permission")
    assert permissions
    for permission in permissions.values():
        target = _resolve(built.stack, permission["Properties"]["FunctionName"])
        assert "Live" in target, target  # the alias, never the unqualified function
        assert "test-invoke-stage" not in _resolve(built.stack, permission["Properties"])


def test_sagemaker_integration_is_scoped_to_the_endpoint(isolated: Isolated) -> None:
    from aws_cdk.assertions import Capture, Match

    template = isolated.iam.template
    uri = Capture()
    template.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "POST",
            "Integration": Match.object_like(
                {
                    "Type": "AWS",
                    "IntegrationHttpMethod": "POST",
                    "Uri": uri,
                    "Credentials": Match.any_value(),
                    "PassthroughBehavior": "WHEN_NO_TEMPLATES",
                    "TimeoutInMillis": 29000,
                    "RequestParameters": Match.object_like(
                        {
                            "integration.request.header.X-Amzn-SageMaker-Custom-Attributes": (
                                "'route=/v2/models/resnet/infer,method=POST'"
                            ),
                            "integration.request.header.Content-Type": (
                                "method.request.header.Content-Type"
                            ),
                        }
                    ),
                    # ModelError: the container's status and body (test_sagemaker_error_mapping).
                    "IntegrationResponses": Match.array_with(
                        [Match.object_like({"StatusCode": "502", "SelectionPattern": "424"})]
                    ),
                }
            ),
        },
    )
    assert f"runtime.sagemaker:path/endpoints/{ENDPOINT}/invocations" in json.dumps(uri.as_object())
    policy = Capture()
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    Match.object_like({"Action": "sagemaker:InvokeEndpoint", "Resource": policy})
                ]
            }
        },
    )
    assert f":endpoint/{ENDPOINT}" in json.dumps(policy.as_object())


def test_ecs_routes_go_through_a_vpc_link(isolated: Isolated) -> None:
    from aws_cdk.assertions import Capture, Match

    template = isolated.iam.template
    template.has_resource_properties(
        "AWS::ApiGateway::VpcLink", {"TargetArns": [Match.object_like({"Ref": Match.any_value()})]}
    )
    uri = Capture()
    template.has_resource_properties(
        "AWS::ApiGateway::Method",
        {
            "HttpMethod": "ANY",
            "RequestParameters": {
                "method.request.path.version": True,
                "method.request.path.proxy": True,
            },
            "Integration": Match.object_like(
                {
                    "Type": "HTTP_PROXY",
                    "ConnectionType": "VPC_LINK",
                    "ConnectionId": Match.any_value(),
                    "Uri": uri,
                    "RequestParameters": {
                        "integration.request.path.version": "method.request.path.version",
                        "integration.request.path.proxy": "method.request.path.proxy",
                    },
                }
            ),
        },
    )
    assert ":8080/v2/models/dense/versions/{version}/{proxy}" in json.dumps(uri.as_object())


def test_no_unsuppressed_nag_findings(isolated: Isolated) -> None:
    from aws_cdk.assertions import Annotations, Match

    for built in (isolated.iam, isolated.keys):
        annotations = Annotations.from_stack(built.stack)
        pattern = Match.string_like_regexp("AwsSolutions-")
        found = annotations.find_error("*", pattern) + annotations.find_warning("*", pattern)
        ours = [
            f"{e.id}: {e.entry.data}"
            for e in found
            if e.id.startswith(
                (f"/{built.stack.stack_name}/Api/", f"/{built.stack.stack_name}/Monitoring/")
            )
        ]
        assert ours == []


# -- monitoring --------------------------------------------------------------------------------


def test_topic_is_encrypted_and_cloudwatch_may_use_the_key(isolated: Isolated) -> None:
    from aws_cdk.assertions import Match

    template = isolated.iam.template
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.object_like({"Fn::GetAtt": Match.any_value()})}
    )
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            }
                        )
                    ]
                )
            },
        },
    )
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"}
    )


def _alarms(built: Built) -> list[dict[str, Any]]:
    return [
        a["Properties"] for a in built.template.find_resources("AWS::CloudWatch::Alarm").values()
    ]


def _metric_names(alarm: dict[str, Any]) -> set[str]:
    if "MetricName" in alarm:
        return {alarm["MetricName"]}
    return {
        q["MetricStat"]["Metric"]["MetricName"]
        for q in alarm.get("Metrics", [])
        if "MetricStat" in q
    }


def _alarm_for(built: Built, metric: str, text: str) -> dict[str, Any]:
    found = [
        a
        for a in _alarms(built)
        if metric in _metric_names(a) and text in _resolve(built.stack, a["AlarmDescription"])
    ]
    assert len(found) == 1, f"{metric} / {text}: {len(found)} alarms"
    return found[0]


def test_every_alarm_notifies_the_topic(isolated: Isolated) -> None:
    built = isolated.iam
    topic = built.stack.resolve(built.monitoring.topic.topic_arn)
    alarms = _alarms(built)
    assert len(alarms) == len(built.monitoring.alarms)
    for alarm in alarms:
        assert alarm["AlarmActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"


def test_request_alarms_per_model(isolated: Isolated) -> None:
    built = isolated.iam
    for name in ("wine", "resnet", "dense"):
        rate = _alarm_for(built, "5XXError", f"{name}: 5xx")
        assert "Count" in _metric_names(rate)
        latency = _alarm_for(built, "Latency", f"{name}: p99")
        assert latency["ExtendedStatistic"] == "p99"
        dims = {d["Name"]: d["Value"] for d in latency["Dimensions"]}
        assert dims == {
            "ApiName": "inferstack-test",
            "Stage": "test",
            "Resource": f"/v2/models/{name}/infer",
            "Method": "POST",
        }
    # SageMaker: the model's own 5xx count too (statuses reach clients through an override).
    assert "Invocation5XXErrors" in _metric_names(_alarm_for(built, "5XXError", "resnet: 5xx"))
    assert "Invocation5XXErrors" not in _metric_names(_alarm_for(built, "5XXError", "wine: 5xx"))
    resnet = _alarm_for(built, "Latency", "resnet: p99")
    assert resnet["Threshold"] == 250
    assert _alarm_for(built, "5XXError", "resnet: 5xx")["Threshold"] == 2


def test_lambda_throttle_drift_and_promotion_alarms(isolated: Isolated) -> None:
    built = isolated.iam
    throttles = _alarm_for(built, "Throttles", "wine: Lambda throttles")
    assert throttles["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert ":live" in _resolve(built.stack, throttles["Dimensions"])  # the alias's metric
    for model in ("wine", "resnet", "dense"):
        drift = _alarm_for(built, "DriftScore", f"{model}: drift")
        assert drift["Threshold"] == 1.0 and drift["Statistic"] == "Maximum"
        assert {"Name": "model", "Value": model} in drift["Dimensions"]
    for model in ("wine", "resnet", "dense"):
        promotion = _alarm_for(built, "PromotionFailures", f"{model}: a new version was rejected")
        assert promotion["Threshold"] == 1
        assert {"Name": "model", "Value": model} in promotion["Dimensions"]
    unattributed = _alarm_for(built, "PromotionFailures", "matched no configured model")
    assert {(d["Name"], d["Value"]) for d in unattributed["Dimensions"]} == {
        ("environment", "test"),
        ("service", "inferstack"),
    }
    # GPU models: the runtime's throttled (429) errors, dimensions without a version.
    for model in ("resnet", "dense"):
        rejected = _alarm_for(built, "Errors", f"{model}: >= 1 requests throttled")
        assert {"Name": "ErrorClass", "Value": "Throttled"} in rejected["Dimensions"]
    assert _alarm_for(built, "Errors", "promoter failed")["Threshold"] == 1


def test_dashboard_shows_latency_cold_starts_and_gpu(isolated: Isolated) -> None:
    built = isolated.iam
    dashboards = built.template.find_resources("AWS::CloudWatch::Dashboard")
    (dashboard,) = dashboards.values()
    body = _resolve(built.stack, dashboard["Properties"]["DashboardBody"])
    for expected in ("p99", "ColdStart", "GPUUtilization", "ModelLatency", "DriftScore"):
        assert expected in body, expected
    # Cold starts come from the runtime's EMF metric, across model versions.
    assert "SEARCH('{InferStack,environment,model,model_version,service}" in body


# -- every environment -------------------------------------------------------------------------


def test_environment_stage_is_named_after_it(env: Synthesized) -> None:
    env.template.has_resource_properties(
        "AWS::ApiGateway::Stage", {"StageName": env.config.name, "TracingEnabled": True}
    )


def test_environment_auth_follows_config(env: Synthesized) -> None:
    methods = _methods(env.template).values()
    if env.config.name == "staging":
        assert all(m["Properties"].get("ApiKeyRequired") for m in methods)
        env.template.has_resource_properties(
            "AWS::ApiGateway::UsagePlan", {"Quota": {"Limit": 1000000, "Period": "MONTH"}}
        )
    else:
        assert {m["Properties"]["AuthorizationType"] for m in methods} == {"AWS_IAM"}


def test_environment_routes_every_model(env: Synthesized) -> None:
    paths = _resource_paths(env.template)
    for model in env.config.models:
        assert f"/v2/models/{model.name}/infer" in paths
        assert f"/v1/models/{model.name}:predict" in paths
    assert "/v2/health/live" in paths


def test_environment_alarms_every_model(env: Synthesized) -> None:
    alarms = env.template.find_resources("AWS::CloudWatch::Alarm")
    text = json.dumps(alarms)
    for model in env.config.models:
        assert f"/v2/models/{model.name}/infer" in text
        assert f'"Value": "{model.name}"' in text  # the drift alarm's model dimension
    for model in env.config.models:
        # 5xx rate, p99 latency, throttles, drift and failed promotions, for every model.
        for alarm in ("5xxRate", "P99Latency", "Throttles", "Drift", "PromotionFailures"):
            assert any(
                key.startswith(f"Monitoring{model.name}{alarm}")
                or f"{model.name}-{alarm}" in json.dumps(res)
                for key, res in alarms.items()
            ), (model.name, alarm)
