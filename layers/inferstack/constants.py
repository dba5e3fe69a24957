"""Every environment variable the runtime reads, and the defaults, in one place.

Configuration resolves explicit argument > environment variable > default.
"""

from __future__ import annotations

# The names (environment variables, metrics, S3 prefixes) live in inferstack.names,
# which the CDK app imports too; re-exported here (listed in __all__) for the runtime.
from inferstack.names import (
    ENV_BASE_PATH,
    ENV_CACHE_DIR,
    ENV_ENVIRONMENT,
    ENV_INTRA_OP_THREADS,
    ENV_LAMBDA_FUNCTION_NAME,
    ENV_LAMBDA_MEMORY_MB,
    ENV_MAX_REQUEST_BYTES,
    ENV_METRICS,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    ENV_TRACING,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)

DEFAULT_ENVIRONMENT = "local"
DEFAULT_MODEL_VERSION = "1"
DEFAULT_CACHE_DIR = "/tmp/inferstack-models"  # noqa: S108 - Lambda's only writable disk
# Lambda's synchronous invoke payload limit; a local server may raise it.
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024
SERVER_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Lambda grants one vCPU per 1,769 MB of memory (Lambda docs, "Memory and computing power").
LAMBDA_MB_PER_VCPU = 1769

SERVER_NAME = SERVICE_NAME
# Open Inference Protocol extensions this server implements (advertised by GET /v2).
EXTENSIONS = ("binary_tensor_data", "model_repository")

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_ENVIRONMENT",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MODEL_VERSION",
    "ENV_BASE_PATH",
    "ENV_CACHE_DIR",
    "ENV_ENVIRONMENT",
    "ENV_INTRA_OP_THREADS",
    "ENV_LAMBDA_FUNCTION_NAME",
    "ENV_LAMBDA_MEMORY_MB",
    "ENV_MAX_REQUEST_BYTES",
    "ENV_METRICS",
    "ENV_METRICS_NAMESPACE",
    "ENV_MODEL_NAME",
    "ENV_MODEL_URI",
    "ENV_MODEL_VERSION",
    "ENV_TRACING",
    "EXTENSIONS",
    "LAMBDA_MB_PER_VCPU",
    "METRICS_NAMESPACE",
    "SERVER_MAX_REQUEST_BYTES",
    "SERVER_NAME",
    "SERVICE_NAME",
]
