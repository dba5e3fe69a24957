"""A GPU model on a SageMaker real-time endpoint, with blue/green canary deployments.

Built from the L1 constructs: the alpha L2 (`aws_sagemaker_alpha`) has neither the
variant's `InferenceAmiVersion` nor the endpoint's `DeploymentConfig` (shared/GPU.md).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from inferstack.names import METRICS_NAMESPACE
from infra.config import sagemaker_endpoint_name
from infra.constructs.gpu_serving import (
    capture_prefix,
    gpu_container_environment,
    grant_engine_cache,
    suppress_model_role_wildcards,
)
from infra.constructs.images import gpu_image

if TYPE_CHECKING:
    from infra.config import Environment, SageMakerModel
    from infra.constructs.model_store import ModelStore

# UpdateEndpoint keeps traffic only if the variant name stays the same.
VARIANT_NAME = "live"
MODEL_DATA_DOWNLOAD_TIMEOUT_S = 1200
SCALING_SERVICE_LINKED_ROLE = (
    "aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)

# Instance families with local NVMe instance storage: SageMaker encrypts it in hardware and
# CreateEndpointConfig FAILS when KmsKeyId is set (CreateEndpointConfig API reference).
# GPU families g4dn/g5/g6/g6e/p4d/p5 all have it; "d" in the suffix marks the rest (m5d, c6id).
_INSTANCE_STORE_FAMILIES = re.compile(r"^(g4dn|g4ad|g5|g6|g6e|p3dn|p4d|p4de|p5|p5e|p5en|trn\d.*)$")
_D_SUFFIX = re.compile(r"^[a-z]+\d+[a-z]*d[a-z]*$")


def has_instance_storage(instance_type: str) -> bool:
    """Whether the (ml.)instance type has local NVMe storage, which rejects a KmsKeyId."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return bool(_INSTANCE_STORE_FAMILIES.match(family) or _D_SUFFIX.match(family))


def endpoint_name_for(config: Environment, model: SageMakerModel) -> str:
    """A deterministic endpoint name: API Gateway and the promoter address it by name.

    SageMaker endpoint names are also what CloudWatch metrics and alarms are keyed on, and
    an endpoint is updated in place (new endpoint config) rather than replaced, so a fixed
    name never collides with itself. Model names are mapped (aws_name: 'light_resnet50'
    becomes 'light-resnet50'); config.py has already checked the length and collisions.
    """
    return sagemaker_endpoint_name(config.name, model.name)


