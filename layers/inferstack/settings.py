"""One settings object for every host, resolved explicit argument > environment > default.

The Lambda function, `inferstack serve` and the SageMaker/ECS container all build a
`Settings` from their environment (`Settings.from_env`); the CLI then overrides fields
with the flags a user gave. Read when a host starts (never at import), so tests can
pass a mapping. Plain NamedTuples and the standard library only: this sits on the
Lambda cold-start path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from inferstack.constants import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MODEL_VERSION,
    SERVER_MAX_REQUEST_BYTES,
)
from inferstack.exceptions import InferStackError
from inferstack.names import (
    ENV_ACCESS_LOG,
    ENV_AWS_DEFAULT_REGION,
    ENV_AWS_REGION,
    ENV_BACKEND,
    ENV_BASE_PATH,
    ENV_CACHE_DIR,
    ENV_CAPTURE_RATE,
    ENV_ENVIRONMENT,
    ENV_HOST,
    ENV_INTRA_OP_THREADS,
    ENV_LAMBDA_MEMORY_MB,
    ENV_MAX_BATCH_SIZE,
    ENV_MAX_QUEUE_DELAY_US,
    ENV_MAX_QUEUE_SIZE,
    ENV_MAX_REQUEST_BYTES,
    ENV_METRICS,
    ENV_METRICS_NAMESPACE,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    ENV_PORT,
    ENV_POWERTOOLS_LOG_LEVEL,
    ENV_POWERTOOLS_SERVICE,
    ENV_PRECISION,
    ENV_QUEUE_TIMEOUT_US,
    ENV_SAGEMAKER_PORT,
    ENV_TRACING,
    METRICS_NAMESPACE,
    SERVICE_NAME,
    model_name_problem,
)
from inferstack.sources import parse_s3_uri

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Every variable a host reads (RUNTIME_ENVIRONMENT_VARIABLES): the ones Settings reads
# (Powertools' service and namespace included: we pass them to it), the one Powertools
# reads itself, and the platforms' own. tests/infra/test_names.py checks that the CDK app
# sets no variable outside this set on a serving function or container.
SETTINGS_VARIABLES = frozenset(
    {
        ENV_MODEL_NAME,
        ENV_MODEL_URI,
        ENV_MODEL_VERSION,
        ENV_ENVIRONMENT,
        ENV_MAX_REQUEST_BYTES,
        ENV_BASE_PATH,
        ENV_INTRA_OP_THREADS,
        ENV_CACHE_DIR,
        ENV_METRICS,
        ENV_TRACING,
        ENV_HOST,
        ENV_PORT,
        ENV_ACCESS_LOG,
        ENV_MAX_BATCH_SIZE,
        ENV_MAX_QUEUE_DELAY_US,
        ENV_MAX_QUEUE_SIZE,
        ENV_QUEUE_TIMEOUT_US,
        ENV_BACKEND,
        ENV_PRECISION,
        ENV_CAPTURE_RATE,
        ENV_POWERTOOLS_SERVICE,
        ENV_METRICS_NAMESPACE,
    }
)
# Powertools' Logger reads its level itself; see "Environment variables" in
# https://docs.aws.amazon.com/powertools/python/latest/#environment-variables
POWERTOOLS_VARIABLES = frozenset({ENV_POWERTOOLS_LOG_LEVEL})
# The platforms' own, read by the runtime (cpus.py, the port, the S3 client's region).
PLATFORM_VARIABLES = frozenset(
    {
        ENV_LAMBDA_MEMORY_MB,
        ENV_SAGEMAKER_PORT,
        ENV_AWS_REGION,
        ENV_AWS_DEFAULT_REGION,
    }
)
RUNTIME_ENVIRONMENT_VARIABLES = SETTINGS_VARIABLES | POWERTOOLS_VARIABLES | PLATFORM_VARIABLES

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")
BOOLEAN_VALUES = "on/off, true/false, yes/no or 1/0 (any case)"
PORT_RANGE = (1, 65535)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # SageMaker's port when it assigns none
DEFAULT_MAX_QUEUE_SIZE = 128
# Which backend serves a model: "auto" is TensorRT where a GPU and TensorRT are found, else
# ONNX Runtime on the CPU. Which release variant a GPU host loads: the FP32 original or the
# FP16 copy made at release time.
BACKENDS = ("auto", "tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16")


class ConfigurationError(InferStackError):
    """A required setting is missing or malformed (fails the host at start)."""


class ModelConfig(NamedTuple):
    name: str
    uri: str
    version: str


class Settings(NamedTuple):
    """How a host serves. Lambda uses the model and request fields; servers use all."""

    models: tuple[ModelConfig, ...] = ()
    environment: str = DEFAULT_ENVIRONMENT
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    base_path: str = ""  # Lambda: a custom domain's base path mapping
    threads: int | None = None  # ONNX Runtime intra-op threads; None: the CPUs available
    cache_dir: str | None = None  # where s3:// models are cached
    metrics: bool = True
    metrics_namespace: str = METRICS_NAMESPACE
    service: str = SERVICE_NAME
    tracing: bool = False
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    access_log: bool = False
    # Dynamic batching (the server's batcher, models/batching.py): 1 and 0 mean no batching.
    max_batch_size: int = 1
    max_queue_delay_us: int = 0
    # Admission: requests waiting per model (a full queue answers 429) and the longest one
    # may wait before it runs (0: no limit), as Triton's queue policy.
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    queue_timeout_us: int = 0
    backend: str = "auto"
    precision: str = "fp32"
    # Share of inferences captured for the drift check (inferstack.capture); 0: none.
    capture_rate: float = 0.0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, server: bool = False
    ) -> Settings:
        """The settings `environ` (default: os.environ) describes. `server` selects the
        local server's defaults (64 MiB bodies, metrics off) over the Lambda function's."""
        env = os.environ if environ is None else environ
        model = _model_from_env(env)
        return cls(
            models=(model,) if model else (),
            environment=_text(env, ENV_ENVIRONMENT) or DEFAULT_ENVIRONMENT,
            max_request_bytes=_int(
                env,
                ENV_MAX_REQUEST_BYTES,
                SERVER_MAX_REQUEST_BYTES if server else DEFAULT_MAX_REQUEST_BYTES,
                minimum=1,
            ),
            base_path=_text(env, ENV_BASE_PATH).rstrip("/"),
            threads=_int(env, ENV_INTRA_OP_THREADS, 0, minimum=1) or None,
            cache_dir=_text(env, ENV_CACHE_DIR) or None,
            metrics=env_flag(env, ENV_METRICS, default=not server),
            metrics_namespace=_text(env, ENV_METRICS_NAMESPACE) or METRICS_NAMESPACE,
            service=_text(env, ENV_POWERTOOLS_SERVICE) or SERVICE_NAME,
            tracing=env_flag(env, ENV_TRACING, default=False),
            host=_text(env, ENV_HOST) or DEFAULT_HOST,
            port=_port_from_env(env),
            access_log=env_flag(env, ENV_ACCESS_LOG, default=False),
            max_batch_size=_int(env, ENV_MAX_BATCH_SIZE, 1, minimum=1),
            max_queue_delay_us=_int(env, ENV_MAX_QUEUE_DELAY_US, 0, minimum=0),
            max_queue_size=_int(env, ENV_MAX_QUEUE_SIZE, DEFAULT_MAX_QUEUE_SIZE, minimum=1),
            queue_timeout_us=_int(env, ENV_QUEUE_TIMEOUT_US, 0, minimum=0),
            backend=_choice(env, ENV_BACKEND, BACKENDS),
            precision=_choice(env, ENV_PRECISION, PRECISIONS),
            capture_rate=capture_rate_from_env(env),
        )

    @property
    def model(self) -> ModelConfig:
        """The one model a Lambda function serves."""
        if len(self.models) != 1:
            raise ConfigurationError(
                f"set {ENV_MODEL_NAME} and {ENV_MODEL_URI} in the function's environment"
            )
        return self.models[0]

    def summary(self) -> str:
        """One line for the start-up log: what this host will do."""
        on = {True: "on", False: "off"}
        return (
            f"environment={self.environment} max_request_bytes={self.max_request_bytes} "
            f"threads={self.threads or 'auto'} metrics={on[self.metrics]} "
            f"tracing={on[self.tracing]} access_log={on[self.access_log]} "
            f"max_batch_size={self.max_batch_size} max_queue_delay_us={self.max_queue_delay_us} "
            f"max_queue_size={self.max_queue_size} queue_timeout_us={self.queue_timeout_us} "
            f"backend={self.backend} precision={self.precision} "
            f"capture_rate={self.capture_rate:g}"
        )


def model_version(uri: str, explicit: str | None = None) -> str:
    """The version clients see, on every host: explicit, else the S3 versionId, else "1"."""
    if explicit:
        return explicit
    if uri.startswith("s3://"):
        return parse_s3_uri(uri).version_id or DEFAULT_MODEL_VERSION
    return DEFAULT_MODEL_VERSION


def model_config(name: str, uri: str, *, source: str, version: str | None = None) -> ModelConfig:
    """A model to serve, refused when its name is not one a URL can reach."""
    problem = model_name_problem(name)
    if problem:
        raise ConfigurationError(f"{source}: {problem}")
    return ModelConfig(name, uri, model_version(uri, version))


def parse_bool(raw: str, source: str) -> bool:
    """One parser for every boolean setting: on/off, true/false, yes/no, 1/0, any case."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{source} must be {BOOLEAN_VALUES}, not {raw!r}")


