"""Names the runtime reads and the CDK app sets, in one dependency-free module.

Both sides import this (the runtime, and infra/ which configures it), so an environment
variable, a metric or an S3 prefix cannot be renamed on one side only. Nothing here
imports more than the standard library's `re`: it sits on the cold-start path.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- environment
# What to serve (every host: Lambda, `inferstack serve`, the SageMaker/ECS container).
ENV_MODEL_NAME = "INFERSTACK_MODEL_NAME"
ENV_MODEL_URI = "INFERSTACK_MODEL_URI"
ENV_MODEL_VERSION = "INFERSTACK_MODEL_VERSION"

# Where and how.
ENV_ENVIRONMENT = "INFERSTACK_ENV"
ENV_CACHE_DIR = "INFERSTACK_CACHE_DIR"
ENV_MAX_REQUEST_BYTES = "INFERSTACK_MAX_REQUEST_BYTES"
ENV_BASE_PATH = "INFERSTACK_BASE_PATH"
ENV_INTRA_OP_THREADS = "INFERSTACK_INTRA_OP_THREADS"
ENV_METRICS = "INFERSTACK_METRICS"
ENV_TRACING = "INFERSTACK_TRACING"
ENV_HOST = "INFERSTACK_HOST"
ENV_PORT = "INFERSTACK_PORT"
ENV_ACCESS_LOG = "INFERSTACK_ACCESS_LOG"
# Dynamic batching of the GPU container (models/ batcher).
ENV_MAX_BATCH_SIZE = "INFERSTACK_MAX_BATCH_SIZE"
ENV_MAX_QUEUE_DELAY_US = "INFERSTACK_MAX_QUEUE_DELAY_US"
# Requests waiting per model (full -> 429) and the longest a request may wait to be run
# (0: no limit), as Triton's queue policy.
ENV_MAX_QUEUE_SIZE = "INFERSTACK_MAX_QUEUE_SIZE"
ENV_QUEUE_TIMEOUT_US = "INFERSTACK_QUEUE_TIMEOUT_US"
# GPU container: which backend serves (auto | tensorrt | onnxruntime) and which release
# variant it loads (fp32 | fp16).
ENV_BACKEND = "INFERSTACK_BACKEND"
ENV_PRECISION = "INFERSTACK_PRECISION"
# Share of requests captured for the drift check (0..1; 0 = none): Lambda and ECS hosts.
ENV_CAPTURE_RATE = "INFERSTACK_CAPTURE_RATE"

# Powertools reads these itself; the CDK app sets them on every function and container.
ENV_POWERTOOLS_SERVICE = "POWERTOOLS_SERVICE_NAME"
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"

# The promoter's and drift check's own settings (set by the CDK app).
ENV_MODEL_BUCKET = "MODEL_BUCKET"
ENV_TARGETS = "INFERSTACK_TARGETS"
# The SNS topic the drift check tells when it finds drift (with the report's location).
ENV_ALARM_TOPIC_ARN = "INFERSTACK_ALARM_TOPIC_ARN"

# Set by the platforms, never by us.
ENV_LAMBDA_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
ENV_LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"
ENV_SAGEMAKER_PORT = "SAGEMAKER_BIND_TO_PORT"

# --------------------------------------------------------------------------- metrics
SERVICE_NAME = "inferstack"
METRICS_NAMESPACE = "InferStack"

DIM_SERVICE = "service"  # Powertools adds it to every metric it emits with a service set
DIM_ENVIRONMENT = "environment"
DIM_MODEL = "model"
DIM_MODEL_VERSION = "model_version"
DIM_ERROR_CLASS = "ErrorClass"

METRIC_REQUESTS = "Requests"
METRIC_LATENCY = "Latency"
METRIC_MODEL_LATENCY = "ModelLatency"
METRIC_REQUEST_BYTES = "RequestBytes"
METRIC_RESPONSE_BYTES = "ResponseBytes"
METRIC_COLD_START = "ColdStart"  # 1 on the first request of every new execution environment
# 1 on the first request of an environment restored from a SnapStart snapshot (a subset of
# ColdStart: initialized = ColdStart - RestoredStart).
METRIC_RESTORED_START = "RestoredStart"
# Lambda's own "Restore Duration" (ms) of a restored environment, from its REPORT log line.
METRIC_RESTORE_DURATION = "RestoreDuration"
METRIC_ERRORS = "Errors"
# 1 when a request was answered 5xx, else 0, in the per-request document (by model_version):
# the Lambda canary reads its own version's error rate from it.
METRIC_SERVER_ERRORS = "ServerErrors"
METRIC_DRIFT_SCORE = "DriftScore"
METRIC_DRIFTED_FEATURES = "DriftedFeatures"
# Captured records dropped (over the per-record size cap) by a serving host.
METRIC_CAPTURE_SKIPPED = "CaptureSkipped"
METRIC_PROMOTION_FAILURES = "PromotionFailures"
METRIC_GPU_UTILIZATION = "GPUUtilization"
METRIC_GPU_MEMORY_UTILIZATION = "GPUMemoryUtilization"
# Dynamic batching: rows per batch run and time spent queued (ms), per model.
METRIC_BATCH_SIZE = "BatchSize"
METRIC_QUEUE_TIME = "QueueTime"

# --------------------------------------------------------------------------- S3 layout
UPLOADS_PREFIX = "uploads/"
MODELS_PREFIX = "models/"
RELEASES_PREFIX = "releases/"
CAPTURE_PREFIX = "capture/"
BASELINES_PREFIX = "baselines/"
REPORTS_PREFIX = "drift-reports/"
# TensorRT engines built by the GPU container: engines/<model>/<key digest>/.
ENGINES_PREFIX = "engines/"

# Releases (inferstack.release writes them; serving hosts read only the pointer's and the
# manifest's "release" and "artifact" fields to find what to load).
# releases/<model>/live.json: the live pointer; releases/<model>/<id>/manifest.json: one
# immutable release; models/<model>/<sha256>/<file>: content-addressed artifacts.
LIVE_POINTER_FILE = "live.json"
MANIFEST_FILE = "manifest.json"


def live_pointer_key(model: str) -> str:
    return f"{RELEASES_PREFIX}{model}/{LIVE_POINTER_FILE}"


def manifest_key(model: str, release: str) -> str:
    return f"{RELEASES_PREFIX}{model}/{release}/{MANIFEST_FILE}"


# --------------------------------------------------------------------------- SSM outputs
# The stack mirrors its outputs to SSM under /inferstack/<env>/; the CLI reads them there.
SSM_PREFIX = "/inferstack/"
SSM_API_URL = "api-url"
SSM_MODEL_BUCKET = "model-bucket"
SSM_ALARM_TOPIC_ARN = "alarm-topic-arn"
SSM_PROMOTER_FUNCTION = "promoter-function"
SSM_TARGETS = "targets"
SSM_ROLLOUT_STATE_MACHINE = "rollout-state-machine"


def ssm_parameter_name(environment: str, name: str) -> str:
    """/inferstack/<env>/<name>: where the stack publishes one output for the CLI."""
    return f"{SSM_PREFIX}{environment}/{name}"


# The server-is-up probe every GPU platform checks (SageMaker's own path; ECS uses it too).
PING_PATH = "/ping"


# --------------------------------------------------------------------------- model names
# One rule everywhere (CLI, Lambda, CDK configuration): a name is one URL path segment
# that needs no quoting, and maps onto every AWS name derived from it (see aws_name).
MODEL_NAME_MAX = 48
MODEL_NAME_RULE = (
    f"1 to {MODEL_NAME_MAX} characters: letters, digits, '_', '-' and '.', "
    "starting and ending with a letter or digit"
)
_MODEL_NAME = re.compile(rf"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX - 2}}}[A-Za-z0-9])?$")


def model_name_problem(name: str) -> str | None:
    """Why `name` is not a valid model name, or None when it is."""
    if _MODEL_NAME.fullmatch(name):
        return None
    return f"model name {name!r} is not valid: {MODEL_NAME_RULE}"


def aws_name(name: str) -> str:
    """A model name as AWS resources that allow only lower-case letters, digits and '-'
    spell it (SageMaker endpoint and model names, for one): '_' and '.' become '-'."""
    return re.sub(r"[_.]", "-", name).lower()


# --------------------------------------------------------------------------- AWS SDK region
# Set by Lambda, Fargate and the CDK's Ec2TaskDefinition (awsvpc): AWS_REGION. boto3 reads
# only AWS_DEFAULT_REGION, so the runtime's S3 client reads AWS_REGION itself (sources.py).
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
