"""Typed, validated configuration of one environment (infra/environments/<name>.toml).

`load_environment("prod")` reads the file and fails with a message that names the file,
the key and what is expected, before any construct is built.
"""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from inferstack.names import MODEL_NAME_RULE, UPLOADS_PREFIX, aws_name, model_name_problem

ENVIRONMENTS_DIR = Path(__file__).resolve().parent / "environments"

# Environment names feed stack, API and SSM names: their own, narrower rule.
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]


def _model_name(value: str) -> str:
    if model_name_problem(value) is not None:
        raise ValueError(f"model names are {MODEL_NAME_RULE}")
    return value


# The one URL-safe rule of inferstack.names (CLI, Lambda and CDK share it); AWS names
# derived from a model name go through aws_name().
ModelName = Annotated[str, AfterValidator(_model_name)]
# EventBridge Scheduler expressions: rate(...) or cron(...).
Schedule = Annotated[
    str, Field(pattern=r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$")
]


# API Gateway waits at most 29 s for an integration (REST API quota "Integration timeout",
# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html);
# infra/constructs/api.py sets the same value. A function allowed to run that long answers
# after the client already got a 504, so functions behind the API stop with a margin for
# the invoke and the response's way back.
API_INTEGRATION_TIMEOUT_S = 29
LAMBDA_TIMEOUT_MARGIN_S = 3
LAMBDA_TIMEOUT_MAX_S = API_INTEGRATION_TIMEOUT_S - LAMBDA_TIMEOUT_MARGIN_S
LAMBDA_TIMEOUT_DEFAULT_S = 25
# A canary's bake must end well inside the rollout's 3-hour execution (rollout_machine.TIMEOUT,
# = promote.ROLLOUT_STALE_S), whose Start may first wait up to 2 hours for another rollout of
# the model (rollout_machine.SLOT_WAIT): 40 minutes leave room for the metrics to settle and
# provisioned concurrency to become READY (tests/infra/test_canary_infra.py checks the sum).
CANARY_BAKE_MAX_MINUTES = 40
# CreateEndpoint: EndpointName is at most 63 characters
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html).
SAGEMAKER_ENDPOINT_NAME_MAX = 63
# Share of a model's requests captured for the drift check unless its capture_rate says.
DEFAULT_CAPTURE_RATE = 0.1
# Lambda SnapStart's limits (https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html,
# "Supported features and limitations"): "SnapStart does not support provisioned concurrency,
# Amazon Elastic File System (Amazon EFS), or ephemeral storage greater than 512 MB" (arm64 is
# no longer among them; the kit uses no EFS). The model cache lives in /tmp
# (inferstack.constants.DEFAULT_CACHE_DIR), so a SnapStart model's upload bound leaves the
# runtime 64 MB of the 512 beside it.
SNAPSTART_DOCS = "https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html"
SNAPSTART_MAX_EPHEMERAL_MB = 512
SNAPSTART_TMP_HEADROOM_MB = 64
SNAPSTART_MAX_MODEL_MB = SNAPSTART_MAX_EPHEMERAL_MB - SNAPSTART_TMP_HEADROOM_MB


def sagemaker_endpoint_name(environment: str, model: str) -> str:
    """The deterministic SageMaker endpoint name of a model (see sagemaker_model.py).

    Endpoint names allow only letters, digits and '-' and are case-insensitive, so the
    model name goes through aws_name().
    """
    return f"inferstack-{environment}-{aws_name(model)}"


class ConfigError(Exception):
    """A configuration file is missing or invalid; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(StrEnum):
    LAMBDA = "lambda"
    SAGEMAKER = "sagemaker"
    ECS = "ecs"


class RemovalPolicy(StrEnum):
    DESTROY = "destroy"
    RETAIN = "retain"


class ColdStart(StrEnum):
    """How a Lambda model's new execution environments start (README, "Deploy")."""

    ON_DEMAND = "on_demand"  # each new environment runs the whole init (model download, load)
    SNAPSTART = "snapstart"  # restored from a snapshot taken when a version is published
    PROVISIONED = "provisioned"  # provisioned_concurrency environments kept initialized


class AuthMode(StrEnum):
    IAM = "iam"
    API_KEY = "api_key"


class Account(Strict):
    """Where to deploy; absent values fall back to the CDK CLI's defaults."""

    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")] | None = None


class Quota(Strict):
    limit: Annotated[int, Field(gt=0)]
    period: Literal["DAY", "WEEK", "MONTH"] = "MONTH"


