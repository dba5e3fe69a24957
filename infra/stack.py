"""The InferStack stack: one per environment, composed from constructs; wiring lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from aws_cdk import aws_ssm as ssm

from inferstack.names import (
    SSM_ALARM_TOPIC_ARN,
    SSM_API_URL,
    SSM_MODEL_BUCKET,
    SSM_PROMOTER_FUNCTION,
    SSM_ROLLOUT_STATE_MACHINE,
    SSM_TARGETS,
    ssm_parameter_name,
)
from infra.config import EcsModel, LambdaModel, SageMakerModel, Target
from infra.constructs.api import InferenceApi
from infra.constructs.drift import DriftCheck
from infra.constructs.ecs_model import EcsGpuService, GpuNetwork
from infra.constructs.images import inference_image
from infra.constructs.lambda_model import LambdaInference
from infra.constructs.model_store import ModelStore
from infra.constructs.monitoring import Monitoring
from infra.constructs.promoter import ModelPromoter
from infra.constructs.sagemaker_model import SageMakerEndpoint

if TYPE_CHECKING:
    from constructs import Construct

    from infra.config import Environment


class InferStackStack(cdk.Stack):
    """Every AWS part of the design for one environment; only the configuration differs."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Environment, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        cdk.Tags.of(self).add("inferstack:environment", config.name)

        store = ModelStore(self, "ModelStore", config=config)
        monitoring = Monitoring(self, "Monitoring", config=config)
        api = InferenceApi(self, "Api", config=config)
        promoter = ModelPromoter(self, "Promoter", config=config, store=store)
        drift = DriftCheck(self, "Drift", config=config, store=store, alarm_topic=monitoring.topic)
        monitoring.watch_function("promoter", promoter.function)
        monitoring.watch_rollouts(promoter.state_machine)
        monitoring.watch_dead_letters("promoter", promoter.dead_letter_queue)
        monitoring.watch_function("drift-check", drift.function)

        # One VPC and cluster for every ECS model; none at all without one.
        network = None
        if config.models_on(Target.ECS):
            network = GpuNetwork(self, "GpuNetwork", config=config)
        for model in config.models:
            if isinstance(model, LambdaModel):
                lambda_model = LambdaInference(
                    self,
                    f"Lambda-{model.name}",
                    config=config,
                    model=model,
                    store=store,
                    image=inference_image(model.architecture),
                )
                api.add_lambda_model(model, lambda_model.alias)
                promoter.allow_lambda_rollout(model, lambda_model.function, lambda_model.alias)
                monitoring.add_lambda_model(model, lambda_model.function, lambda_model.alias)
                if lambda_model.keep_active is not None:  # a SnapStart model's weekly ping
                    monitoring.watch_dead_letters(
                        f"keep-active-{model.name}", lambda_model.keep_active.dead_letter_queue
                    )
            elif isinstance(model, SageMakerModel):
                endpoint = SageMakerEndpoint(
                    self, f"SageMaker-{model.name}", config=config, model=model, store=store
                )
                api.add_sagemaker_model(model, endpoint.endpoint_name)
                promoter.allow_sagemaker_rollout(
                    model,
                    endpoint.endpoint_name,
                    endpoint.role,
                    live_model=endpoint.sagemaker_model,
                    live_endpoint_config=endpoint.endpoint_config,
                )
                monitoring.add_sagemaker_model(model, endpoint.endpoint_name, endpoint.variant_name)
            elif isinstance(model, EcsModel):
                assert network is not None
                service = EcsGpuService(
                    self,
                    f"Ecs-{model.name}",
                    config=config,
                    model=model,
                    store=store,
                    network=network,
                )
                api.add_ecs_model(model, service.load_balancer, service.listener_port)
                promoter.allow_ecs_rollout(model, service.service)
                monitoring.add_ecs_model(model, service.service, service.load_balancer)
                # A deployment whose tasks answer 5xx rolls back, besides the circuit breaker's
                # tasks that never start.
                service.roll_back_on([monitoring.error_rate_alarms[model.name]])
            drift.add_model(model)
            monitoring.add_drift_alarm(model)
        monitoring.add_promotion_alarm()

        self._outputs(config, store, api, monitoring, promoter)

    def _outputs(
        self,
        config: Environment,
        store: ModelStore,
        api: InferenceApi,
        monitoring: Monitoring,
        promoter: ModelPromoter,
    ) -> None:
        """Stack outputs, mirrored to SSM under /inferstack/<env>/ for the CLI."""
        values = {
            "ApiUrl": (SSM_API_URL, api.url),
            "ModelBucketName": (SSM_MODEL_BUCKET, store.bucket.bucket_name),
            "AlarmTopicArn": (SSM_ALARM_TOPIC_ARN, monitoring.topic.topic_arn),
            # What `inferstack promote/rollback` invokes, and each model's target with the
            # names of its function/alias, endpoint or cluster/service (INFERSTACK_TARGETS).
            "PromoterFunctionName": (SSM_PROMOTER_FUNCTION, promoter.function.function_name),
            "Targets": (SSM_TARGETS, promoter.targets_json),
            # What `inferstack promote/rollback` starts (uploads start it through the rule).
            "RolloutStateMachineArn": (
                SSM_ROLLOUT_STATE_MACHINE,
                promoter.state_machine.state_machine_arn,
            ),
        }
        for output_id, (parameter, value) in values.items():
            cdk.CfnOutput(self, output_id, value=value)
            ssm.StringParameter(
                self,
                f"{output_id}Parameter",
                parameter_name=ssm_parameter_name(config.name, parameter),
                string_value=value,
                description=f"InferStack {config.name}: {output_id}",
            )
