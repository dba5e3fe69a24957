"""The model bucket: versioned, KMS-encrypted, TLS-only, access-logged, EventBridge-enabled.

Layout (the prefixes below): users upload to uploads/<model>/<file>; the promoter
stores content-addressed artifacts under models/<model>/ and records releases/<model>/
(manifests and the live pointer releases/<model>/live.json, which every serving target
loads); serving writes capture/<model>/, drift reads it against baselines/<model>/ and
writes drift-reports/. Every object grant here is scoped to a prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

# The bucket layout is shared with the runtime (inferstack.names); re-exported here for the
# constructs that grant access to it.
from inferstack.names import (
    BASELINES_PREFIX,
    CAPTURE_PREFIX,
    MODELS_PREFIX,
    RELEASES_PREFIX,
    REPORTS_PREFIX,
    UPLOADS_PREFIX,
    live_pointer_key,
)
from infra.config import RemovalPolicy
from infra.constructs.common import removal_policy

if TYPE_CHECKING:
    from infra.config import Environment, ModelBase

__all__ = [
    "BASELINES_PREFIX",
    "CAPTURE_PREFIX",
    "MODELS_PREFIX",
    "RELEASES_PREFIX",
    "REPORTS_PREFIX",
    "UPLOADS_PREFIX",
    "ModelStore",
    "model_read_prefixes",
]


_READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
_WRITE_ACTIONS = ("s3:PutObject", "s3:AbortMultipartUpload")
# Multipart uploads left behind by an interrupted `inferstack push` cost storage forever.
_ABORT_MULTIPART_AFTER = cdk.Duration.days(7)


class ModelStore(Construct):
    """The environment's model bucket, its KMS key and its access-log bucket."""

    UPLOADS_PREFIX = UPLOADS_PREFIX
    MODELS_PREFIX = MODELS_PREFIX
    RELEASES_PREFIX = RELEASES_PREFIX
    CAPTURE_PREFIX = CAPTURE_PREFIX
    BASELINES_PREFIX = BASELINES_PREFIX
    REPORTS_PREFIX = REPORTS_PREFIX

    def __init__(self, scope: Construct, construct_id: str, *, config: Environment) -> None:
        super().__init__(scope, construct_id)
        removal = removal_policy(config)
        destroy = config.removal_policy is RemovalPolicy.DESTROY

        self.key = kms.Key(
            self,
            "Key",
            description=f"InferStack {config.name}: model bucket encryption",
            enable_key_rotation=True,
            removal_policy=removal,
        )

        # S3 server access logs can only be delivered to an SSE-S3 bucket, not SSE-KMS.
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(config.log_retention_days),
                    abort_incomplete_multipart_upload_after=_ABORT_MULTIPART_AFTER,
                )
            ],
            removal_policy=removal,
            auto_delete_objects=destroy,
        )
        NagSuppressions.add_resource_suppressions(
            self.log_bucket,
            [
                NagPackSuppression(
                    id="AwsSolutions-S1",
                    reason="This is the access-log target bucket; logging it to itself "
                    "would create a delivery loop.",
                )
            ],
            apply_to_children=True,
        )

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # One data key per bucket instead of one KMS call per object: cheaper, faster.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="model-bucket/",
            # Uploads reach the promoter as EventBridge "Object Created" events.
            event_bridge_enabled=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    # Old versions are what a rollback returns to: prod keeps them longer.
                    noncurrent_version_expiration=cdk.Duration.days(config.noncurrent_version_days),
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=_ABORT_MULTIPART_AFTER,
                )
            ],
            removal_policy=removal,
            auto_delete_objects=destroy,
        )
        _suppress_cdk_singletons(cdk.Stack.of(self), auto_delete=destroy)

    # ------------------------------------------------------------------ grants

    def grant_model_read(self, grantee: iam.IGrantable, model: ModelBase) -> iam.Grant:
        """Read one model's releases and artifacts (model_read_prefixes), nothing else.

        Plus s3:ListBucket on the bucket: without it S3 answers GetObject of a missing key
        with 403 AccessDenied instead of 404 NoSuchKey (GetObject, "Permissions":
        https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html), and a target
        deployed before the first release could not tell "no release yet" (a healthy 503)
        from a broken grant. The check carries no s3:prefix, so a prefix condition would not
        satisfy it; listing shows key names, never object contents.
        """
        prefixes = model_read_prefixes(model.name)
        grant = self._grant_objects(grantee, _READ_ACTIONS, [f"{p}*" for p in prefixes])
        self.grant_missing_keys_as_not_found(grantee)
        self.key.grant_decrypt(grantee)
        return grant

    def grant_missing_keys_as_not_found(self, grantee: iam.IGrantable) -> iam.Grant:
        """s3:ListBucket on the bucket, so a missing key reads as 404 NoSuchKey, not 403."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.bucket.bucket_arn]
        )

    def grant_prefix_read(self, grantee: iam.IGrantable, *prefixes: str) -> iam.Grant:
        """Read (GetObject, any version) the objects under the given prefixes."""
        grant = self._grant_objects(grantee, _READ_ACTIONS, [f"{p}*" for p in prefixes])
        self.key.grant_decrypt(grantee)
        return grant

    def grant_prefix_write(self, grantee: iam.IGrantable, *prefixes: str) -> iam.Grant:
        """Write (PutObject, multipart included) objects under the given prefixes."""
        grant = self._grant_objects(grantee, _WRITE_ACTIONS, [f"{p}*" for p in prefixes])
        # SSE-KMS writes need a data key; multipart completion decrypts it again.
        self.key.grant(grantee, "kms:GenerateDataKey", "kms:Decrypt")
        return grant

    def grant_prefix_list(self, grantee: iam.IGrantable, *prefixes: str) -> iam.Grant:
        """List the bucket, limited by condition to keys under the given prefixes."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:ListBucket"],
            resource_arns=[self.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
        )

    def live_pointer_uri(self, model: ModelBase) -> str:
        """s3:// URI of the model's live pointer: a target that starts loads the release that
        is live then, so a deploy never undoes a promotion (tokens resolve at deploy time)."""
        return f"s3://{self.bucket.bucket_name}/{live_pointer_key(model.name)}"

    def _grant_objects(
        self, grantee: iam.IGrantable, actions: tuple[str, ...], keys: list[str]
    ) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(actions),
            resource_arns=[self.bucket.arn_for_objects(key) for key in keys],
        )


