"""The pieces of a deployed environment, made on moto as the CDK app makes them in AWS:
fake credentials, the versioned model bucket, an inference function with its `live` alias,
an upload and the S3 event AWS sends for it, and a request through the alias."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from inferstack.names import live_pointer_key

from .conftest import EVENTS_DIR, json_infer_body, reference_rows

if TYPE_CHECKING:
    import pytest

ROLE = "arn:aws:iam::123456789012:role/inferstack-function"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/inference:1"
# AWS's documented "Object Created" event (tests/events/SOURCES.md says where from).
EVENT_SAMPLE = EVENTS_DIR / "s3EventBridgeObjectCreated_awsdocs-ev-events.json"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for moto, and nothing of the host's AWS configuration or endpoints."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def versioned_bucket(s3: Any, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def put_artifact(
    s3: Any, bucket: str, data: bytes, name: str = "model.onnx", model: str = "wine"
) -> dict[str, Any]:
    """`data` stored where the promoter stores an artifact (models/<model>/<sha256>/<name>),
    and its reference as a release record holds it."""
    digest = hashlib.sha256(data).hexdigest()
    key = f"models/{model}/{digest}/{name}"
    put = s3.put_object(Bucket=bucket, Key=key, Body=data)
    return {"bucket": bucket, "key": key, "version_id": put["VersionId"], "sha256": digest}


def inference_function(client: Any, *, function: str, bucket: str, model: str = "wine") -> str:
    """The image function serving `model`'s live pointer, version 1 behind alias `live`."""
    import boto3

    iam = boto3.client("iam")  # AWS_ENDPOINT_URL, when set, reaches moto's server
    iam.create_role(RoleName=ROLE.rpartition("/")[2], AssumeRolePolicyDocument="{}")
    client.create_function(
        FunctionName=function,
        Role=ROLE,
        PackageType="Image",
        Code={"ImageUri": IMAGE},
        Environment={
            "Variables": {
                "INFERSTACK_MODEL_NAME": model,
                "INFERSTACK_MODEL_URI": f"s3://{bucket}/{live_pointer_key(model)}",
                "INFERSTACK_METRICS": "off",
            }
        },
    )
    first = str(client.publish_version(FunctionName=function)["Version"])
    client.create_alias(FunctionName=function, Name="live", FunctionVersion=first)
    return first


def upload_event(s3: Any, bucket: str, key: str, body: bytes, **metadata: str) -> dict[str, Any]:
    """Put `body` at `key`; the "Object Created" event AWS would send for it (AWS's
    documented sample with this object's bucket, key, size, ETag and version)."""
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
    event: dict[str, Any] = json.loads(EVENT_SAMPLE.read_text())
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"].update(
        key=key, size=len(body), etag=put["ETag"].strip('"'), **{"version-id": put["VersionId"]}
    )
    return event


def through_alias(client: Any, function: str, model: str = "wine") -> dict[str, Any]:
    """One inference through the alias's version, in a new execution environment of it, as
    API Gateway calls it; the proxy response."""
    from inferstack.bootstrap import lambda_entry_from_env

    version = client.get_alias(FunctionName=function, Name="live")["FunctionVersion"]
    config = client.get_function_configuration(FunctionName=function, Qualifier=version)
    handler = lambda_entry_from_env(config["Environment"]["Variables"])
    event = {
        "httpMethod": "POST",
        "path": f"/v2/models/{model}/infer",
        "headers": {},
        "body": json_infer_body(reference_rows(2)),
        "isBase64Encoded": False,
    }
    response: dict[str, Any] = handler(event, None)
    return response


def served_version(client: Any, function: str) -> str:
    """The release the alias serves, or "HTTP <status>: <body>" when it does not answer."""
    reply = through_alias(client, function)
    if reply["statusCode"] != 200:
        return f"HTTP {reply['statusCode']}: {reply['body']}"
    return str(json.loads(reply["body"])["model_version"])
