"""One deployed environment on moto's HTTP server, for end-to-end lifecycle tests and the
upload-to-live benchmark: the bucket (versioned, EventBridge on), the upload rule with the
pattern of the synthesized template delivering to an SQS queue, the SSM outputs the CLI
reads, an image function with its `live` alias, and the rollout state machine.

What moto cannot do is done here, named (shared/AWS-TESTING.md):
- EventBridge drops S3 events bound for Lambda targets: the rule delivers to a queue, and
  `pump()` hands each event to the promoter's own code, as the state machine would;
- Step Functions does not run the promoter: `pump()` runs each new execution's input
  through the same code (the CLI's promote and rollback start executions);
- Lambda never runs an image function: the smoke invoke of a version starts the real
  inference handler in-process (tests/functional/aws_doubles.py).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import boto3
from moto.server import ThreadedMotoServer

from inferstack.names import (
    SSM_MODEL_BUCKET,
    SSM_ROLLOUT_STATE_MACHINE,
    SSM_TARGETS,
    ssm_parameter_name,
)
from inferstack.release.promote import Promoter
from inferstack.release.rollout.lambda_target import LambdaRollout
from inferstack.release.store import ReleaseStore
from tests.functional.aws_doubles import lambda_invoke, no_provisioned_concurrency
from tests.functional.deployed import ROLE, inference_function, served_version

if TYPE_CHECKING:
    from collections.abc import Iterator

BUCKET = "acme-dev-models"
FUNCTION = "inferstack-dev-wine"
ENVIRONMENT = "dev"

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class LifecycleWorld:
    def __init__(self, endpoint: str, upload_pattern: dict[str, Any]) -> None:
        self.endpoint = endpoint
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.lambda_ = boto3.client("lambda", endpoint_url=endpoint)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint)
        self.sfn = boto3.client("stepfunctions", endpoint_url=endpoint)
        self._deploy(upload_pattern)
        self.store = ReleaseStore(self.s3, BUCKET)
        invoke = lambda_invoke(self.lambda_)
        no_provisioned_concurrency(self.lambda_)
        self.promoter = Promoter(
            self.store,
            targets=self.targets,
            rollout_for=lambda model, target, smoke: LambdaRollout(
                self.lambda_,
                function=target["function"],
                alias=target["alias"],
                smoke_body=smoke,
                invoke=invoke,
            ),
        )
        self._executions_seen: set[str] = set()
        self.results: list[dict[str, Any]] = []

    def _deploy(self, pattern: dict[str, Any]) -> None:
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        events = boto3.client("events", endpoint_url=self.endpoint)
        queue = self.sqs.create_queue(QueueName="promoter-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        self.queue = queue
        events.put_rule(Name="uploads", EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule="uploads", Targets=[{"Id": "q", "Arn": arn["Attributes"]["QueueArn"]}]
        )
        inference_function(self.lambda_, function=FUNCTION, bucket=BUCKET)
        self.targets = {"wine": {"target": "lambda", "function": FUNCTION, "alias": "live"}}
        machine = self.sfn.create_state_machine(
            name="inferstack-dev-rollout",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn=ROLE,
        )["stateMachineArn"]
        self.state_machine = machine
        ssm = boto3.client("ssm", endpoint_url=self.endpoint)
        for name, value in (
            (SSM_MODEL_BUCKET, BUCKET),
            (SSM_TARGETS, json.dumps(self.targets)),
            (SSM_ROLLOUT_STATE_MACHINE, machine),
        ):
            ssm.put_parameter(
                Name=ssm_parameter_name(ENVIRONMENT, name), Value=value, Type="String"
            )

    def pump(self) -> int:
        """Deliver what is pending (upload events, started executions) to the promoter."""
        handled = 0
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10)
            batch = messages.get("Messages", [])
            if not batch:
                break
            for message in batch:
                event = json.loads(message["Body"])
                if event.get("detail-type") == "Object Created":
                    self._run(self.promoter.prepare(event))
                    handled += 1
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=message["ReceiptHandle"])
        listing = self.sfn.list_executions(stateMachineArn=self.state_machine)
        for execution in reversed(listing["executions"]):
            arn = execution["executionArn"]
            if arn in self._executions_seen:
                continue
            self._executions_seen.add(arn)
            request = json.loads(self.sfn.describe_execution(executionArn=arn)["input"])
            if request["action"] == "promote":
                step = self.promoter.promotion(
                    request["model"], request["release"], by=request["by"]
                )
            else:
                step = self.promoter.rollback(
                    request["model"], to=request.get("to"), by=request["by"]
                )
            self._run(step)
            handled += 1
        return handled

    def _run(self, step: dict[str, Any]) -> None:
        self.results.append(self.promoter.run(step, deadline_s=60))

    def served_version(self) -> str:
        """What a new execution environment of the alias's version serves."""
        return served_version(self.lambda_, FUNCTION)

    def cli_env(self) -> dict[str, str]:
        """The environment a user's shell would give `inferstack` to reach this account."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ENDPOINT_URL": self.endpoint,
            "COLUMNS": "200",
            "NO_COLOR": "1",
            **CREDENTIALS,
        }


def upload_rule_pattern(template: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The promoter's upload rule pattern from a synthesized template, bucket filled in."""
    (rule,) = [
        r
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::Events::Rule" and "UploadRule" in k
    ]
    pattern = json.loads(json.dumps(rule["Properties"]["EventPattern"]))
    pattern["detail"]["bucket"]["name"] = [bucket]
    return dict(pattern)


def moto_server() -> Iterator[str]:
    """A fresh account: moto keeps its state per process, so it is reset on both ends."""
    import logging
    import urllib.request

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every call
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    def reset() -> None:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))

    try:
        reset()
        yield endpoint
    finally:
        reset()
        server.stop()
