"""Alarms to an encrypted SNS topic and one dashboard per environment.

Request-level alarms (5xx rate, p99 latency) use API Gateway's per-method metrics (dimensions
ApiName, Method, Resource, Stage; the stage has detailed metrics on) for every target: they see
what clients see (integration failures, timeouts and throttled Lambdas included, which Lambda's
own Errors metric misses because the runtime answers errors itself), they are single metrics
(the runtime's EMF metrics carry a model_version dimension, so only SEARCH could aggregate them,
and alarms cannot use SEARCH), and one threshold means the same end-to-end thing for Lambda,
SageMaker and ECS. Target metrics (Lambda Duration, SageMaker ModelLatency, NLB, GPU) go on the
dashboard next to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from inferstack.names import (
    DIM_ENVIRONMENT,
    DIM_ERROR_CLASS,
    DIM_MODEL,
    DIM_MODEL_VERSION,
    DIM_SERVICE,
    METRIC_BATCH_SIZE,
    METRIC_CAPTURE_SKIPPED,
    METRIC_COLD_START,
    METRIC_DRIFT_SCORE,
    METRIC_ERRORS,
    METRIC_GPU_MEMORY_UTILIZATION,
    METRIC_GPU_UTILIZATION,
    METRIC_LATENCY,
    METRIC_MODEL_LATENCY,
    METRIC_PROMOTION_FAILURES,
    METRIC_QUEUE_TIME,
    METRIC_REQUEST_BYTES,
    METRIC_REQUESTS,
    METRIC_RESPONSE_BYTES,
    METRIC_RESTORE_DURATION,
    METRIC_RESTORED_START,
    METRIC_SERVER_ERRORS,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from inferstack.telemetry import ERROR_CLASSES
from infra.config import ColdStart
from infra.constructs.common import removal_policy, rest_api_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_elasticloadbalancingv2 as elbv2
    from aws_cdk import aws_lambda as lambda_

    from infra.config import EcsModel, Environment, LambdaModel, Model, SageMakerModel

NAMESPACE = METRICS_NAMESPACE  # the runtime's, drift check's and promoter's EMF namespace
# Published by the GPU container (not emitted yet: its issue adds the emitter).
# The ErrorClass of requests a GPU server turned away (429, a full batch queue).
THROTTLED_CLASS = ERROR_CLASSES[429]

# The contract between the code that emits InferStack metrics and what watches them: the
# exact dimension names each metric is published with. A CloudWatch alarm, and a SEARCH
# schema {Namespace,dim,...}, only match a metric with exactly these dimensions, so an alarm
# that leaves one out can never fire (CloudWatch docs, "Dimensions": "you must specify the same
# dimensions that were used when the metrics were created", https://docs.aws.amazon.com/
# AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension; "Search expression
# syntax", https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html).
# Powertools adds `service` to every metric emitted with a service name (POWERTOOLS_SERVICE_NAME,
# set on every function and container). tests/infra/test_metric_dimensions.py runs each emitter
# and compares; metrics no code emits yet are fixed here, and their emitters join that test.
_RUNTIME = frozenset({DIM_SERVICE, DIM_ENVIRONMENT, DIM_MODEL, DIM_MODEL_VERSION})
_PER_MODEL = frozenset({DIM_SERVICE, DIM_ENVIRONMENT, DIM_MODEL})
METRIC_DIMENSIONS: dict[str, tuple[frozenset[str], ...]] = {
    # layers/inferstack/telemetry.py, one EMF document per request.
    **{
        name: (_RUNTIME,)
        for name in (
            METRIC_REQUESTS,
            METRIC_LATENCY,
            METRIC_MODEL_LATENCY,
            METRIC_REQUEST_BYTES,
            METRIC_RESPONSE_BYTES,
            METRIC_COLD_START,
            # With ColdStart on a restored environment's first request (SnapStart).
            METRIC_RESTORED_START,
            # 1 per 5xx answer: the Lambda canary's own error rate (release/rollout/canary.py).
            METRIC_SERVER_ERRORS,
        )
    },
    # telemetry.py: errors by class, without the version (one alarm covers every version).
    METRIC_ERRORS: (_PER_MODEL | {DIM_ERROR_CLASS},),
    # The drift check, once per model and run.
    METRIC_DRIFT_SCORE: (_PER_MODEL,),
    # The promoter: per model, or per environment when an upload matches no model.
    METRIC_PROMOTION_FAILURES: (_PER_MODEL, frozenset({DIM_SERVICE, DIM_ENVIRONMENT})),
    # The GPU container's utilization sampler (server/gpu_metrics.py); ECS scales on
    # GPUUtilization (ecs_model.py).
    METRIC_GPU_UTILIZATION: (_PER_MODEL,),
    METRIC_GPU_MEMORY_UTILIZATION: (_PER_MODEL,),
    # The dynamic batcher's per-minute document (models/batching.py).
    METRIC_BATCH_SIZE: (_PER_MODEL,),
    METRIC_QUEUE_TIME: (_PER_MODEL,),
    # inferstack.capture: a sampled record over the size cap (Lambda and ECS hosts).
    METRIC_CAPTURE_SKIPPED: (_PER_MODEL,),
}
PERIOD = cdk.Duration.minutes(5)
DRIFT_PERIOD = cdk.Duration.hours(1)
# CaptureSkipped (inferstack.capture): a sampled request whose record was over the size cap,
# so the drift check never sees it. A few are harmless; a steady share means the check
# compares the baseline with a sample that lacks the large requests (a biased sample), which
# no drift score reveals. Low severity: serving is unaffected. The alarm fires when more than
# CAPTURE_SKIPPED_PERCENT of the sampled requests (the API's v2 infer requests x capture_rate)
# were skipped, with at least CAPTURE_SKIPPED_MIN skips, in each of CAPTURE_SKIPPED_HOURS hours.
CAPTURE_PERIOD = cdk.Duration.hours(1)
CAPTURE_SKIPPED_PERCENT = 5.0
CAPTURE_SKIPPED_MIN = 10
CAPTURE_SKIPPED_HOURS = 3
GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
GTE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


class Monitoring(Construct):
    """The alarm topic (KMS-encrypted, TLS only), the dashboard and every alarm."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Environment) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.alarms: list[cloudwatch.Alarm] = []
        # Each model's 5xx-rate alarm: what a deployment of its target rolls back on.
        self.error_rate_alarms: dict[str, cloudwatch.Alarm] = {}
        removal = removal_policy(config)
        self.key = kms.Key(
            self,
            "TopicKey",
            description=f"InferStack {config.name}: alarm topic encryption",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        # CloudWatch publishes alarm notifications to the topic: it must use the key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"InferStack {config.name} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        if config.alarms.email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarms.email))
        self._action = actions.SnsAction(self.topic)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            # Dashboards are account-wide: the region keeps two deployments apart.
            dashboard_name=f"inferstack-{config.name}-{cdk.Aws.REGION}",
            default_interval=cdk.Duration.hours(3),
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=f"# InferStack {config.name}\nModels: "
                + ", ".join(f"`{m.name}` ({m.target.value})" for m in config.models),
                width=24,
                height=2,
            )
        )

    # -- internal functions ----------------------------------------------------------------

    def watch_function(self, label: str, function: lambda_.IFunction) -> None:
        """Alarm on any error of an internal function (promoter, drift check)."""
        errors = function.metric_errors(period=PERIOD, statistic="Sum")
        self._alarm(
            f"{label}-Errors",
            errors,
            threshold=1,
            comparison=GTE,
            evaluation_periods=1,
            description=f"{label} failed (Lambda Errors >= 1 in 5 minutes)",
        )
        self.dashboard.add_widgets(
            _graph(
                f"{label}: invocations and errors",
                [function.metric_invocations(period=PERIOD), errors],
                width=12,
            ),
            _graph(
                f"{label}: duration (ms)",
                [function.metric_duration(period=PERIOD, statistic="p99", label="p99")],
                width=12,
            ),
        )

    def watch_dead_letters(self, label: str, queue: sqs.IQueue) -> None:
        """Alarm while a dead-letter queue holds anything: an upload event EventBridge could
        not deliver to the rollout workflow is an upload that was never released."""
        self._alarm(
            f"{label}-DeadLetters",
            queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
            threshold=1,
            comparison=GTE,
            evaluation_periods=1,
            description=f"{label}: events that could not be delivered are waiting in the queue",
        )

    def watch_rollouts(self, machine: sfn.IStateMachine) -> None:
        """Alarm on a rollout execution that failed, timed out or was aborted: the failures
        no PromotionFailures line reports (a step that kept failing, a slot held for hours).
        A rejected upload or a failed rollout ends the execution failed too, on purpose:
        either way a release did not go live. Step Functions metrics:
        https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html"""
        ended_badly = cloudwatch.MathExpression(
            expression="failed + timedout + aborted",
            using_metrics={
                "failed": machine.metric_failed(period=PERIOD, statistic="Sum"),
                "timedout": machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                "aborted": machine.metric_aborted(period=PERIOD, statistic="Sum"),
            },
            period=PERIOD,
            label="rollouts failed, timed out or aborted",
        )
        self._alarm(
            "rollout-ExecutionsFailed",
            ended_badly,
            threshold=1,
            comparison=GTE,
            evaluation_periods=1,
            description="a rollout execution did not succeed (rejected, failed, timed out)",
        )
        self.dashboard.add_widgets(
            _graph(
                "rollouts: started, succeeded, failed",
                [
                    machine.metric_started(period=PERIOD),
                    machine.metric_succeeded(period=PERIOD),
                    ended_badly,
                ],
                width=24,
            )
        )

    # -- models ----------------------------------------------------------------------------

    def add_lambda_model(
        self, model: LambdaModel, function: lambda_.IFunction, alias: lambda_.IFunction
    ) -> None:
        """5xx rate, p99 latency and throttle alarms; the model's dashboard row."""
        self._request_alarms(model)
        throttles = alias.metric_throttles(period=PERIOD, statistic="Sum")
        self._alarm(
            f"{model.name}-Throttles",
            throttles,
            threshold=model.alarms.throttles,
            comparison=GTE,
            evaluation_periods=model.alarms.evaluation_periods,
            description=f"{model.name}: Lambda throttles >= {model.alarms.throttles} in 5 minutes",
        )
        name, env = model.name, self.config.name
        self.dashboard.add_widgets(
            *self._api_widgets(model),
            _graph(
                f"{name}: Lambda duration (ms)",
                [
                    alias.metric_duration(period=PERIOD, statistic=p, label=f"Duration {p}")
                    for p in ("p50", "p90", "p99")
                ],
            ),
            _graph(
                f"{name}: Lambda invocations, errors, throttles",
                [
                    alias.metric_invocations(period=PERIOD),
                    alias.metric_errors(period=PERIOD),
                    throttles,
                ],
            ),
            _graph(
                f"{name}: concurrency",
                [
                    function.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum"),
                ],
                right=[
                    alias.metric(
                        "ProvisionedConcurrencyUtilization",
                        period=PERIOD,
                        statistic="Maximum",
                        label="provisioned utilization",
                    )
                ],
            ),
            self._new_environments(model),
        )
        if model.cold_start is ColdStart.SNAPSTART:
            self.dashboard.add_widgets(
                _graph(
                    f"{name}: SnapStart restore duration (ms)",
                    [restore_duration(env, name, s) for s in ("p50", "p99", "Maximum")],
                )
            )
        self._capture_skipped(model)

    def _new_environments(self, model: LambdaModel) -> cloudwatch.GraphWidget:
        """New execution environments by how they started: initialized (the whole init ran:
        on demand, or provisioned) or restored from a SnapStart snapshot. The runtime counts
        ColdStart on every environment's first request and RestoredStart on a restored one's
        (inferstack.telemetry), so initialized = ColdStart - RestoredStart."""
        name, env = model.name, self.config.name
        # Across model versions: only SEARCH can sum a metric over a dimension's values;
        # FILL(.., 0): a model that never restores has no RestoredStart series at all.
        using: dict[str, cloudwatch.IMetric] = {
            "cold": _search(METRIC_COLD_START, env, name, "Sum", label="ColdStart"),
            "restored": _search(METRIC_RESTORED_START, env, name, "Sum", label="RestoredStart"),
        }
        initialized = cloudwatch.MathExpression(
            expression="FILL(SUM(cold), 0) - FILL(SUM(restored), 0)",
            using_metrics=using,
            label="initialized (ColdStart - RestoredStart)",
            period=PERIOD,
        )
        restored = cloudwatch.MathExpression(
            expression="FILL(SUM(restored), 0)",
            using_metrics={"restored": using["restored"]},
            label="restored from snapshot (RestoredStart)",
            period=PERIOD,
        )
        return _graph(f"{name}: new environments (cold starts)", [initialized, restored])

    def add_sagemaker_model(
        self, model: SageMakerModel, endpoint_name: str, variant_name: str
    ) -> None:
        """5xx rate, p99 latency and throttle alarms; endpoint, latency and GPU widgets."""
        dims = {"EndpointName": endpoint_name, "VariantName": variant_name}

        def sagemaker(
            metric: str, statistic: str, label: str, namespace: str = "AWS/SageMaker"
        ) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace,
                metric_name=metric,
                dimensions_map=dims,
                statistic=statistic,
                period=PERIOD,
                label=label,
            )

        # The model's own 5xx answers (SageMaker docs, "Amazon SageMaker AI metrics in Amazon
        # CloudWatch": Invocation5XXErrors counts InvokeEndpoint requests where the model
        # returned a 5xx), https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html
        model_5xx = sagemaker("Invocation5XXErrors", "Sum", "5XX")
        self._request_alarms(model, target_errors=model_5xx)
        self._rejection_alarm(model)
        name = model.name
        self.dashboard.add_widgets(
            *self._api_widgets(model),
            _graph(
                f"{name}: endpoint invocations and errors",
                [
                    sagemaker("Invocations", "Sum", "Invocations"),
                    sagemaker("Invocation4XXErrors", "Sum", "4XX (incl. model errors)"),
                    model_5xx,
                ],
            ),
            _graph(
                f"{name}: ModelLatency (µs)",
                [
                    sagemaker("ModelLatency", p, f"ModelLatency {p} (µs)")
                    for p in ("p50", "p90", "p99")
                ]
                + [sagemaker("OverheadLatency", "p99", "OverheadLatency p99 (µs)")],
            ),
            _graph(
                f"{name}: GPUUtilization (%)",
                [
                    sagemaker(m, "Average", m, namespace="/aws/sagemaker/Endpoints")
                    for m in ("GPUUtilization", "GPUMemoryUtilization")
                ],
            ),
        )

    def add_ecs_model(
        self,
        model: EcsModel,
        service: ecs.BaseService,
        load_balancer: elbv2.INetworkLoadBalancer,
    ) -> None:
        """5xx rate, p99 latency and throttle alarms; NLB, ECS CPU/memory and GPU widgets."""
        self._request_alarms(model)
        self._rejection_alarm(model)
        name, env = model.name, self.config.name
        lb = load_balancer.metrics
        # The GPU container publishes GPUUtilization (EMF, METRIC_DIMENSIONS).
        gpu = _search(METRIC_GPU_UTILIZATION, env, name, "Average", label="GPUUtilization")
        reservation = cloudwatch.Metric(
            namespace="AWS/ECS",
            metric_name="GPUReservation",
            dimensions_map={"ClusterName": service.cluster.cluster_name},
            statistic="Average",
            period=PERIOD,
            label="cluster GPUReservation",
        )
        self.dashboard.add_widgets(
            *self._api_widgets(model),
            _graph(
                f"{name}: load balancer",
                [
                    lb.active_flow_count(period=PERIOD),
                    lb.new_flow_count(period=PERIOD),
                    lb.tcp_target_reset_count(period=PERIOD),
                ],
                right=[lb.processed_bytes(period=PERIOD)],
            ),
            _graph(
                f"{name}: ECS CPU / memory (%)",
                [
                    service.metric_cpu_utilization(period=PERIOD),
                    service.metric_memory_utilization(period=PERIOD),
                ],
            ),
            _graph(f"{name}: GPUUtilization (%)", [gpu, reservation]),
        )
        self._capture_skipped(model)

    def add_drift_alarm(self, model: Model) -> None:
        """Alarm when the drift check's score exceeds the model's threshold (1.0: the check
        found drift; inferstack.drift.compare defines the score)."""
        score = inferstack_metric(
            METRIC_DRIFT_SCORE,
            environment=self.config.name,
            model=model.name,
            statistic="Maximum",
            period=DRIFT_PERIOD,
        )
        # One check above the threshold is the signal: checks run hours apart.
        self._alarm(
            f"{model.name}-Drift",
            score,
            threshold=model.drift.threshold,
            comparison=GT,
            evaluation_periods=1,
            description=f"{model.name}: drift score above {model.drift.threshold}",
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title=f"{model.name}: drift score",
                left=[score],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=model.drift.threshold, label="threshold")
                ],
                width=6,
                height=6,
            )
        )

    def add_promotion_alarm(self) -> None:
        """One alarm per model on failed promotions, and one for uploads matching no model.

        The promoter publishes PromotionFailures with (service, environment, model), or
        without the model when an upload cannot be tied to a configured model.
        """
        env = self.config.name
        series: list[cloudwatch.IMetric] = []
        for model in self.config.models:
            failures = _promotion_failures(env, model.name)
            series.append(failures.with_(label=model.name))
            self._alarm(
                f"{model.name}-PromotionFailures",
                failures,
                threshold=1,
                comparison=GTE,
                evaluation_periods=1,
                description=f"{model.name}: a new version was rejected or failed to roll out",
            )
        unattributed = _promotion_failures(env, None)
        series.append(unattributed.with_(label="unknown model"))
        self._alarm(
            "UnattributedPromotionFailures",
            unattributed,
            threshold=1,
            comparison=GTE,
            evaluation_periods=1,
            description="an upload matched no configured model or could not be read",
        )
        self.dashboard.add_widgets(
            _graph("promotion failures", series, width=12),
            cloudwatch.AlarmStatusWidget(
                title="alarms", alarms=list(self.alarms), width=12, height=6
            ),
        )

    # -- internals -------------------------------------------------------------------------

    def _api_metric(
        self, model: Model, metric: str, statistic: str, *, route: str = "infer"
    ) -> cloudwatch.Metric:
        resource, method = _routes(model.name)[route]
        return cloudwatch.Metric(
            namespace="AWS/ApiGateway",
            metric_name=metric,
            dimensions_map={
                "ApiName": rest_api_name(self.config.name),
                "Stage": self.config.name,
                "Resource": resource,
                "Method": method,
            },
            statistic=statistic,
            period=PERIOD,
        )

    def _error_rate(
        self, model: Model, target_errors: cloudwatch.IMetric | None = None
    ) -> cloudwatch.MathExpression:
        """5xx responses per 100 requests over the model's inference routes (v2 and v1).

        `target_errors` counts failures the API's 5XXError may not: a SageMaker model's 5xx
        reaches clients through a mapping-template status override, and AWS does not document
        that the method's 5XXError counts overridden statuses. The larger count wins in each
        period, so the alarm sees model failures either way without counting them twice.
        """
        using: dict[str, cloudwatch.IMetric] = {}
        for index, route in enumerate(("infer", "predict")):
            using[f"e{index}"] = self._api_metric(model, "5XXError", "Sum", route=route)
            using[f"n{index}"] = self._api_metric(model, "Count", "Sum", route=route)
        errors = "FILL(e0, 0) + FILL(e1, 0)"
        requests = "FILL(n0, 0) + FILL(n1, 0)"
        if target_errors is not None:
            api_errors = cloudwatch.MathExpression(
                expression=errors,
                using_metrics={"e0": using.pop("e0"), "e1": using.pop("e1")},
                period=PERIOD,
            )
            using["api"] = api_errors
            using["target"] = cloudwatch.MathExpression(
                expression="FILL(t, 0)", using_metrics={"t": target_errors}, period=PERIOD
            )
            errors = "MAX([api, target])"
        return cloudwatch.MathExpression(
            expression=f"IF(({requests}) > 0, 100 * ({errors}) / ({requests}), 0)",
            using_metrics=using,
            label="5xx rate (%)",
            period=PERIOD,
        )

    def _request_alarms(
        self, model: Model, target_errors: cloudwatch.IMetric | None = None
    ) -> None:
        thresholds = model.alarms
        self.error_rate_alarms[model.name] = self._alarm(
            f"{model.name}-5xxRate",
            self._error_rate(model, target_errors),
            threshold=thresholds.error_rate_percent,
            comparison=GT,
            evaluation_periods=thresholds.evaluation_periods,
            description=f"{model.name}: 5xx above {thresholds.error_rate_percent}% of requests",
        )
        self._alarm(
            f"{model.name}-P99Latency",
            self._api_metric(model, "Latency", "p99"),
            threshold=thresholds.p99_latency_ms,
            comparison=GT,
            evaluation_periods=thresholds.evaluation_periods,
            description=f"{model.name}: p99 latency above {thresholds.p99_latency_ms} ms (API)",
        )

    def _rejection_alarm(self, model: Model) -> None:
        """Throttles of a GPU model: requests its server turned away (429, a full batch queue).

        Lambda reports throttles itself; a GPU server's admission control reports them as the
        runtime's Errors metric with ErrorClass=Throttled, whose dimensions carry no version.
        """
        rejected = inferstack_metric(
            METRIC_ERRORS,
            environment=self.config.name,
            model=model.name,
            statistic="Sum",
            extra={DIM_ERROR_CLASS: THROTTLED_CLASS},
        )
        self._alarm(
            f"{model.name}-Throttles",
            rejected,
            threshold=model.alarms.throttles,
            comparison=GTE,
            evaluation_periods=model.alarms.evaluation_periods,
            description=f"{model.name}: >= {model.alarms.throttles} requests throttled in 5 min",
        )
        self.dashboard.add_widgets(_graph(f"{model.name}: throttled (429)", [rejected]))

    def _capture_skipped(self, model: LambdaModel | EcsModel) -> None:
        """The low-severity CaptureSkipped alarm and its widget, for a model whose host
        captures (Lambda, ECS; SageMaker captures with its own DataCapture, which skips
        nothing)."""
        if model.capture_rate <= 0:
            return  # nothing sampled, nothing skipped
        skipped = inferstack_metric(
            METRIC_CAPTURE_SKIPPED,
            environment=self.config.name,
            model=model.name,
            statistic="Sum",
            period=CAPTURE_PERIOD,
        ).with_(label="skipped records")
        # Sampled requests, estimated from the API's count of v2 infer requests (v1 :predict
        # is never captured; failed requests, never captured either, are counted: the share
        # errs low); never below the skips themselves.
        using: dict[str, cloudwatch.IMetric] = {
            "s": skipped,
            "n": self._api_metric(model, "Count", "Sum", route="infer"),
        }
        sampled = f"{model.capture_rate:g} * FILL(n, 0)"
        # IF, comparison, FILL and MAX([...]) per point: metric math's functions
        # (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html).
        share = cloudwatch.MathExpression(
            expression=(
                f"IF(FILL(s, 0) >= {CAPTURE_SKIPPED_MIN}, "
                f"100 * FILL(s, 0) / MAX([{sampled}, FILL(s, 0)]), 0)"
            ),
            using_metrics=using,
            label="skipped (% of sampled requests)",
            period=CAPTURE_PERIOD,
        )
        self._alarm(
            f"{model.name}-CaptureSkipped",
            share,
            threshold=CAPTURE_SKIPPED_PERCENT,
            comparison=GT,
            evaluation_periods=CAPTURE_SKIPPED_HOURS,
            description=(
                f"{model.name} (low severity): over {CAPTURE_SKIPPED_PERCENT:g}% of sampled "
                f"requests (>= {CAPTURE_SKIPPED_MIN} an hour) too large to capture, "
                f"{CAPTURE_SKIPPED_HOURS} hours in a row: the drift check sees a biased sample "
                "(serving is unaffected)"
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title=f"{model.name}: capture skipped (records over the size cap)",
                left=[skipped],
                right=[share],
                right_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=CAPTURE_SKIPPED_PERCENT, label="alarm (%)"
                    )
                ],
                width=6,
                height=6,
            )
        )

    def _api_widgets(self, model: Model) -> list[cloudwatch.IWidget]:
        name = model.name
        return [
            _graph(
                f"{name}: requests",
                [
                    self._api_metric(model, "Count", "Sum", route=r).with_(label=f"{r} requests")
                    for r in ("infer", "predict")
                ],
            ),
            _graph(
                f"{name}: latency (ms) p50/p90/p99",
                [
                    self._api_metric(model, "Latency", p).with_(label=f"Latency {p}")
                    for p in ("p50", "p90", "p99")
                ]
                + [
                    self._api_metric(model, "IntegrationLatency", "p99").with_(
                        label="IntegrationLatency p99"
                    )
                ],
            ),
            _graph(
                f"{name}: 4xx / 5xx",
                [
                    self._api_metric(model, "4XXError", "Sum"),
                    self._api_metric(model, "5XXError", "Sum"),
                ],
                right=[self._error_rate(model)],
            ),
        ]

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.Metric | cloudwatch.MathExpression,
        *,
        threshold: float,
        comparison: cloudwatch.ComparisonOperator,
        evaluation_periods: int,
        description: str,
    ) -> cloudwatch.Alarm:
        alarm: cloudwatch.Alarm = metric.create_alarm(
            self,
            construct_id,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"InferStack {self.config.name}: {description}",
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm


def _routes(name: str) -> dict[str, tuple[str, str]]:
    """The API resources whose metrics describe a model's traffic."""
    return {
        "infer": (f"/v2/models/{name}/infer", "POST"),
        "predict": (f"/v1/models/{name}:predict", "POST"),
    }


def inferstack_metric(
    name: str,
    *,
    environment: str,
    model: str | None,
    statistic: str,
    period: cdk.Duration = PERIOD,
    extra: dict[str, str] | None = None,
) -> cloudwatch.Metric:
    """One InferStack metric with exactly the dimensions its emitter publishes."""
    dimensions = {DIM_SERVICE: SERVICE_NAME, DIM_ENVIRONMENT: environment}
    if model is not None:
        dimensions[DIM_MODEL] = model
    dimensions.update(extra or {})
    if frozenset(dimensions) not in METRIC_DIMENSIONS[name]:
        raise ValueError(f"{name} is not published with dimensions {sorted(dimensions)}")
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=period,
    )


