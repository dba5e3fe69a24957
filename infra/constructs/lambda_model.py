"""CPU models on Lambda: one container-image function + alias `live` per model.

The stack passes in the image (images.inference_image, one per architecture); the
function's log group and execution role are the shared ones from function.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from inferstack.names import (
    ENV_CAPTURE_RATE,
    ENV_ENVIRONMENT,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from infra.constructs.capture import CaptureDelivery
from infra.constructs.common import suppress_object_wildcards
from infra.constructs.function import execution_role, function_log_group
from infra.constructs.images import lambda_architecture
from infra.constructs.model_store import model_read_prefixes

if TYPE_CHECKING:
    from infra.config import Environment, LambdaModel
    from infra.constructs.model_store import ModelStore

LIVE_ALIAS = "live"


class LambdaInference(Construct):
    """One CPU model served by a Lambda container-image function behind the alias `live`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        model: LambdaModel,
        store: ModelStore,
        image: lambda_.DockerImageCode,
    ) -> None:
        super().__init__(scope, construct_id)
        log_group = function_log_group(self, "Logs", config=config)
        role = execution_role(
            self,
            "Role",
            log_group=log_group,
            description=f"InferStack {config.name}: inference function for {model.name}",
        )

        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=image,
            description=f"InferStack {config.name}: {model.name} (Open Inference Protocol)",
            architecture=lambda_architecture(model.architecture),
            memory_size=model.memory_mb,
            # Below API Gateway's integration timeout, with a margin (config.py
            # LAMBDA_TIMEOUT_MAX_S): a longer run only answers a client that got a 504.
            timeout=cdk.Duration.seconds(model.timeout_s),
            ephemeral_storage_size=cdk.Size.mebibytes(model.ephemeral_storage_mb),
            reserved_concurrent_executions=model.reserved_concurrency,
            environment={
                ENV_MODEL_NAME: model.name,
                # The live pointer: a new execution environment loads whatever release is
                # live when it starts, so a stack deploy keeps the promoted release. Before
                # the first release the init finds no pointer and the function answers 503
                # "no release yet". The promoter pins each version it publishes to one
                # release's manifest (releases/<model>/<id>/manifest.json).
                ENV_MODEL_URI: store.live_pointer_uri(model),
                ENV_ENVIRONMENT: config.name,
                ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
                ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
                # inferstack.capture samples this share of requests for the drift check.
                ENV_CAPTURE_RATE: f"{model.capture_rate:g}",
            },
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
        )
        # Traffic goes through the alias, so provisioned concurrency stays warm across
        # the versions the promoter publishes.
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            description=f"The version of {model.name} that serves traffic",
            provisioned_concurrent_executions=model.provisioned_concurrency or None,
        )
        # Captured requests leave through the function's log group (infra/constructs/capture.py).
        self.capture = (
            CaptureDelivery(self, "Capture", model=model, store=store, log_group=log_group)
            if model.capture_rate > 0
            else None
        )
        store.grant_model_read(self.function, model)
        prefixes = model_read_prefixes(model.name)
        suppress_object_wildcards(
            role,
            prefixes,
            f"Read access to {model.name}'s own releases and artifacts only "
            f"({', '.join(p + '*' for p in prefixes)}): release ids and content hashes in "
            "the keys are not known at deploy time.",
        )
