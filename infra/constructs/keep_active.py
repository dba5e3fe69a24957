"""Keep a SnapStart model's live version Active: a scheduled health check through its alias.

A SnapStart version "becomes Inactive when it hasn't been invoked for 14 days", and invoking it
then fails with SnapStartNotReadyException until it is Active again
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart-troubleshooting.html); "Lambda
automatically deletes snapshots that are not invoked for 14 days"
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart-security.html). So a quiet model (dev,
a holiday) would answer its first clients with errors. An EventBridge Scheduler schedule invokes
the alias `live` (so whichever version the promoter made live) every KEEP_ACTIVE_RATE with
`GET /v2/health/ready`, as API Gateway's HTTP API (payload 2.0) would send it.

The schedule does nothing against the other cause AWS names, "when Lambda periodically
recycles the execution environment": a client can still meet the error then.

What the ping is in the function's metrics and capture (inferstack.dataplane, telemetry): a
health route, not an inference, so it is never offered to the drift capture, and its request
document carries no Model or ModelVersion dimension, so no per-model graph or alarm (they read
the per-model dimension set, monitoring.METRIC_DIMENSIONS) counts it as traffic. Being the first
request of the environment it restores, it also takes that environment's ColdStart and
RestoredStart, under the same model-less dimensions: the per-model "new environments" graph
shows restores that met clients, while RestoreDuration (from Lambda's REPORT line) shows this
one too. Before a model's first release the ping is answered 503, an Errors count under model
"none", which no alarm reads. tests/infra/test_snapstart_keep_active.py runs the real handler
on the schedule's Input.

Cost: one asynchronous invocation per run (EventBridge Scheduler invokes Lambda asynchronously,
https://docs.aws.amazon.com/lambda/latest/dg/with-eventbridge-scheduler.html), usually with one
restore, each billed as AWS's SnapStart pricing says; and the live version's snapshot stays
cached, which "you will continue to be charged [for] as long as your function remains active"
(https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html#snapstart-pricing): the price of
never meeting SnapStartNotReadyException. Older versions are not pinged and lapse after 14 days.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infra.constructs.common import dead_letter_queue, schedule_target, scheduler_role

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_

    from infra.config import Environment, LambdaModel

# Well inside the 14 days: a run that fails after all its retries (dead-letter queue) leaves
# the next one 12 days after the last success, still before the version lapses; at one restore
# per run the interval costs next to nothing either way.
KEEP_ACTIVE_RATE = "rate(6 days)"
# Scheduler may run it at any time in the hour after the scheduled one (spreads the load;
# https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-flexible-time-windows.html).
FLEXIBLE_WINDOW_MINUTES = 60
# A ping only has to land some time in the next days: retry for a whole day, Scheduler's most
# (https://docs.aws.amazon.com/scheduler/latest/APIReference/API_RetryPolicy.html).
_MAX_EVENT_AGE_S = 24 * 3600
_MAX_RETRIES = 10

HEALTH_PATH = "/v2/health/ready"
USER_AGENT = "EventBridge Scheduler (InferStack keep-active)"
# Replaced by Scheduler at each attempt: the log line of the ping carries it as the
# correlation id (https://docs.aws.amazon.com/scheduler/latest/UserGuide/
# managing-schedule-context-attributes.html).
EXECUTION_ID = "<aws.scheduler.execution-id>"


def health_check_event(path: str = HEALTH_PATH) -> dict[str, Any]:
    """`GET path` as API Gateway's HTTP API hands it to a function (payload format 2.0): the
    fields of AWS's sample event that a GET with no query, cookies or body carries."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"user-agent": USER_AGENT},
        "requestContext": {
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "userAgent": USER_AGENT,
            },
            "requestId": EXECUTION_ID,
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }


class KeepActive(Construct):
    """The schedule that keeps `alias`'s SnapStart version Active, with its role and queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        model: LambdaModel,
        alias: lambda_.IAlias,
    ) -> None:
        super().__init__(scope, construct_id)
        # Pings Scheduler could not deliver after its retries: the live version may lapse.
        self.dead_letter_queue = dead_letter_queue(
            self, holds=f"the keep-active schedule of {model.name}"
        )
        # The alias's ARN only: not the function, not another version or alias.
        self.role = scheduler_role(
            self,
            "SchedulerRole",
            description=f"InferStack {config.name}: keeps {model.name}'s SnapStart version active",
            invokes=alias.function_arn,
            queue=self.dead_letter_queue,
        )
        self.schedule = scheduler.CfnSchedule(
            self,
            "Schedule",
            description=(
                f"InferStack {config.name}: GET {HEALTH_PATH} on {model.name}'s alias "
                f"{alias.alias_name} so its SnapStart version stays Active"
            ),
            schedule_expression=KEEP_ACTIVE_RATE,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(
                mode="FLEXIBLE", maximum_window_in_minutes=FLEXIBLE_WINDOW_MINUTES
            ),
            state="ENABLED",
            target=schedule_target(
                arn=alias.function_arn,
                role=self.role,
                payload=json.dumps(health_check_event()),
                dead_letter_queue=self.dead_letter_queue,
                max_event_age_s=_MAX_EVENT_AGE_S,
                retries=_MAX_RETRIES,
            ),
        )
