"""Every environment variable the runtime reads, and the defaults, in one place.

Configuration resolves explicit argument > environment variable > default.
"""

from __future__ import annotations

# What to serve (the Lambda function reads these; `inferstack serve` takes flags).
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
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"

# Set by the Lambda service; used to size thread pools and detect the platform.
ENV_LAMBDA_MEMORY_MB = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
ENV_LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"

DEFAULT_ENVIRONMENT = "local"
DEFAULT_MODEL_VERSION = "1"
DEFAULT_METRICS_NAMESPACE = "InferStack"
DEFAULT_CACHE_DIR = "/tmp/inferstack-models"  # noqa: S108 - Lambda's only writable disk
# Lambda's synchronous invoke payload limit; a local server may raise it.
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024
SERVER_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Lambda grants one vCPU per 1,769 MB of memory (Lambda docs, "Memory and computing power").
LAMBDA_MB_PER_VCPU = 1769

SERVER_NAME = "inferstack"
# Open Inference Protocol extensions this server implements (advertised by GET /v2).
EXTENSIONS = ("binary_tensor_data", "model_repository")