def model_read_prefixes(model: str) -> list[str]:
    """What a serving target of `model` reads: its release records (the live pointer and
    manifests, releases/<model>/) and its content-addressed artifacts (models/<model>/)."""
    return [f"{RELEASES_PREFIX}{model}/", f"{MODELS_PREFIX}{model}/"]


def _suppress_cdk_singletons(stack: cdk.Stack, *, auto_delete: bool) -> None:
    """Suppress findings on the stack-wide helper functions aws-cdk-lib adds for buckets.

    They are aws-cdk-lib's own custom-resource handlers, whose roles and runtimes this
    app cannot configure.
    """
    reasons = {
        # Turns on EventBridge delivery for the model bucket at deploy time.
        "BucketNotificationsHandler050a0587b7544547bf325f094a3db834": [
            (
                "AwsSolutions-IAM4",
                "CDK's bucket-notifications handler (enables EventBridge "
                "delivery) uses AWSLambdaBasicExecutionRole for its own logs; not configurable.",
            ),
        ],
    }
    if auto_delete:
        reasons["Custom::S3AutoDeleteObjectsCustomResourceProvider"] = [
            (
                "AwsSolutions-IAM4",
                "CDK's auto-delete-objects provider (non-retained "
                "environments only) uses AWSLambdaBasicExecutionRole for its own logs; "
                "not configurable.",
            ),
            (
                "AwsSolutions-L1",
                "CDK's auto-delete-objects provider runtime is chosen by "
                "aws-cdk-lib, not by this app.",
            ),
        ]
    for child_id, findings in reasons.items():
        child = stack.node.try_find_child(child_id)
        if child is not None:
            NagSuppressions.add_resource_suppressions(
                child,
                [NagPackSuppression(id=rule, reason=reason) for rule, reason in findings],
                apply_to_children=True,
            )
