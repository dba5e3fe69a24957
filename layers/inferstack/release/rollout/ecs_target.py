"""ECS: a new task definition revision pinning the release, then UpdateService to it.

"Live" is the task definition the service runs now (DescribeServices taskDefinition): the
stack's own at first, the last promoted revision after that.

start:
1. DescribeServices: the live task definition; DescribeTaskDefinition with its tags.
2. RegisterTaskDefinition copying every field the call accepts (the read-only ones a
   describe adds: taskDefinitionArn, revision, status, requiresAttributes, compatibilities,
   registeredAt/By, deregisteredAt, fall away) with INFERSTACK_MODEL_URI = the release's
   manifest in each container that sets it.
   https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html
3. UpdateService(taskDefinition=the new revision) and nothing else: desiredCount belongs to
   Application Auto Scaling, the deployment configuration (circuit breaker, alarms) stays.
   https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_UpdateService.html

check (DescribeServices deployments,
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html): the
deployment running the new revision is COMPLETED and PRIMARY -> succeeded; FAILED (the
circuit breaker, or a deployment alarm:
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-failure-detection.html)
-> failed with its rolloutStateReason; the PRIMARY deployment running another revision
(rolled back, or replaced) -> failed; IN_PROGRESS -> in progress. The failed revision stays
registered: it costs nothing and shows what was tried.
"""

from __future__ import annotations

from typing import Any

from inferstack.names import ENV_MODEL_URI
from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout, aws_reason
from inferstack.release.rollout.copying import request_fields, user_tags

TARGET = "ecs"
EVENT_SOURCE = "aws.ecs"
EVENT_DETAIL_TYPE = "ECS Deployment State Change"


class EcsRollout(Rollout):
    target = TARGET

    def __init__(self, client: Any, *, cluster: str, service: str) -> None:
        self.client = client
        self.cluster = cluster
        self.service = service

    def start(self, release: ReleaseRef) -> Progress:
        try:
            service = self._describe()
            previous = service["taskDefinition"]
            described = self.client.describe_task_definition(
                taskDefinition=previous, include=["TAGS"]
            )
        except Exception as exc:
            return Progress("failed", f"could not read service {self.service}: {aws_reason(exc)}")
        request = request_fields(self.client, "RegisterTaskDefinition", described["taskDefinition"])
        pinned = 0
        for container in request["containerDefinitions"]:
            environment = container.get("environment") or []
            if any(item.get("name") == ENV_MODEL_URI for item in environment):
                container["environment"] = [
                    *(item for item in environment if item.get("name") != ENV_MODEL_URI),
                    {"name": ENV_MODEL_URI, "value": release.uri},
                ]
                pinned += 1
        if not pinned:
            return Progress(
                "failed", f"no container of {previous} sets {ENV_MODEL_URI}: nothing to pin"
            )
        # Tags on RegisterTaskDefinition also need ecs:TagResource (tag-on-create authorization,
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/supported-iam-actions-tagging.html).
        tags = user_tags(described.get("tags"))
        state = {
            "cluster": self.cluster,
            "service": self.service,
            "service_arn": service.get("serviceArn"),
            "task_definition": None,
            "previous": previous,
        }
        try:
            registered = self.client.register_task_definition(
                **request, **({"tags": tags} if tags else {})
            )
            state["task_definition"] = registered["taskDefinition"]["taskDefinitionArn"]
            self.client.update_service(
                cluster=self.cluster, service=self.service, taskDefinition=state["task_definition"]
            )
        except Exception as exc:
            return Progress(
                "failed", f"could not deploy a new revision of {previous}: {aws_reason(exc)}", state
            )
        return Progress(
            "in_progress", f"service {self.service} is deploying {state['task_definition']}", state
        )

    def check(self, progress: Progress) -> Progress:
        state = dict(progress.state or {})
        new = state["task_definition"]
        try:
            deployments = self._describe().get("deployments") or []
        except LookupError as exc:  # the service is gone
            return Progress("failed", str(exc), state)
        except Exception as exc:  # throttling, a network error: check again later
            return Progress(
                "in_progress", f"could not describe the service: {aws_reason(exc)}", state
            )
        ours = next((d for d in deployments if d.get("taskDefinition") == new), None)
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        rollout = (ours or {}).get("rolloutState")
        why = (ours or {}).get("rolloutStateReason")
        if rollout == "FAILED":
            return Progress("failed", f"the deployment of {new} failed: {why}", state)
        if primary is None or primary.get("taskDefinition") != new:
            running = primary.get("taskDefinition") if primary else "nothing"
            detail = f": {why}" if why else ""
            return Progress(
                "failed", f"service {self.service} went back to {running}, not {new}{detail}", state
            )
        if rollout == "COMPLETED" or (rollout is None and _steady(primary, deployments)):
            return Progress("succeeded", None, state)
        return Progress(
            "in_progress",
            f"{primary.get('runningCount', 0)} of {primary.get('desiredCount', 0)} tasks of "
            f"{new} running",
            state,
        )

    def _describe(self) -> dict[str, Any]:
        answer = self.client.describe_services(cluster=self.cluster, services=[self.service])
        for service in answer.get("services") or []:
            if service.get("status") != "INACTIVE":
                return dict(service)
        failures = answer.get("failures") or [{}]
        raise LookupError(f"no active service {self.service}: {failures[0].get('reason')}")


def _steady(primary: dict[str, Any], deployments: list[dict[str, Any]]) -> bool:
    """Without rolloutState (only the ECS rolling-update controller reports it): done when
    the new deployment is the only one left and runs every task it wants."""
    return len(deployments) == 1 and primary.get("runningCount") == primary.get("desiredCount")


def progress_from_event(event: dict[str, Any]) -> tuple[str, str, str] | None:
    """(target, service ARN, eventName) of an "ECS Deployment State Change" event (eventName
    SERVICE_DEPLOYMENT_IN_PROGRESS | _COMPLETED | _FAILED), None for any other event. A hint
    to run `check` now; DescribeServices stays the record
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_service_deployment_events.html)."""
    if event.get("source") != EVENT_SOURCE or event.get("detail-type") != EVENT_DETAIL_TYPE:
        return None
    resources = event.get("resources") or [""]
    detail = event.get("detail") or {}
    return TARGET, str(resources[0]), str(detail.get("eventName", ""))