def restore_duration_namespace(environment: str, model: str) -> str:
    """Where a SnapStart model's RestoreDuration metric filter publishes (lambda_model.py).

    A metric filter's dimension values must be fields of the log event ("The log event field
    that will contain the value for this dimension", https://docs.aws.amazon.com/
    AWSCloudFormation/latest/UserGuide/aws-properties-logs-metricfilter-dimension.html), and
    Lambda's REPORT line names neither the environment nor the model: the namespace does.
    """
    return f"{NAMESPACE}/SnapStart/{environment}/{model}"


def restore_duration(environment: str, model: str, statistic: str) -> cloudwatch.Metric:
    """Lambda's own Restore Duration (ms) of a SnapStart model's restored environments."""
    return cloudwatch.Metric(
        namespace=restore_duration_namespace(environment, model),
        metric_name=METRIC_RESTORE_DURATION,
        statistic=statistic,
        period=PERIOD,
        unit=cloudwatch.Unit.MILLISECONDS,
        label=f"Restore Duration {statistic}",
    )


def _search(
    name: str, environment: str, model: str, statistic: str, *, label: str
) -> cloudwatch.MathExpression:
    """Every series of one model's metric (all versions), by its published dimension set."""
    (dimensions,) = METRIC_DIMENSIONS[name]
    schema = ",".join([NAMESPACE, *sorted(dimensions)])
    terms = f'MetricName="{name}" {DIM_MODEL}="{model}" {DIM_ENVIRONMENT}="{environment}"'
    seconds = int(PERIOD.to_seconds())
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{schema}}} {terms}', '{statistic}', {seconds})",
        using_metrics={},
        label=label,
        period=PERIOD,
    )


def _promotion_failures(environment: str, model: str | None) -> cloudwatch.Metric:
    return inferstack_metric(
        METRIC_PROMOTION_FAILURES, environment=environment, model=model, statistic="Sum"
    )


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    *,
    right: Sequence[cloudwatch.IMetric] = (),
    width: int = 6,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title, left=list(left), right=list(right), width=width, height=6
    )
