"""Captured traffic from a serving log group to S3: the managed path of inferstack.capture.

A Lambda function or ECS container writes each sampled request as one SageMaker
data-capture record on stdout, which lands in its CloudWatch Logs log group. A subscription
filter picks those lines out and sends them to an Amazon Data Firehose stream, which
decompresses CloudWatch Logs' batches, extracts each message, ends it with a newline and
writes gzipped JSON Lines under capture/<model>/yyyy/MM/dd/HH/ in the model bucket. No
code of ours buffers or retries: CloudWatch Logs retries a throttled delivery for up to 24
hours, and Firehose keeps what it accepted until S3 takes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as destinations
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from inferstack.names import CAPTURE_PREFIX
from infra.constructs.common import suppress_object_wildcards

if TYPE_CHECKING:
    from infra.config import ModelBase
    from infra.constructs.model_store import ModelStore

# Only the capture records (inferstack.capture), not the EMF metrics or the logs beside
# them: a JSON filter pattern on a key every record has
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html).
CAPTURE_FILTER_PATTERN = '{ $.captureData.endpointInput.mode = "INPUT" }'
# Objects land in S3 five minutes (or 64 MiB) after their first record at the latest
# (https://docs.aws.amazon.com/firehose/latest/dev/basic-deliver.html): the drift check
# reads a window that ended at least that long ago.
BUFFER_INTERVAL = cdk.Duration.minutes(5)
BUFFER_SIZE = cdk.Size.mebibytes(64)
CAPTURE_ERRORS_PREFIX = "capture-errors/"
# Firehose names an object <stream>-<version>-<date>-<uuid><FileExtension>
# (https://docs.aws.amazon.com/firehose/latest/dev/s3-object-name.html).
FILE_EXTENSION = ".jsonl.gz"
# (its construct id; constructs turns the "/" of "@aws-cdk/aws-kinesisfirehose.CidrBlocks"
# into "--", and try_remove_child takes the id as stored)
_FIREHOSE_CIDR_MAPPING = "@aws-cdk--aws-kinesisfirehose.CidrBlocks"


def capture_key_prefix(model: str) -> str:
    """capture/<model>/yyyy/MM/dd/HH/, hour by hour as SageMaker's capture. Firehose fills in
    the UTC arrival hour (https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html);
    the reader filters on each record's inferenceTime, never on the key."""
    return f"{CAPTURE_PREFIX}{model}/!{{timestamp:yyyy/MM/dd/HH}}/"


def capture_error_prefix(model: str) -> str:
    """Where Firehose puts what it could not process, outside capture/ (the reader's)."""
    return (
        f"{CAPTURE_ERRORS_PREFIX}{model}/!{{firehose:error-output-type}}/"
        "!{timestamp:yyyy/MM/dd/HH}/"
    )


class CaptureDelivery(Construct):
    """Subscription filter on one serving log group -> Firehose -> capture/<model>/ in S3."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: ModelBase,
        store: ModelStore,
        log_group: logs.ILogGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        # Our own role, scoped to this model's prefixes: the S3 destination would otherwise
        # grant read and write on the whole bucket.
        self.role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal("firehose.amazonaws.com"),
            description=f"Firehose: {model.name}'s captured traffic into the model bucket",
        )
        prefixes = [f"{CAPTURE_PREFIX}{model.name}/", f"{CAPTURE_ERRORS_PREFIX}{model.name}/"]
        store.grant_prefix_write(self.role, *prefixes)
        # Firehose's S3 delivery also needs the bucket itself
        # (https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-s3).
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[store.bucket.bucket_arn],
            )
        )
        immutable = iam.Role.from_role_arn(
            self, "DeliveryRoleRef", self.role.role_arn, mutable=False
        )
        self.stream = firehose.DeliveryStream(
            self,
            "Stream",
            destination=firehose.S3Bucket(
                store.bucket,
                role=immutable,
                data_output_prefix=capture_key_prefix(model.name),
                error_output_prefix=capture_error_prefix(model.name),
                # CloudWatch Logs sends gzipped batches of events; these three steps turn
                # them back into one record per line
                # (https://docs.aws.amazon.com/firehose/latest/dev/writing-with-cloudwatch-logs.html).
                processors=[
                    firehose.DecompressionProcessor(),
                    firehose.CloudWatchLogProcessor(data_message_extraction=True),
                    firehose.AppendDelimiterToRecordProcessor(),
                ],
                compression=firehose.Compression.GZIP,
                file_extension=FILE_EXTENSION,
                buffering_interval=BUFFER_INTERVAL,
                buffering_size=BUFFER_SIZE,
                encryption_key=store.key,
            ),
            encryption=firehose.StreamEncryption.aws_owned_key(),
        )
        # The L2 stream adds a region -> Firehose CIDR mapping for its `connections` (VPC
        # destinations such as Redshift); an S3 destination never reads it, and cfn-lint
        # flags an unused mapping (W7001).
        cdk.Stack.of(self).node.try_remove_child(_FIREHOSE_CIDR_MAPPING)
        # Firehose checks its role when the stream is created: the policy must exist first.
        policy = self.role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.stream.node.add_dependency(policy)
        self.subscription = logs.SubscriptionFilter(
            self,
            "Subscription",
            log_group=log_group,
            destination=destinations.FirehoseDestination(self.stream),
            filter_pattern=logs.FilterPattern.literal(CAPTURE_FILTER_PATTERN),
        )
        suppress_object_wildcards(
            self.role,
            prefixes,
            f"Firehose writes {model.name}'s captured traffic under {prefixes[0]} and its "
            f"delivery errors under {prefixes[1]}: object names are made at delivery time.",
        )
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="SSE-KMS writes need data keys of the model bucket's key only.",
                    applies_to=["Action::kms:GenerateDataKey*", "Action::kms:ReEncrypt*"],
                )
            ],
            apply_to_children=True,
        )
