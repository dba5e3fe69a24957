"""The public front door: one regional REST API speaking the Open Inference Protocol.

Every model gets the same routes, wherever it runs:

    GET  /v2/models/<m>                              model metadata
    GET  /v2/models/<m>/ready                        model readiness
    POST /v2/models/<m>/infer                        inference
    GET  /v2/models/<m>/versions/{version}           (Lambda, ECS)
    ANY  /v2/models/<m>/versions/{version}/{proxy+}  (Lambda, ECS)
    POST /v1/models/<m>:predict                      KServe v1 ("wine:predict" is one path part:
                                                     REST APIs accept ":" in path parts)

Server routes: GET /v2/health/live is answered by API Gateway itself (a mock: the front door
is live when it answers, with no cold start for pollers); GET /v2, GET /v2/health/ready and
POST /v2/repository/index go to the *server model* (the first Lambda model, else the first
model), whose runtime answers for itself.

Binary media type "*/*": tritonclient sends binary tensors by default, may gzip a body whose
Content-Type says JSON, and need not send an Accept header. With "*/*" every request body
reaches the target byte for byte (Lambda receives it base64-encoded, `isBase64Encoded`, which
the runtime decodes) and base64 responses from Lambda are returned as binary whatever the
client's Accept. The cost: request mapping templates cannot rewrite bodies (none are used) and
the mock integration converts to text first.

Execution logging (logging level ERROR) needs the account-level API Gateway CloudWatch Logs
role (`aws apigateway update-account ... /cloudwatchRoleArn`), set once per account and region.
This stack does not manage that account-wide singleton (`cloud_watch_role=False`): several
environments share an account and would overwrite each other's setting.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from cdk_nag import NagSuppressions
from constructs import Construct

from infra.config import API_INTEGRATION_TIMEOUT_S, AuthMode, Target
from infra.constructs.common import log_retention, removal_policy, rest_api_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_cdk import aws_elasticloadbalancingv2 as elbv2
    from aws_cdk import aws_lambda as lambda_

    from infra.config import EcsModel, Environment, LambdaModel, Model, SageMakerModel

# What the GPU container receives in X-Amzn-SageMaker-Custom-Attributes: SageMaker only has
# POST /invocations, so the protocol route the client called travels in this header.
SAGEMAKER_ROUTE_ATTRIBUTE = "route={path},method={method}"
INTEGRATION_TIMEOUT = cdk.Duration.seconds(API_INTEGRATION_TIMEOUT_S)
SERVER_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v2"),
    ("GET", "/v2/health/ready"),
    ("POST", "/v2/repository/index"),
)
LIVE_PATH = "/v2/health/live"


def model_routes(name: str, *, versions: bool = True) -> list[tuple[str, str]]:
    """(method, resource path) of every route of one model."""
    base = f"/v2/models/{name}"
    routes = [
        ("GET", base),
        ("GET", f"{base}/ready"),
        ("POST", f"{base}/infer"),
        ("POST", f"/v1/models/{name}:predict"),
    ]
    if versions:
        routes += [
            ("GET", f"{base}/versions/{{version}}"),
            ("ANY", f"{base}/versions/{{version}}/{{proxy+}}"),
        ]
    return routes


class InferenceApi(Construct):
    """The REST API, its stage, access logs, auth and (with API keys) the usage plan."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Environment) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        lambda_models = config.models_on(Target.LAMBDA)
        self._server_model = (lambda_models or config.models)[0].name
        api_key = config.api.auth is AuthMode.API_KEY
        removal = removal_policy(config)

        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal,
        )
        self.rest_api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=rest_api_name(config.name),
            description=f"InferStack {config.name}: Open Inference Protocol (KServe v2)",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            binary_media_types=["*/*"],
            cloud_watch_role=False,
            deploy_options=apigateway.StageOptions(
                stage_name=config.name,
                access_log_destination=apigateway.LogGroupLogDestination(self.access_logs),
                access_log_format=_access_log_format(),
                throttling_rate_limit=config.api.throttle_rate,
                throttling_burst_limit=config.api.throttle_burst,
                metrics_enabled=True,  # per-method metrics: the per-model 5xx/latency alarms
                tracing_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # would log request bodies (model inputs)
            ),
            default_method_options=apigateway.MethodOptions(
                authorization_type=(
                    apigateway.AuthorizationType.NONE
                    if api_key
                    else apigateway.AuthorizationType.IAM
                ),
                api_key_required=api_key,
            ),
        )
        self.stage = self.rest_api.deployment_stage
        self.url: str = self.rest_api.url
        self._validator = self.rest_api.add_request_validator(
            "ParameterValidator", validate_request_parameters=True, validate_request_body=False
        )
        self._protocol_errors()
        self._live()
        self.usage_plan: apigateway.UsagePlan | None = None
        self.api_key: apigateway.IApiKey | None = None
        if api_key:
            self._usage_plan()
        self._vpc_links: dict[str, apigateway.VpcLink] = {}
        self._suppress_api()

    # -- targets ---------------------------------------------------------------------------

    def add_lambda_model(self, model: LambdaModel, alias: lambda_.IFunction) -> None:
        """Proxy every route of the model to the alias (invoke granted per method)."""
        integration = apigateway.LambdaIntegration(
            alias, proxy=True, allow_test_invoke=False, timeout=INTEGRATION_TIMEOUT
        )
        self._add_routes(model, lambda _method, _path: (integration, {}), versions=True)

    def add_sagemaker_model(self, model: SageMakerModel, endpoint_name: str) -> None:
        """InvokeEndpoint through an AWS integration; the route travels in a header."""
        role = iam.Role(
            self,
            f"SageMakerInvoke-{model.name}",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description=f"API Gateway invokes the SageMaker endpoint of {model.name}",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint"],
                resources=[_endpoint_arn(self, endpoint_name)],
            )
        )

        def integrate(method: str, path: str) -> tuple[apigateway.Integration, dict[str, object]]:
            route = SAGEMAKER_ROUTE_ATTRIBUTE.format(path=path, method=method)
            integration = apigateway.AwsIntegration(
                service="runtime.sagemaker",
                path=f"endpoints/{endpoint_name}/invocations",
                integration_http_method="POST",
                options=apigateway.IntegrationOptions(
                    credentials_role=role,
                    passthrough_behavior=apigateway.PassthroughBehavior.WHEN_NO_TEMPLATES,
                    timeout=INTEGRATION_TIMEOUT,
                    request_parameters={
                        "integration.request.header.Content-Type": (
                            "method.request.header.Content-Type"
                        ),
                        "integration.request.header.Accept": "method.request.header.Accept",
                        "integration.request.header.X-Amzn-SageMaker-Custom-Attributes": (
                            f"'{route}'"
                        ),
                    },
                    integration_responses=_SAGEMAKER_RESPONSES,
                ),
            )
            options: dict[str, object] = {
                "request_parameters": {
                    "method.request.header.Content-Type": False,
                    "method.request.header.Accept": False,
                },
                "method_responses": _SAGEMAKER_METHOD_RESPONSES,
            }
            return integration, options

        # InvokeEndpoint has no path: a version in the URL could not reach the container.
        self._add_routes(model, integrate, versions=False)

    def add_ecs_model(
        self, model: EcsModel, load_balancer: elbv2.INetworkLoadBalancer, listener_port: int
    ) -> None:
        """HTTP proxy through a VPC link (one per load balancer) to the service's NLB."""
        key = load_balancer.node.path
        if key not in self._vpc_links:
            self._vpc_links[key] = apigateway.VpcLink(
                self,
                f"VpcLink-{model.name}",
                targets=[load_balancer],
                description=f"InferStack {self.config.name}: API Gateway to {model.name}",
            )
        vpc_link = self._vpc_links[key]
        origin = f"http://{load_balancer.load_balancer_dns_name}:{listener_port}"

        def integrate(method: str, path: str) -> tuple[apigateway.Integration, dict[str, object]]:
            params = _path_parameters(path)
            integration = apigateway.HttpIntegration(
                origin + path.replace("+}", "}"),
                http_method=method,
                proxy=True,
                options=apigateway.IntegrationOptions(
                    connection_type=apigateway.ConnectionType.VPC_LINK,
                    vpc_link=vpc_link,
                    timeout=INTEGRATION_TIMEOUT,
                    request_parameters={
                        f"integration.request.path.{p}": f"method.request.path.{p}" for p in params
                    }
                    or None,
                ),
            )
            options: dict[str, object] = {}
            if params:
                options["request_parameters"] = {f"method.request.path.{p}": True for p in params}
            return integration, options

        self._add_routes(model, integrate, versions=True)

    # -- internals -------------------------------------------------------------------------

    def _add_routes(
        self,
        model: Model,
        integrate: Callable[[str, str], tuple[apigateway.Integration, dict[str, object]]],
        *,
        versions: bool,
    ) -> None:
        routes = model_routes(model.name, versions=versions)
        if model.name == self._server_model:
            routes += list(SERVER_ROUTES)
        for method, path in routes:
            integration, options = integrate(method, path)
            self._add_method(path, method, integration, **options)

    def _live(self) -> None:
        """GET /v2/health/live answered by API Gateway: 200 {"live": true}."""
        json_type = "'application/json'"
        self._add_method(
            LIVE_PATH,
            "GET",
            apigateway.MockIntegration(
                # "*/*" makes every request binary; the template needs text.
                content_handling=apigateway.ContentHandling.CONVERT_TO_TEXT,
                passthrough_behavior=apigateway.PassthroughBehavior.NEVER,
                request_templates={"application/json": '{"statusCode": 200}'},
                integration_responses=[
                    apigateway.IntegrationResponse(
                        status_code="200",
                        content_handling=apigateway.ContentHandling.CONVERT_TO_TEXT,
                        response_templates={"application/json": '{"live": true}'},
                        response_parameters={"method.response.header.Content-Type": json_type},
                    )
                ],
            ),
            method_responses=[
                apigateway.MethodResponse(
                    status_code="200",
                    response_parameters={"method.response.header.Content-Type": True},
                )
            ],
        )

    def _protocol_errors(self) -> None:
        """API Gateway's own errors in the protocol's shape: {"error": "<msg>"}."""
        template = {"application/json": '{"error": $context.error.messageString}'}
        for response_type in (
            apigateway.ResponseType.DEFAULT_4_XX,
            apigateway.ResponseType.DEFAULT_5_XX,
        ):
            self.rest_api.add_gateway_response(
                f"Protocol{response_type.response_type}", type=response_type, templates=template
            )

    def _usage_plan(self) -> None:
        quota = self.config.api.quota
        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            description=f"InferStack {self.config.name}: per-key throttle and quota",
            throttle=apigateway.ThrottleSettings(
                rate_limit=self.config.api.throttle_rate,
                burst_limit=self.config.api.throttle_burst,
            ),
            quota=(
                apigateway.QuotaSettings(limit=quota.limit, period=apigateway.Period[quota.period])
                if quota
                else None
            ),
            api_stages=[apigateway.UsagePlanPerApiStage(api=self.rest_api, stage=self.stage)],
        )
        # No value given: API Gateway generates the key (read it with get-api-key --include-value).
        self.api_key = apigateway.ApiKey(
            self, "ApiKey", description=f"InferStack {self.config.name} client key"
        )
        self.usage_plan.add_api_key(self.api_key)

    def _suppress_api(self) -> None:
        NagSuppressions.add_resource_suppressions(
            self.rest_api,
            [
                {
                    "id": "AwsSolutions-APIG2",
                    "reason": "Bodies are binary tensors or JSON validated by the runtime's "
                    "protocol codec; the gateway validates parameters only (no body models).",
                },
                {
                    "id": "AwsSolutions-APIG3",
                    "reason": "Callers are authenticated (SigV4 or API keys) and throttled per "
                    "stage and key; a WAF web ACL is an account-level choice of the operator.",
                },
            ],
            apply_to_children=True,  # APIG3 is reported on the stage
        )

    def _add_method(
        self, path: str, http_method: str, integration: apigateway.Integration, **options: Any
    ) -> None:
        method = self.rest_api.root.resource_for_path(path).add_method(
            http_method, integration, request_validator=self._validator, **options
        )
        findings = [
            {
                "id": "AwsSolutions-COG4",
                "reason": "Machine clients (tritonclient, SDKs) authenticate with IAM SigV4 or "
                "API keys; there are no end users for a Cognito user pool.",
            }
        ]
        if self.config.api.auth is AuthMode.API_KEY:
            findings.append(
                {
                    "id": "AwsSolutions-APIG4",
                    "reason": "This environment authenticates callers with API keys bound to a "
                    "usage plan (config api.auth = 'api_key') instead of an authorizer.",
                }
            )
        NagSuppressions.add_resource_suppressions(method, findings)


