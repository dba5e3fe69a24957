"""The rollout as a Step Functions standard workflow: no invocation waits on a target.

    Prepare --outcome--> release: Start | rejected: Fail "Rejected" | duplicate, unchanged,
                         superseded, ignored: Succeed
    Start --phase--> in_progress: Wait 30 s -> Check -> (phase again) | else: Finish
    Finish --result--> live: Succeed | else: Fail "RolloutFailed"

Each task invokes the promoter function with {"step": <name>, "input": <the state's input>}
and its output is the promoter's step dict (inferstack.release.promote), so a rollout's
progress is the execution's history, and it survives any one function's time limit.

Failures and what they leave behind (the README's "Releasing a model" explains them):
- Every task retries Lambda's transient service errors, with backoff.
- Prepare retries ReleaseConflict (another execution holds the same upload's claim; a
  duplicate S3 event) until that claim settles or goes stale (CLAIM_STALE_S).
- Start retries ReleaseConflict (the model's rollout slot is held by another rollout) every
  minute for about two hours. Nothing else on Start is retried or caught: without Start's
  output there is no slot to free, and Start either took no slot or took one that a later
  rollout takes over once stale (ROLLOUT_STALE_S, equal to this machine's timeout, so no
  running execution ever holds a stale slot).
- Check only reads: it retries any task failure, then a Catch keeps its input (the step,
  with the slot) and hands it to Finish, which records the release failed, emits the
  failure metric and frees the slot.
- Finish is safe to repeat (the pointer write is conditional, the slot is freed once), so it
  retries any task failure: a release whose target moved must not be left off the pointer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from inferstack.release.exceptions import ReleaseConflict
from inferstack.release.promote import CLAIM_STALE_S, ROLLOUT_STALE_S
from infra.constructs.common import log_retention, removal_policy

if TYPE_CHECKING:
    from aws_cdk import aws_lambda as lambda_

    from infra.config import Environment

# Transient Lambda service errors, as Step Functions names them
# (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html).
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
# A Python exception raised by the handler reaches Step Functions with the exception's class
# name as its error name (errorType,
# https://docs.aws.amazon.com/lambda/latest/dg/python-exceptions.html), which Retry matches.
RELEASE_CONFLICT = ReleaseConflict.__name__
# Any task failure other than the States.* ones
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
TASK_FAILED = "States.TaskFailed"
POLL = cdk.Duration.seconds(30)
CONFLICT_INTERVAL = cdk.Duration.seconds(60)
SLOT_WAIT = cdk.Duration.hours(2)  # how long Start waits for another rollout of the model
# Past the upload claim's staleness, so a claim left by a dead execution is taken over.
CLAIM_WAIT = cdk.Duration.seconds(CLAIM_STALE_S + 2 * 60)
# An execution never outlives the slot it took (the slot is taken after it started).
TIMEOUT = cdk.Duration.seconds(ROLLOUT_STALE_S)
# Where Check's error goes in its input when the Catch hands the step to Finish (the
# handler reads it there).
CHECK_ERROR_PATH = "$.check_error"


class RolloutMachine(Construct):
    """The state machine that drives `function` (the promoter) through one rollout."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        function: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)

        def step(name: str, state: str) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                state,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(
                    {
                        "step": name,
                        "input": sfn.JsonPath.entire_payload,
                        # Who holds the model's rollout slot: a Start retried after a Lambda
                        # service error finds its own slot and carries on.
                        "execution": sfn.JsonPath.execution_id,
                    }
                ),
                # The function's answer alone: each state's output is the step dict.
                output_path="$.Payload",
                retry_on_service_exceptions=False,  # retried below, with the full list
            )
            task.add_retry(
                errors=LAMBDA_SERVICE_ERRORS,
                interval=cdk.Duration.seconds(2),
                max_attempts=6,
                backoff_rate=2,
            )
            return task

        prepare = step("prepare", "Prepare")
        prepare.add_retry(
            errors=[RELEASE_CONFLICT],
            interval=CONFLICT_INTERVAL,
            max_attempts=_attempts(CLAIM_WAIT),
            backoff_rate=1,
        )
        start = step("start", "Start")
        start.add_retry(
            errors=[RELEASE_CONFLICT],
            interval=CONFLICT_INTERVAL,
            max_attempts=_attempts(SLOT_WAIT),
            backoff_rate=1,
        )
        check = step("check", "Check")
        check.add_retry(
            errors=[TASK_FAILED], interval=cdk.Duration.seconds(30), max_attempts=3, backoff_rate=2
        )
        finish = step("finish", "Finish")
        finish.add_retry(
            errors=[TASK_FAILED], interval=cdk.Duration.seconds(10), max_attempts=4, backoff_rate=2
        )
        # A Catch with a ResultPath keeps the state's input (the step and its slot) and adds
        # the error beside it
        # (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultpath.html).
        check.add_catch(finish, errors=["States.ALL"], result_path=CHECK_ERROR_PATH)

        rejected = sfn.Fail(self, "Rejected", error="Rejected", cause_path="$.reason")
        nothing = sfn.Succeed(
            self,
            "NothingToRollOut",
            comment="duplicate event, unchanged, superseded or ignored upload",
        )
        unexpected = sfn.Fail(
            self,
            "UnexpectedOutcome",
            error="UnexpectedOutcome",
            cause="the promoter's prepare step answered an outcome this machine does not know",
        )
        live = sfn.Succeed(self, "Live")
        failed = sfn.Fail(self, "RolloutFailed", error="RolloutFailed", cause_path="$.reason")

        wait = sfn.Wait(self, "WaitForRollout", time=sfn.WaitTime.duration(POLL))
        phase = (
            sfn.Choice(self, "Phase")
            .when(sfn.Condition.string_equals("$.phase", "in_progress"), wait)
            # succeeded, failed, or anything else: Finish decides (not succeeded = failed).
            .otherwise(finish)
        )
        wait.next(check)
        check.next(phase)
        start.next(phase)
        finish.next(
            sfn.Choice(self, "Result")
            .when(sfn.Condition.string_equals("$.result", "live"), live)
            .otherwise(failed)
        )
        prepare.next(
            sfn.Choice(self, "Outcome")
            .when(sfn.Condition.string_equals("$.outcome", "release"), start)
            .when(sfn.Condition.string_equals("$.outcome", "rejected"), rejected)
            .when(
                sfn.Condition.or_(
                    *(
                        sfn.Condition.string_equals("$.outcome", kind)
                        for kind in ("duplicate", "unchanged", "superseded", "ignored")
                    )
                ),
                nothing,
            )
            .otherwise(unexpected)
        )

        # The vended-logs prefix keeps CloudWatch Logs' resource policy small
        # (https://docs.aws.amazon.com/step-functions/latest/dg/bp-cwl.html).
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/inferstack-{config.name}-rollout",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal_policy(config),
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"inferstack-{config.name}-rollout",
            comment=f"InferStack {config.name}: an upload or a promote/rollback, rolled out",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(prepare),
            timeout=TIMEOUT,
            # Every state transition, without the step dicts (they carry S3 keys and reasons,
            # which the execution history shows to those who may read it).
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            tracing_enabled=True,
        )
        NagSuppressions.add_resource_suppressions(
            self.state_machine.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="Step Functions log delivery (logs:*LogDelivery, DescribeLogGroups, "
                    "resource policies) and X-Ray trace writes have no resource-level "
                    "permissions: AWS requires Resource '*' for them.",
                    applies_to=["Resource::*"],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="The CDK grants lambda:InvokeFunction on the promoter's ARN and its "
                    "qualified ARNs (<ARN>:*); the machine invokes only the promoter function.",
                    applies_to=[RegexAppliesTo(regex="/^Resource::<[A-Za-z0-9]+\\.Arn>:\\*$/")],
                ),
            ],
            apply_to_children=True,
        )


def _attempts(total: cdk.Duration) -> int:
    """Retries at CONFLICT_INTERVAL (no backoff) that span `total`."""
    return math.ceil(total.to_seconds() / CONFLICT_INTERVAL.to_seconds())
