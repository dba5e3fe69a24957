"""What the GPU serving targets (SageMaker endpoints, ECS services) share.

Both run the GPU image (images.gpu_image) with the same environment, write sampled traffic
under capture/<model>/, and give their serving role the same object and key grants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdk_nag import NagPackSuppression, NagSuppressions

from inferstack.names import (
    CAPTURE_PREFIX,
    ENGINES_PREFIX,
    ENV_ENVIRONMENT,
    ENV_MAX_BATCH_SIZE,
    ENV_MAX_QUEUE_DELAY_US,
    ENV_MAX_QUEUE_SIZE,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_POWERTOOLS_SERVICE,
    ENV_PRECISION,
    ENV_QUEUE_TIMEOUT_US,
    METRICS_NAMESPACE,
    PING_PATH,
    SERVICE_NAME,
)
from infra.constructs.common import suppress_object_wildcards
from infra.constructs.model_store import model_read_prefixes

if TYPE_CHECKING:
    from aws_cdk import aws_iam as iam

    from infra.config import EcsModel, Environment, SageMakerModel
    from infra.constructs.model_store import ModelStore


# What the ECS load balancer and container health checks should ask: SageMaker's /ping,
# which the same server answers (inferstack.names.PING_PATH) with 200 while it is up,
# also before a model's first release. /v2/health/ready stays 503 until the model serves
# (the protocol's readiness), so a service checked on it never becomes healthy on an
# empty bucket and its first deployment fails.
SERVER_UP_PATH = PING_PATH
# The protocol's liveness (200 while the process serves HTTP, also while a model loads or
# its TensorRT engine builds): what a container health check asks, so a build longer than
# the check's start period never gets the container killed.
SERVER_LIVE_PATH = "/v2/health/live"


def gpu_container_environment(
    config: Environment, model: SageMakerModel | EcsModel, store: ModelStore
) -> dict[str, str]:
    """What the serving container reads (layers/inferstack settings + batching)."""
    return {
        ENV_MODEL_NAME: model.name,
        # The live pointer: a task or instance that starts serves the release live then
        # (a deploy never undoes a promotion); before the first release it is up (/ping
        # 200) and answers 503 "no release yet". A rollout pins a manifest instead.
        ENV_MODEL_URI: store.live_pointer_uri(model),
        ENV_ENVIRONMENT: config.name,
        ENV_MAX_BATCH_SIZE: str(model.batching.max_batch_size),
        ENV_MAX_QUEUE_DELAY_US: str(model.batching.max_queue_delay_us),
        ENV_MAX_QUEUE_SIZE: str(model.batching.max_queue_size),
        ENV_QUEUE_TIMEOUT_US: str(model.batching.queue_timeout_us),
        ENV_PRECISION: model.precision,
        ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
        ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
    }


def capture_prefix(model: SageMakerModel | EcsModel) -> str:
    """Where this model's sampled traffic goes (capture/<model>/), for drift checks."""
    return f"{CAPTURE_PREFIX}{model.name}/"


def engine_prefix(model: SageMakerModel | EcsModel) -> str:
    """Where the container caches this model's TensorRT engines (engines/<model>/)."""
    return f"{ENGINES_PREFIX}{model.name}/"


def grant_engine_cache(
    store: ModelStore, role: iam.IGrantable, model: SageMakerModel | EcsModel
) -> None:
    """Read and write the model's engine cache: a task or instance that starts loads the
    engine an earlier one built for the same GPU and TensorRT, or builds and stores it."""
    store.grant_prefix_read(role, engine_prefix(model))
    store.grant_prefix_write(role, engine_prefix(model))


def suppress_model_role_wildcards(role: iam.IRole, model: SageMakerModel | EcsModel) -> None:
    """Accept what a serving role needs: its own model's objects, capture and engine writes
    under SSE-KMS."""
    reads = model_read_prefixes(model.name)
    suppress_object_wildcards(
        role,
        [*reads, capture_prefix(model), engine_prefix(model)],
        reason=(
            f"Object access is limited to this model's own prefixes: "
            f"{' and '.join(reads)} (read: its release records and artifacts), "
            f"{capture_prefix(model)} (sampled traffic for drift checks) and "
            f"{engine_prefix(model)} (read and write: its TensorRT engine cache)."
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