_CONTENT_TYPE = {"method.response.header.Content-Type": "integration.response.header.Content-Type"}
_JSON_TYPE = {"method.response.header.Content-Type": "'application/json'"}

# InvokeEndpoint's errors (botocore's sagemaker-runtime model; PROTOCOLS.md section 2) as a
# client of the Open Inference Protocol must see them. Mapping templates override the status
# (API Gateway docs, "Override your API's request and response parameters and status codes":
# https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-override-request-response-parameters.html;
# template reference: https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-mapping-template-reference.html).
# The API's binary media type "*/*" makes every integration response binary, and
# CONVERT_TO_TEXT hands a template the body base64-encoded ("Content type conversions in API
# Gateway": https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-payload-encodings-workflow.html),
# so each template decodes it unless it already reads as JSON.
_DECODE_BODY = """#set($raw = $input.body)
#if(!$raw.startsWith('{'))#set($raw = $util.base64Decode($raw))#end
#if($raw.length() == 0)#set($raw = '{}')#end
#set($err = $util.parseJson($raw))
"""
# 424 ModelError: the container answered non-2xx. Its status is OriginalStatusCode, its body
# (the runtime's {"error": ...}) OriginalMessage. Message and LogStreamArn name the account and
# log group: never sent. No status (a container that timed out or died reports 0) is a 502.
MODEL_ERROR_TEMPLATE = (
    _DECODE_BODY
    + """#set($status = "$!err.OriginalStatusCode")
#set($message = "$!err.OriginalMessage")
#if($status.matches('[45][0-9][0-9]'))
#set($context.responseOverride.status = $err.OriginalStatusCode)
#if($message.startsWith('{'))$message#else{"error": "the model failed with status $status"}#end
#else
#set($context.responseOverride.status = 502)
{"error": "the model did not answer"}
#end"""
)
# 400 is ValidationError (an invalid InvokeEndpoint call, e.g. a body over SageMaker's 6 MB)
# and also ThrottlingException, a common error answered with 400 (SageMaker API Reference,
# "Common Errors": https://docs.aws.amazon.com/sagemaker/latest/APIReference/CommonErrors.html).
# Throttling reaches clients as 429, the status they retry on; the error type is in the body's
# __type (or code) and "Rate exceeded" message of AWS's JSON errors.
VALIDATION_OR_THROTTLING_TEMPLATE = (
    _DECODE_BODY
    + """#set($type = "$!err.get('__type') $!err.get('code')")
#set($kind = "$type $!err.get('message') $!err.get('Message')")
#if($kind.contains('Throttling') || $kind.contains('Rate exceeded'))
#set($context.responseOverride.status = 429)
{"error": "the model endpoint is throttling requests: retry with backoff"}
#else
{"error": "the model endpoint rejected the request (is the body over 6 MB?)"}
#end"""
)