def env_flag(env: Mapping[str, str], key: str, *, default: bool) -> bool:
    raw = env.get(key, "")
    return parse_bool(raw, key) if raw.strip() else default


def check_range(value: int, source: str, minimum: int, maximum: int | None = None) -> int:
    """`value` if it lies in [minimum, maximum], else a ConfigurationError naming `source`."""
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigurationError(f"{source} must be {_range_text(minimum, maximum)}, not {value}")
    return value


def check_choice(value: str, source: str, choices: Sequence[str]) -> str:
    """`value` (any case, spaces trimmed) if it is one of `choices`, else a
    ConfigurationError naming `source`."""
    word = value.strip().lower()
    if word not in choices:
        raise ConfigurationError(f"{source} must be one of {', '.join(choices)}, not {value!r}")
    return word


def _range_text(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"a whole number from {minimum} to {maximum}"
    return f"a whole number of at least {minimum}"


def capture_rate_from_env(env: Mapping[str, str]) -> float:
    """INFERSTACK_CAPTURE_RATE: a fraction from 0 to 1 (0.1 captures one request in ten);
    unset or empty: 0, no capture (SageMaker captures with its own DataCapture instead)."""
    raw = _text(env, ENV_CAPTURE_RATE)
    if not raw:
        return 0.0
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:  # also refuses nan and inf
        raise ConfigurationError(
            f"{ENV_CAPTURE_RATE} must be a fraction from 0 to 1 (0.1 is 10%), not {raw!r}"
        )
    return rate


def _text(env: Mapping[str, str], key: str) -> str:
    return env.get(key, "").strip()


def _int(
    env: Mapping[str, str],
    key: str,
    default: int,
    *,
    minimum: int,
    maximum: int | None = None,
) -> int:
    raw = _text(env, key)
    if not raw:
        return default
    if not raw.isdigit():  # no sign, no spaces inside, no "1e3"
        raise ConfigurationError(f"{key} must be {_range_text(minimum, maximum)}, not {raw!r}")
    return check_range(int(raw), key, minimum, maximum)


def _choice(env: Mapping[str, str], key: str, choices: Sequence[str]) -> str:
    """One of `choices`; unset or empty: the first."""
    raw = _text(env, key)
    return check_choice(raw, key, choices) if raw else choices[0]


def _port_from_env(env: Mapping[str, str]) -> int:
    # SageMaker assigns the port through SAGEMAKER_BIND_TO_PORT (8080 when absent):
    # https://docs.aws.amazon.com/sagemaker/latest/dg/multi-container-troubleshooting.html
    # The platform's choice wins over ours; a --port flag still wins over both.
    key = ENV_SAGEMAKER_PORT if _text(env, ENV_SAGEMAKER_PORT) else ENV_PORT
    return _int(env, key, DEFAULT_PORT, minimum=PORT_RANGE[0], maximum=PORT_RANGE[1])


def _model_from_env(env: Mapping[str, str]) -> ModelConfig | None:
    name, uri = _text(env, ENV_MODEL_NAME), _text(env, ENV_MODEL_URI)
    if not name and not uri:
        return None
    if not (name and uri):
        missing = ENV_MODEL_URI if name else ENV_MODEL_NAME
        raise ConfigurationError(
            f"{missing} is not set: set both {ENV_MODEL_NAME} and {ENV_MODEL_URI}"
        )
    return model_config(name, uri, source=ENV_MODEL_NAME, version=_text(env, ENV_MODEL_VERSION))
