"""What the GPU serving targets (SageMaker endpoints, ECS services) share.

Both run the GPU image (images.gpu_image) with the same environment, write sampled traffic
under capture/<model>/, and give their serving role the same object and key grants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdk_nag import NagPackSuppression, NagSuppressions

from inferstack.names import (
    CAPTURE_PREFIX,
    ENV_ENVIRONMENT,
    ENV_MAX_BATCH_SIZE,
    ENV_MAX_QUEUE_DELAY_US,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    MODELS_PREFIX,
    SERVICE_NAME,
)
from infra.constructs.common import suppress_object_wildcards

if TYPE_CHECKING:
    from aws_cdk import aws_iam as iam

    from infra.config import EcsModel, Environment, SageMakerModel
    from infra.constructs.model_store import ModelStore


def gpu_container_environment(
    config: Environment, model: SageMakerModel | EcsModel, store: ModelStore
) -> dict[str, str]:
    """What the serving container reads (layers/inferstack settings + batching)."""
    return {
        ENV_MODEL_NAME: model.name,
        ENV_MODEL_URI: store.model_uri(model),
        ENV_ENVIRONMENT: config.name,
        ENV_MAX_BATCH_SIZE: str(model.batching.max_batch_size),
        ENV_MAX_QUEUE_DELAY_US: str(model.batching.max_queue_delay_us),
        ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
        ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
    }


def capture_prefix(model: SageMakerModel | EcsModel) -> str:
    """Where this model's sampled traffic goes (capture/<model>/), for drift checks."""
    return f"{CAPTURE_PREFIX}{model.name}/"


def suppress_model_role_wildcards(role: iam.IRole, model: SageMakerModel | EcsModel) -> None:
    """Accept what a serving role needs: its own model's objects, capture writes under SSE-KMS."""
    suppress_object_wildcards(
        role,
        [f"{MODELS_PREFIX}{model.name}/", capture_prefix(model)],
        reason=(
            f"Object access is limited to this model's own prefixes: {MODELS_PREFIX}"
            f"{model.name}/ (read) and {capture_prefix(model)} (sampled traffic for drift "
            "checks)."
        ),
    )
    NagSuppressions.add_resource_suppressions(
        role,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "kms:GenerateDataKey* and kms:ReEncrypt* on the model bucket's key only: "
                    "SSE-KMS writes of captured traffic need a data key."
                ),
                applies_to=["Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"],
            )
        ],
        apply_to_children=True,
    )