def _error_response(status: str, pattern: str, template: str) -> apigateway.IntegrationResponse:
    return apigateway.IntegrationResponse(
        status_code=status,
        selection_pattern=pattern,
        content_handling=apigateway.ContentHandling.CONVERT_TO_TEXT,
        response_templates={"application/json": template},
        response_parameters=_JSON_TYPE,
    )


def _static(message: str) -> str:
    return json.dumps({"error": message})


# Selection patterns match InvokeEndpoint's status code; none overlap (API Gateway's choice
# among several matching patterns is unspecified).
# A binary answer's JSON length comes back in the container's custom attributes (InvokeEndpoint
# returns them verbatim: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html)
# and becomes the binary extension's header again for tritonclient (layers/inferstack/sagemaker.py).
_BINARY_HEADER_LENGTH = "method.response.header.Inference-Header-Content-Length"
_SAGEMAKER_RESPONSES = [
    apigateway.IntegrationResponse(
        status_code="200",
        response_parameters={
            **_CONTENT_TYPE,
            _BINARY_HEADER_LENGTH: "integration.response.header.X-Amzn-SageMaker-Custom-Attributes",
        },
    ),
    _error_response("502", "424", MODEL_ERROR_TEMPLATE),
    _error_response("400", "400", VALIDATION_OR_THROTTLING_TEMPLATE),
    # ModelNotReadyException (serverless and multi-model endpoints).
    _error_response("429", "429", _static("the model is not ready: retry with backoff")),
    # 401/403/404...: the integration's role or endpoint is wrong, not the client's request.
    _error_response(
        "502", r"4(0[1-9]|1\d|2[0-35-8]|[3-9]\d)", _static("the model endpoint call failed")
    ),
    _error_response("503", "503", _static("the model endpoint is unavailable: retry")),
    _error_response("502", r"5(0[0-24-9]|[1-9]\d)", _static("the model endpoint failed")),
]
# Every status a client can see, overrides included (the container's own error statuses).
SAGEMAKER_STATUSES = (
    "200",
    "400",
    "404",
    "405",
    "413",
    "415",
    "422",
    "429",
    "500",
    "501",
    "502",
    "503",
    "504",
)
_SAGEMAKER_METHOD_RESPONSES = [
    apigateway.MethodResponse(
        status_code=status,
        response_parameters={
            "method.response.header.Content-Type": True,
            **({_BINARY_HEADER_LENGTH: False} if status == "200" else {}),
        },
    )
    for status in SAGEMAKER_STATUSES
]


