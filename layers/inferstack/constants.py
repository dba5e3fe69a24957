"""The runtime's defaults and fixed values. The names it reads (environment variables,
metrics, S3 prefixes) are in inferstack.names, shared with the CDK app."""

from __future__ import annotations

from inferstack.names import SERVICE_NAME

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