class Api(Strict):
    auth: AuthMode = AuthMode.IAM
    throttle_rate: Annotated[float, Field(gt=0)] = 100.0  # requests per second, stage-wide
    throttle_burst: Annotated[int, Field(gt=0)] = 200
    quota: Quota | None = None  # with api_key auth: per-key usage-plan quota

    @model_validator(mode="after")
    def _quota_needs_keys(self) -> Api:
        if self.quota is not None and self.auth is not AuthMode.API_KEY:
            raise ValueError("quota applies to auth = 'api_key' only")
        return self


class Alarms(Strict):
    """Where alarms go (an SNS topic is always created; e-mail is optional)."""

    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None


class AlarmThresholds(Strict):
    error_rate_percent: Annotated[float, Field(gt=0, le=100)] = 1.0  # 5xx / requests
    p99_latency_ms: Annotated[float, Field(gt=0)] = 1000.0
    throttles: Annotated[int, Field(ge=1)] = 1  # per 5 minutes
    evaluation_periods: Annotated[int, Field(ge=1, le=288)] = 3


class Drift(Strict):
    schedule: Schedule = "rate(1 hour)"
    # The drift score above which the alarm fires and the check tells the alarm topic. The
    # score is the check's largest distance / threshold over the features and the joint
    # distribution (inferstack.drift.compare): above 1 the check itself finds drift. Raise it
    # to be told of larger drift only (README, "Drift").
    threshold: Annotated[float, Field(gt=0, le=10)] = 1.0

    @model_validator(mode="before")
    @classmethod
    def _no_sample_percent(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sample_percent" in data:
            raise ValueError(
                "sample_percent: this key is gone; set the model's capture_rate instead, "
                "a fraction from 0 to 1 (sample_percent = 10 is capture_rate = 0.1)"
            )
        return data


class Autoscaling(Strict):
    # false deregisters the model from Application Auto Scaling and keeps the current
    # capacity: the first step of changing a SageMaker instance type (README, "Deploy").
    enabled: bool = True
    min_capacity: Annotated[int, Field(ge=1)] = 1
    max_capacity: Annotated[int, Field(ge=1)] = 2
    # SageMaker: target invocations per instance per minute.
    target_invocations_per_minute: Annotated[int, Field(gt=0)] = 600
    # ECS: target average GPU utilization (%) of the service's tasks (the container's
    # GPUUtilization metric).
    target_gpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_capacity < self.min_capacity:
            raise ValueError("max_capacity must be at least min_capacity")
        return self


class Batching(Strict):
    """The GPU container's dynamic batcher (inferstack.models.batching), per model."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_queue_delay_us: Annotated[int, Field(ge=0, le=1_000_000)] = 2000
    # Requests waiting per task or instance before the server answers 429 (ErrorClass
    # Throttled, which the model's throttle alarm watches).
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 128
    # The longest a request waits to be run before it is answered 429 (0: no limit). A
    # second keeps a backlog from turning into API Gateway's 29 s 504s.
    queue_timeout_us: Annotated[int, Field(ge=0, le=60_000_000)] = 1_000_000


class ModelBase(Strict):
    """What every model has. Its files are not configured here: every target serves the
    model's live release (releases/<name>/live.json), made from an upload to uploads/<name>/."""

    name: ModelName
    # The validation gate's size bound for this model's uploads (default: the target's,
    # inferstack.release.validate.TARGET_LIMITS: 1 GiB on Lambda, 8 GiB on GPU targets).
    max_model_mb: Annotated[int, Field(ge=1, le=65536)] | None = None
    # Share of requests captured for the drift check, on every target (Lambda and ECS:
    # inferstack.capture; SageMaker: its DataCapture); 0 turns capture off.
    capture_rate: Annotated[float, Field(ge=0, le=1)] = DEFAULT_CAPTURE_RATE
    drift: Drift = Drift()
    alarms: AlarmThresholds = AlarmThresholds()

    @model_validator(mode="before")
    @classmethod
    def _no_artifact(cls, data: Any) -> Any:
        # A file written before releases existed: say where its model goes now, instead of
        # pydantic's generic "Extra inputs are not permitted".
        if isinstance(data, dict) and "artifact" in data:
            name = data.get("name") or "<model>"
            raise ValueError(
                "artifact: this key is gone; delete it. A model's file is no longer set in "
                f"the configuration: upload it to s3://<bucket>/{UPLOADS_PREFIX}{name}/ "
                f"(`inferstack push {name} FILE --env ENV`, or any S3 upload there) and the "
                "promoter validates it and makes it the live release every target serves"
            )
        return data


class Canary(Strict):
    """A Lambda model's canary: the new version takes `weight_percent` of the alias's traffic
    for `bake_minutes`, and goes live only if its own figures stay within the bounds."""

    weight_percent: Annotated[int, Field(ge=1, le=50)] = 10
    bake_minutes: Annotated[int, Field(ge=1)] = 10
    # (5xx answers + function errors) / requests of the canary's version.
    max_error_rate: float = 0.01
    max_p99_ms: Annotated[float, Field(gt=0)] | None = None
    # More than 0: a bake that ends with fewer canary requests fails the release (nobody
    # exercised it) instead of promoting it.
    min_requests: Annotated[int, Field(ge=0)] = 0

    @field_validator("max_error_rate")
    @classmethod
    def _a_fraction(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(
                "a fraction of the canary's requests, from 0 to 1 (0.01 is 1%), not a percentage"
            )
        return value

    @field_validator("bake_minutes")
    @classmethod
    def _inside_the_rollout(cls, value: int) -> int:
        if value > CANARY_BAKE_MAX_MINUTES:
            raise ValueError(
                f"at most {CANARY_BAKE_MAX_MINUTES} minutes: a rollout ends after 3 hours, "
                "and may first wait up to 2 hours for another rollout of the model"
            )
        return value


class LambdaModel(ModelBase):
    target: Literal[Target.LAMBDA]
    memory_mb: Annotated[int, Field(ge=512, le=10240)] = 2048
    timeout_s: Annotated[int, Field(ge=1)] = LAMBDA_TIMEOUT_DEFAULT_S
    architecture: Literal["x86_64", "arm64"] = "arm64"
    reserved_concurrency: Annotated[int, Field(ge=1)] | None = None
    provisioned_concurrency: Annotated[int, Field(ge=0)] = 0
    # Default: "provisioned" when provisioned_concurrency > 0, else "on_demand" (_cold_start).
    cold_start: ColdStart = ColdStart.ON_DEMAND
    # Default 1024 MB; 512 MB (SnapStart's most) with cold_start = "snapstart".
    ephemeral_storage_mb: Annotated[int, Field(ge=512, le=10240)] = 1024
    # A `[models.canary]` table turns it on (its keys have defaults); without one a release
    # takes the whole alias once its smoke test passes.
    canary: Canary | None = None

    @model_validator(mode="before")
    @classmethod
    def _cold_start_defaults(cls, data: Any) -> Any:
        """The defaults that follow from cold_start, filled in before validation (the model
        is frozen): files written before the key existed keep meaning what they meant."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        provisioned = data.get("provisioned_concurrency", 0)
        if "cold_start" not in data:
            has_provisioned = isinstance(provisioned, int) and provisioned > 0
            data["cold_start"] = ColdStart.PROVISIONED if has_provisioned else ColdStart.ON_DEMAND
        if data["cold_start"] == ColdStart.SNAPSTART:
            data.setdefault("ephemeral_storage_mb", SNAPSTART_MAX_EPHEMERAL_MB)
            data.setdefault("max_model_mb", SNAPSTART_MAX_MODEL_MB)
        return data

    @field_validator("timeout_s")
    @classmethod
    def _below_the_api_timeout(cls, value: int) -> int:
        if value > LAMBDA_TIMEOUT_MAX_S:
            raise ValueError(
                f"at most {LAMBDA_TIMEOUT_MAX_S} s: API Gateway stops waiting after "
                f"{API_INTEGRATION_TIMEOUT_S} s and answers 504 while the function runs on "
                f"({LAMBDA_TIMEOUT_MARGIN_S} s are kept for the invoke and the response)"
            )
        return value

    @model_validator(mode="after")
    def _concurrency(self) -> LambdaModel:
        reserved = self.reserved_concurrency
        if reserved is not None and self.provisioned_concurrency > reserved:
            raise ValueError("provisioned_concurrency cannot exceed reserved_concurrency")
        return self

    @model_validator(mode="after")
    def _cold_start_fits(self) -> LambdaModel:
        problems = self._cold_start_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _cold_start_problems(self) -> list[str]:
        provisioned = self.provisioned_concurrency
        if self.cold_start is ColdStart.PROVISIONED and provisioned == 0:
            return [
                "cold_start = 'provisioned' needs provisioned_concurrency >= 1 (the number of "
                "environments kept initialized)"
            ]
        if self.cold_start is ColdStart.ON_DEMAND and provisioned > 0:
            return [
                f"cold_start = 'on_demand' with provisioned_concurrency = {provisioned}: set "
                "cold_start = 'provisioned', or remove provisioned_concurrency"
            ]
        if self.cold_start is not ColdStart.SNAPSTART:
            return []
        problems = []
        if provisioned > 0:
            problems.append(
                f"cold_start = 'snapstart' with provisioned_concurrency = {provisioned}: AWS "
                "Lambda SnapStart does not support provisioned concurrency "
                f"({SNAPSTART_DOCS}); remove provisioned_concurrency, or set "
                "cold_start = 'provisioned'"
            )
        if self.ephemeral_storage_mb > SNAPSTART_MAX_EPHEMERAL_MB:
            problems.append(
                f"cold_start = 'snapstart' with ephemeral_storage_mb = "
                f"{self.ephemeral_storage_mb}: AWS Lambda SnapStart does not support ephemeral "
                f"storage over {SNAPSTART_MAX_EPHEMERAL_MB} MB ({SNAPSTART_DOCS}); remove "
                "ephemeral_storage_mb (it defaults to 512 with SnapStart)"
            )
        if self.max_model_mb is not None and self.max_model_mb > SNAPSTART_MAX_MODEL_MB:
            problems.append(
                f"cold_start = 'snapstart' with max_model_mb = {self.max_model_mb}: the model "
                f"is cached in /tmp, which SnapStart limits to {SNAPSTART_MAX_EPHEMERAL_MB} MB "
                f"({SNAPSTART_DOCS}); at most {SNAPSTART_MAX_MODEL_MB} "
                f"({SNAPSTART_TMP_HEADROOM_MB} MB stay free for the runtime). Use cold_start = "
                "'provisioned' or 'on_demand' for a larger model"
            )
        return problems


# SageMaker's ContainerStartupHealthCheckTimeoutInSeconds range, 60-3600
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html):
# the longest a cold engine build may take on either GPU target.
ENGINE_BUILD_TIMEOUT_RANGE_S = (60, 3600)


class GpuModelBase(ModelBase):
    instance_type: Annotated[str, Field(pattern=r"^(ml\.)?[a-z0-9]+\.[a-z0-9]+$")]
    autoscaling: Autoscaling = Autoscaling()
    batching: Batching = Batching()
    # Which release variant the GPU serves: the FP32 original, or the FP16 copy the promoter
    # makes and checks against it at release time.
    precision: Literal["fp32", "fp16"] = "fp32"
    # How long a new task or instance may take from start to serving on a cold engine cache
    # (download + TensorRT engine build + load): ECS's health-check grace period, and the
    # least SageMaker's start-up health-check timeout may be.
    engine_build_timeout_s: Annotated[
        int, Field(ge=ENGINE_BUILD_TIMEOUT_RANGE_S[0], le=ENGINE_BUILD_TIMEOUT_RANGE_S[1])
    ] = 1200


class SageMakerModel(GpuModelBase):
    target: Literal[Target.SAGEMAKER]
    # Host driver must match the image's CUDA (shared/GPU.md): 580 / CUDA 13 here.
    inference_ami_version: str = "al2023-ami-sagemaker-inference-gpu-4-1"
    startup_health_check_timeout_s: Annotated[int, Field(ge=60, le=3600)] = 1200

    @field_validator("capture_rate")
    @classmethod
    def _whole_percent(cls, value: float) -> float:
        # DataCapture's InitialSamplingPercentage is a whole number from 0 to 100
        # (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfig.html).
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError(
                "on SageMaker a whole percentage (DataCapture samples in 1% steps): "
                "0, 0.01, 0.02 ... 1"
            )
        return value

    @model_validator(mode="after")
    def _scales_on_invocations(self) -> SageMakerModel:
        if "target_gpu_utilization" in self.autoscaling.model_fields_set:
            raise ValueError(
                "autoscaling.target_gpu_utilization: SageMaker endpoints scale on "
                "invocations per instance; set autoscaling.target_invocations_per_minute"
            )
        return self

    @model_validator(mode="after")
    def _startup_covers_the_build(self) -> SageMakerModel:
        if self.startup_health_check_timeout_s < self.engine_build_timeout_s:
            raise ValueError(
                f"startup_health_check_timeout_s ({self.startup_health_check_timeout_s}) is "
                f"shorter than engine_build_timeout_s ({self.engine_build_timeout_s}): "
                "SageMaker would fail an instance whose engine is still building; raise it "
                "or lower engine_build_timeout_s"
            )
        return self

    @property
    def capture_percent(self) -> int:
        """capture_rate as DataCapture's InitialSamplingPercentage."""
        return round(self.capture_rate * 100)

    @model_validator(mode="after")
    def _ml_prefix(self) -> SageMakerModel:
        if not self.instance_type.startswith("ml."):
            raise ValueError("SageMaker instance types start with 'ml.' (ml.g5.xlarge)")
        return self


class EcsModel(GpuModelBase):
    target: Literal[Target.ECS]
    gpu_count: Annotated[int, Field(ge=1, le=8)] = 1
    memory_mib: Annotated[int, Field(ge=512)] = 14336
    cpu_units: Annotated[int, Field(ge=256)] = 3072

    @model_validator(mode="after")
    def _no_ml_prefix(self) -> EcsModel:
        if self.instance_type.startswith("ml."):
            raise ValueError("ECS uses EC2 instance types (g5.xlarge), not 'ml.' ones")
        return self

    @model_validator(mode="after")
    def _scales_on_gpu(self) -> EcsModel:
        if "target_invocations_per_minute" in self.autoscaling.model_fields_set:
            raise ValueError(
                "autoscaling.target_invocations_per_minute: ECS services scale on GPU "
                "utilization; set autoscaling.target_gpu_utilization (percent) instead"
            )
        return self


Model = Annotated[LambdaModel | SageMakerModel | EcsModel, Field(discriminator="target")]


class Environment(Strict):
    name: Name
    account: Account = Account()
    alarms: Alarms = Alarms()
    api: Api = Api()
    log_retention_days: Literal[
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653
    ] = 30
    removal_policy: RemovalPolicy = RemovalPolicy.DESTROY
    noncurrent_version_days: Annotated[int, Field(ge=1)] = 30
    # NAT gateways of the ECS models' VPC (2 AZs): 2 survives an AZ outage, 1 costs half.
    nat_gateways: Annotated[int, Field(ge=1, le=2)] = 1
    models: Annotated[list[Model], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Environment:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {duplicates}")
        return self

    @model_validator(mode="after")
    def _distinct_aws_names(self) -> Environment:
        """AWS names derived from model names (aws_name) must not collide either."""
        owner: dict[str, str] = {}
        for model in self.models:
            derived = aws_name(model.name)
            first = owner.setdefault(derived, model.name)
            if first != model.name:
                raise ValueError(
                    f"models {first!r} and {model.name!r} both become {derived!r} in AWS "
                    "resource names (lower-case letters, digits and '-'): rename one"
                )
        return self

    @model_validator(mode="after")
    def _endpoint_names_fit(self) -> Environment:
        for model in self.models_on(Target.SAGEMAKER):
            endpoint = sagemaker_endpoint_name(self.name, model.name)
            if len(endpoint) > SAGEMAKER_ENDPOINT_NAME_MAX:
                raise ValueError(
                    f"model {model.name!r}: its SageMaker endpoint name {endpoint!r} is "
                    f"longer than {SAGEMAKER_ENDPOINT_NAME_MAX} characters; shorten the "
                    "environment or model name"
                )
        return self

    def models_on(self, target: Target) -> list[LambdaModel | SageMakerModel | EcsModel]:
        return [m for m in self.models if m.target is target]


def load_environment(name: str, directory: Path = ENVIRONMENTS_DIR) -> Environment:
    """Read and validate `<directory>/<name>.toml`."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name or ""):
        raise ConfigError(f"-c env=NAME: {name!r} is not an environment name")
    path = directory / f"{name}.toml"
    shown = _shown(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        raise ConfigError(f"{shown}: no such file (environments: {known})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None
    if raw.get("name", name) != name:
        raise ConfigError(
            f"{shown}: name: expected {name!r} (the file's name), got {raw['name']!r}"
        )
    raw.setdefault("name", name)
    try:
        return Environment.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(shown, exc)) from None


def _describe(shown: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        # pydantic puts the union's tag in the path ("models.0.lambda.memory_mb"): drop it.
        parts = [str(p) for p in error["loc"] if str(p) not in _TARGETS]
        key = ".".join(parts) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        got = error.get("input")
        detail = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{shown}: {key}: {message}{detail}")
    return "\n".join(lines)


_TARGETS = frozenset(t.value for t in Target)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