def _endpoint_arn(scope: Construct, endpoint_name: str) -> str:
    # SageMaker ARNs carry the endpoint name in lower case; IAM compares ARNs case-sensitively.
    name = endpoint_name if cdk.Token.is_unresolved(endpoint_name) else endpoint_name.lower()
    return cdk.Stack.of(scope).format_arn(
        service="sagemaker", resource="endpoint", resource_name=name
    )


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1].rstrip("+") for part in path.split("/") if part.startswith("{")]


def _access_log_format() -> apigateway.AccessLogFormat:
    """JSON, one object a request: who called what, how it ended, how long each leg took."""
    field = apigateway.AccessLogField
    fields = {
        "requestId": field.context_request_id(),
        "extendedRequestId": field.context_extended_request_id(),
        "requestTime": field.context_request_time(),
        "ip": field.context_identity_source_ip(),
        "caller": field.context_identity_caller(),
        "userArn": field.context_identity_user_arn(),
        "apiKeyId": field.context_identity_api_key_id(),
        "httpMethod": field.context_http_method(),
        "resourcePath": field.context_resource_path(),
        "path": field.context_path(),
        "protocol": field.context_protocol(),
        "status": field.context_status(),
        "responseLength": field.context_response_length(),
        "responseLatency": field.context_response_latency(),
        "integrationStatus": field.context_integration_status(),
        "integrationLatency": field.context_integration_latency(),
        "integrationError": field.context_integration_error_message(),
        "errorMessage": field.context_error_message(),
        "xrayTraceId": field.context_xray_trace_id(),
    }
    return apigateway.AccessLogFormat.custom(json.dumps(fields))
