"""SageMaker: a new model and endpoint config copying the live ones, then UpdateEndpoint.

"Live" is the endpoint config the endpoint runs now (DescribeEndpoint EndpointConfigName):
the stack's own at first, the last promoted one after that.

start:
1. DescribeEndpoint: the live config; nothing is created unless the endpoint is InService
   (UpdateEndpoint is refused while it is Updating).
2. DescribeEndpointConfig + DescribeModel of its variant's model; CreateModel copying that
   model (image, role, VPC, every container field) with INFERSTACK_MODEL_URI = the release's
   manifest; CreateEndpointConfig copying every variant setting (instance type and count,
   InferenceAmiVersion, ModelDataDownloadTimeoutInSeconds,
   ContainerStartupHealthCheckTimeoutInSeconds, ...) with the new model, and the
   DataCaptureConfig, KmsKeyId and tags.
3. UpdateEndpoint with RetainDeploymentConfig (the stack's blue/green canary and its
   auto-rollback alarms apply; without a deployment config SageMaker shifts all traffic at
   once) and RetainAllVariantProperties (the autoscaled DesiredInstanceCount and the weight
   stay; a new config's InitialInstanceCount would cut a scaled-out fleet).
   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html
   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DeploymentConfig.html

check (DescribeEndpoint; statuses:
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeEndpoint.html):
InService on the new config -> succeeded; Updating/SystemUpdating/RollingBack -> in
progress; InService back on another config (an alarm tripped during the canary or bake and
SageMaker rolled back: https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html),
Failed or UpdateRollbackFailed -> failed with FailureReason. A config or model that serves
nothing any more is deleted (SageMaker forbids deleting one an endpoint still uses).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from inferstack.names import ENV_MODEL_URI
from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout, aws_reason
from inferstack.release.rollout.copying import request_fields, user_tags

TARGET = "sagemaker"
NAME_MAX = 63  # model and endpoint config names (CreateModel / CreateEndpointConfig)
EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Endpoint State Change"
_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
_DELETES = (
    ("config", "delete_endpoint_config", "EndpointConfigName"),
    ("model", "delete_model", "ModelName"),
)

logger = logging.getLogger(__name__)


class SageMakerRollout(Rollout):
    target = TARGET

    def __init__(self, client: Any, *, endpoint: str, role: str | None = None) -> None:
        """`role`: the execution role the stack grants iam:PassRole on (the target record's);
        without it the live model's role is reused."""
        self.client = client
        self.endpoint = endpoint
        self.role = role

    def start(self, release: ReleaseRef) -> Progress:
        try:
            live = self.client.describe_endpoint(EndpointName=self.endpoint)
        except Exception as exc:
            return Progress(
                "failed", f"could not describe endpoint {self.endpoint}: {aws_reason(exc)}"
            )
        if live["EndpointStatus"] != "InService":
            return Progress(
                "failed",
                f"endpoint {self.endpoint} is {live['EndpointStatus']}, not InService: "
                "it takes no update now; promote the release again when it is",
            )
        previous = live["EndpointConfigName"]
        name = next_name(self.endpoint, release.release)
        state = {
            "endpoint": self.endpoint,
            "config": name,
            "model": name,
            "previous_config": previous,
        }
        created: list[str] = []
        try:
            self._create(release, previous, name, created)
            self.client.update_endpoint(
                EndpointName=self.endpoint,
                EndpointConfigName=name,
                RetainAllVariantProperties=True,
                RetainDeploymentConfig=True,
            )
        except Exception as exc:
            self._delete(name, created)  # nothing serves them: the endpoint never switched
            return Progress(
                "failed", f"could not update endpoint {self.endpoint}: {aws_reason(exc)}", state
            )
        return Progress("in_progress", f"endpoint {self.endpoint} is updating to {name}", state)

    def _create(self, release: ReleaseRef, previous: str, name: str, created: list[str]) -> None:
        config = self.client.describe_endpoint_config(EndpointConfigName=previous)
        models = {v["ModelName"] for v in config["ProductionVariants"]}
        if len(models) != 1:
            raise RuntimeError(f"config {previous} serves {len(models)} models; expected one")
        live_model = self.client.describe_model(ModelName=models.pop())
        model = request_fields(self.client, "CreateModel", live_model, drop=("ModelName", "Tags"))
        for container in _containers(model):
            container["Environment"] = {**container.get("Environment", {})}
            container["Environment"][ENV_MODEL_URI] = release.uri
        if self.role:
            model["ExecutionRoleArn"] = self.role
        self.client.create_model(ModelName=name, **model, **self._tags(live_model["ModelArn"]))
        created.append("model")

        fields = request_fields(
            self.client, "CreateEndpointConfig", config, drop=("EndpointConfigName", "Tags")
        )
        for variant in fields["ProductionVariants"]:
            variant["ModelName"] = name
        self.client.create_endpoint_config(
            EndpointConfigName=name, **fields, **self._tags(config["EndpointConfigArn"])
        )
        created.append("config")

    def _tags(self, arn: str) -> dict[str, Any]:
        """The live resource's own tags (best effort: a missing tag fails no release)."""
        try:
            tags = user_tags(self.client.list_tags(ResourceArn=arn).get("Tags"))
        except Exception as exc:
            logger.warning("could not read the tags of %s: %s", arn, aws_reason(exc))
            return {}
        return {"Tags": tags} if tags else {}

    def check(self, progress: Progress) -> Progress:
        state = dict(progress.state or {})
        new, previous = state["config"], state["previous_config"]
        try:
            endpoint = self.client.describe_endpoint(EndpointName=state["endpoint"])
        except Exception as exc:
            # DescribeEndpoint answers ValidationException for an endpoint that is gone;
            # anything else (throttling, a network error) is worth another check later.
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "ValidationException":
                return Progress("failed", f"endpoint {state['endpoint']}: {aws_reason(exc)}", state)
            return Progress(
                "in_progress", f"could not describe the endpoint: {aws_reason(exc)}", state
            )
        status, running = endpoint["EndpointStatus"], endpoint.get("EndpointConfigName")
        why = endpoint.get("FailureReason")
        if status in _BUSY:
            return Progress("in_progress", f"endpoint {state['endpoint']} is {status}", state)
        if status == "InService" and running == new:
            return Progress("succeeded", None, state)
        if status == "InService":
            what = "rolled back to" if running == previous else "now runs"
            reason = f"SageMaker {what} {running}: {why or 'the update did not complete'}"
        else:
            reason = f"endpoint {state['endpoint']} is {status}: {why or 'no reason given'}"
        if running != new and status != "UpdateRollbackFailed":
            self._delete(new, ["config", "model"])
        return Progress("failed", reason, state)

    def _delete(self, name: str, kinds: list[str]) -> None:
        """Best effort (config first: it refers to the model); a leftover costs nothing but
        clutter, so a failed delete fails no rollout."""
        for kind, method, key in _DELETES:
            if kind not in kinds:
                continue
            try:
                getattr(self.client, method)(**{key: name})
            except Exception as exc:
                logger.warning("could not delete %s %s: %s", kind, name, aws_reason(exc))


def next_name(endpoint: str, release: str) -> str:
    """`<endpoint>-r<release>-<6 hex>`, the endpoint part cut to fit 63 characters; the prefix
    (inferstack-<env>-) is what the promoter's IAM policy matches."""
    tail = f"-r{release}-{secrets.token_hex(3)}"
    return f"{endpoint[: NAME_MAX - len(tail)].rstrip('-')}{tail}"


def _containers(model: dict[str, Any]) -> list[dict[str, Any]]:
    primary = model.get("PrimaryContainer")
    return [primary] if primary else list(model.get("Containers") or [])


def progress_from_event(event: dict[str, Any]) -> tuple[str, str, str] | None:
    """(target, endpoint name, status) of a "SageMaker Endpoint State Change" event, None for
    any other event. A hint to run `check` now: SageMaker may send several events for one
    change, and the sample spells statuses IN_SERVICE where DescribeEndpoint says InService
    (https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html)."""
    if event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_DETAIL_TYPE:
        return None
    detail = event.get("detail") or {}
    return TARGET, str(detail.get("EndpointName", "")), str(detail.get("EndpointStatus", ""))