class SageMakerEndpoint(Construct):
    """Model, endpoint config, endpoint, rollback alarms and autoscaling for one model."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        model: SageMakerModel,
        store: ModelStore,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.endpoint_name = endpoint_name_for(config, model)
        self.variant_name = VARIANT_NAME
        image = gpu_image(self)
        key = store.key

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"InferStack {config.name}: SageMaker endpoint for {model.name}",
        )
        image.repository.grant_pull(self.role)
        store.grant_model_read(self.role, model)
        # Data capture: SageMaker writes sampled requests/responses with this role.
        store.grant_prefix_write(self.role, capture_prefix(model))
        # The container's TensorRT engine cache (engines/<model>/).
        grant_engine_cache(store, self.role, model)
        log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group_arn, f"{log_group_arn}:*"],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resource type; scoped by namespace
                conditions={
                    "StringEquals": {
                        "cloudwatch:namespace": [METRICS_NAMESPACE, "/aws/sagemaker/Endpoints"]
                    }
                },
            )
        )

        self.sagemaker_model = sm_model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image.image_uri,
                environment=gpu_container_environment(config, model, store),
            ),
        )
        # CreateModel checks the image with the role: its policy must exist first (the role
        # itself is already a dependency through ExecutionRoleArn).
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            sm_model.node.add_dependency(policy)

        # No KmsKeyId on instance types with NVMe storage: the API rejects it there, and
        # that storage is encrypted in hardware (see has_instance_storage).
        volume_key = None if has_instance_storage(model.instance_type) else key
        self.endpoint_config = endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            kms_key_id=volume_key.key_arn if volume_key else None,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=sm_model.attr_model_name,
                    instance_type=model.instance_type,
                    initial_instance_count=model.autoscaling.min_capacity,
                    initial_variant_weight=1.0,
                    inference_ami_version=model.inference_ami_version,
                    # /ping answers 503 while the engine builds; config.py holds this at
                    # least engine_build_timeout_s so a cold build is not a failed start.
                    container_startup_health_check_timeout_in_seconds=(
                        model.startup_health_check_timeout_s
                    ),
                    model_data_download_timeout_in_seconds=MODEL_DATA_DOWNLOAD_TIMEOUT_S,
                )
            ],
            data_capture_config=self._data_capture(model, store),
        )

        self.rollback_alarms = self._rollback_alarms(model)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[alarm.alarm_arn for alarm in self.rollback_alarms],
            )
        )

        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type="CANARY",
                        canary_size=sagemaker.CfnEndpoint.CapacitySizeProperty(
                            type="CAPACITY_PERCENT", value=10
                        ),
                        wait_interval_in_seconds=300,
                    ),
                    termination_wait_in_seconds=600,
                    maximum_execution_timeout_in_seconds=3600,
                ),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[
                        sagemaker.CfnEndpoint.AlarmProperty(alarm_name=alarm.alarm_name)
                        for alarm in self.rollback_alarms
                    ]
                ),
            ),
            # A stack update calls UpdateEndpoint, whose blue/green fleet would otherwise
            # start at the new config's InitialInstanceCount (min_capacity) and cut a
            # scaled-out endpoint. Retaining the variant properties keeps the current
            # DesiredInstanceCount (and weight) while the model, image, environment and
            # instance type come from the new endpoint config. DataCaptureConfig is not
            # listed in ExcludeRetainedVariantProperties: the API marks that value "Not
            # currently supported"; only DesiredInstanceCount and DesiredWeight are retained
            # variant properties.
            # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html
            # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sagemaker-endpoint.html
            retain_all_variant_properties=True,
            # The template's DeploymentConfig (canary + alarms) applies on every update.
            retain_deployment_config=False,
        )
        # SageMaker checks the role (image pull, DescribeAlarms) while creating the endpoint.
        self.endpoint.node.add_dependency(self.role)

        self.scalable_target: appscaling.ScalableTarget | None = None
        if model.autoscaling.enabled:
            self.scalable_target = self._autoscale(model)

        self._suppress(model)

    @staticmethod
    def _data_capture(
        model: SageMakerModel, store: ModelStore
    ) -> sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None:
        """SageMaker's own capture at the model's capture_rate (None when it is 0); the
        container gets no INFERSTACK_CAPTURE_RATE, so nothing is captured twice."""
        if model.capture_percent == 0:
            return None
        return sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
            enable_capture=True,
            # A whole percentage in the API (config.py checks capture_rate fits).
            initial_sampling_percentage=model.capture_percent,
            destination_s3_uri=f"s3://{store.bucket.bucket_name}/{capture_prefix(model)}",
            kms_key_id=store.key.key_arn,
            capture_options=[
                sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
            ],
            capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                json_content_types=["application/json"],
            ),
        )

    def _autoscale(self, model: SageMakerModel) -> appscaling.ScalableTarget:
        """Scale the variant on invocations per instance, within the configured bounds.

        UpdateEndpoint fails when it changes the instance type of a variant registered with
        Application Auto Scaling; the variant must be deregistered first
        (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html).
        CloudFormation deletes a removed or replaced resource only in the cleanup phase,
        after every update (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html),
        so no template trick deregisters before the endpoint update: an instance-type change
        takes two deploys, `autoscaling.enabled = false` first (README, "Deploy").
        Registering after the update is guaranteed by the dependency on the endpoint.
        """
        stack = cdk.Stack.of(self)
        scalable_target = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=model.autoscaling.min_capacity,
            max_capacity=model.autoscaling.max_capacity,
            # The service-linked role (created by Application Auto Scaling on first use),
            # not a new role without permissions, which is what the CDK would make here.
            role=iam.Role.from_role_arn(
                self,
                "ScalingRole",
                stack.format_arn(
                    service="iam",
                    region="",
                    resource="role",
                    resource_name=SCALING_SERVICE_LINKED_ROLE,
                ),
            ),
        )
        scalable_target.node.add_dependency(self.endpoint)
        scalable_target.scale_to_track_metric(
            "InvocationsPerInstance",
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            target_value=model.autoscaling.target_invocations_per_minute,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )
        return scalable_target

    def _rollback_alarms(self, model: SageMakerModel) -> list[cloudwatch.Alarm]:
        """Alarms SageMaker watches during a deployment; any in ALARM rolls it back."""
        dimensions = {"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME}
        period = cdk.Duration.minutes(1)  # endpoint metrics are per minute; bake is 5

        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name=name,
                dimensions_map=dimensions,
                statistic=statistic,
                period=period,
            )

        error_rate = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={
                "errors": metric("Invocation5XXErrors", "Sum"),
                "invocations": metric("Invocations", "Sum"),
            },
            label="5XX error rate (%)",
            period=period,
        )
        errors = error_rate.create_alarm(
            self,
            "ErrorRateAlarm",
            alarm_description=(
                f"{self.endpoint_name}: 5XX error rate above "
                f"{model.alarms.error_rate_percent}% (rolls back a deployment)"
            ),
            threshold=model.alarms.error_rate_percent,
            evaluation_periods=model.alarms.evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        latency = metric("ModelLatency", "p99").create_alarm(
            self,
            "LatencyAlarm",
            alarm_description=(
                f"{self.endpoint_name}: p99 model latency above "
                f"{model.alarms.p99_latency_ms} ms (rolls back a deployment)"
            ),
            # ModelLatency is reported in microseconds.
            threshold=model.alarms.p99_latency_ms * 1000,
            evaluation_periods=model.alarms.evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return [errors, latency]

    def _suppress(self, model: SageMakerModel) -> None:
        suppress_model_role_wildcards(self.role, model)
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "ecr:GetAuthorizationToken (image pull) and cloudwatch:PutMetricData "
                        "(namespace-conditioned) have no resource type; SageMaker writes "
                        "streams it names itself in this endpoint's own log group."
                    ),
                    applies_to=[
                        "Resource::*",
                        RegexAppliesTo(
                            regex=f"/^Resource::arn:.*:log-group:\\/aws\\/sagemaker\\/"
                            f"Endpoints\\/{self.endpoint_name}:\\*$/"
                        ),
                    ],
                )
            ],
            apply_to_children=True,
        )
