"""The Lambda canary, through the promoter's steps, on moto (S3, Lambda, CloudWatch) with real
boto3 clients: a release takes a share of the alias, its own metrics decide, and the release
goes live or fails with the previous one still serving.

What the canary reads is made by the real emitting code: requests through the canary
version's execution environment (the real inference handler, as aws_doubles.lambda_invoke
starts it) and, for 5xx answers, that version's own telemetry (telemetry_for(Settings) of the
version's environment). Their EMF lines go into moto's CloudWatch as CloudWatch Logs
extracts them (`put_emf`). Lambda's own metrics (Invocations, Errors by ExecutedVersion)
are published by Lambda itself, which moto never runs: the tests publish them as AWS documents
them (`put_lambda_metrics`).

Seams (shared/AWS-TESTING.md): the smoke invoke runs the real handler in-process; moto's
GetMetricData computes no percentile (a p99 query answers None and its serializer fails),
so the one latency test answers that one call with `MetricDataDouble`; everything else reads
moto. A bake of minutes is a clock the tests move forward (LambdaRollout's `clock`).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.validate import ParamValidator
from moto import mock_aws

from inferstack.names import (
    ENV_ENVIRONMENT,
    ENV_METRICS,
    ENV_METRICS_NAMESPACE,
    ENV_POWERTOOLS_SERVICE,
    METRICS_NAMESPACE,
    SERVICE_NAME,
)
from inferstack.release.promote import Promoter
from inferstack.release.rollout.canary import SETTLE_S, Canary
from inferstack.release.rollout.lambda_target import LambdaRollout
from inferstack.release.rollout.targets import canary_metrics
from inferstack.release.store import ReleaseStore
from infra.config import Canary as CanaryConfig

from .aws_doubles import lambda_invoke, no_provisioned_concurrency
from .conftest import DEMO_MODEL, json_infer_body, reference_rows
from .deployed import (
    inference_function,
    served_version,
    upload_event,
    use_fake_aws,
    versioned_bucket,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'environment' has already been added")

BUCKET = "acme-models"
FUNCTION = "inferstack-dev-wine"
ALIAS = "live"
# What the CDK app sets on the inference function and on the promoter alike.
METRIC_IDENTITY = {
    ENV_ENVIRONMENT: "dev",
    ENV_POWERTOOLS_SERVICE: SERVICE_NAME,
    ENV_METRICS_NAMESPACE: METRICS_NAMESPACE,
}
MINUTE = 60.0


class World:
    """The promoter over one Lambda model whose target has a canary (infra.config's Canary,
    as the stack renders it into INFERSTACK_TARGETS)."""

    def __init__(self, **canary: Any) -> None:
        self.s3 = boto3.client("s3")
        self.lambda_ = boto3.client("lambda")
        self.cloudwatch = boto3.client("cloudwatch")
        self.store = ReleaseStore(self.s3, BUCKET)
        self.failures: list[tuple[str | None, str]] = []
        self.skew = 0.0  # how far the tests moved the clock
        self.metric_reads: list[dict[str, Any]] = []
        self.cloudwatch.meta.events.register(
            "before-parameter-build.cloudwatch.GetMetricData",
            lambda params, **_: self.metric_reads.append(params),
        )
        self.invoke = lambda_invoke(self.lambda_)
        no_provisioned_concurrency(self.lambda_)
        self.target = {
            "target": "lambda",
            "function": FUNCTION,
            "alias": ALIAS,
            "canary": CanaryConfig(**canary).model_dump(),
        }

        def rollout_for(model: str, target: dict[str, Any], smoke: str) -> LambdaRollout:
            """As inferstack.release.rollout.targets.rollout_for wires it, with the smoke
            invoke's seam and the tests' clock."""
            config = Canary.from_target(target.get("canary"))
            reader = canary_metrics(self.cloudwatch, model, target, METRIC_IDENTITY)
            return LambdaRollout(
                self.lambda_,
                function=target["function"],
                alias=target["alias"],
                smoke_body=smoke,
                invoke=self.invoke,
                canary=config,
                metrics=reader if config else None,
                clock=lambda: time.time() + self.skew,
            )

        self.promoter = Promoter(
            self.store,
            targets={"wine": self.target},
            rollout_for=rollout_for,
            on_failure=lambda model, reason: self.failures.append((model, reason)),
        )

    # ------------------------------------------------------------------ releases
    def upload(self, path: Path, name: str) -> dict[str, Any]:
        """Put `path` at uploads/wine/<name>; the S3 event AWS sends for it."""
        return upload_event(self.s3, BUCKET, f"uploads/wine/{name}", path.read_bytes())

    def release(self, path: Path, name: str) -> dict[str, Any]:
        """Upload `path` to uploads/wine/<name> and prepare its release (not started)."""
        return self.promoter.prepare(self.upload(path, name))

    def alias(self) -> tuple[str, dict[str, float]]:
        found = self.lambda_.get_alias(FunctionName=FUNCTION, Name=ALIAS)
        weights = (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return str(found["FunctionVersion"]), dict(weights)

    def history(self, release: str) -> list[tuple[str, str | None]]:
        return [(e.state, e.reason) for e in self.store.history("wine", release)]

    def later(self, minutes: float) -> None:
        self.skew += minutes * MINUTE

    # ------------------------------------------------------------------ traffic
    def serve(self, version: str, answers: int) -> None:
        """`answers` inferences by the version's execution environment (the real handler);
        their EMF into CloudWatch."""
        event = {
            "httpMethod": "POST",
            "path": "/v2/models/wine/infer",
            "headers": {"content-type": "application/json"},
            "body": json_infer_body(reference_rows(2)),
            "isBase64Encoded": False,
        }
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for _ in range(answers):
                assert self.invoke(FUNCTION, version, event)["statusCode"] == 200
        put_emf(self.cloudwatch, out.getvalue())

    def fail(self, version: str, release: str, answers: int) -> None:
        """`answers` 503s as the version's own telemetry records them (a model failing
        under load; the demo model does not), their EMF into CloudWatch."""
        from inferstack.bootstrap import telemetry_for
        from inferstack.settings import Settings
        from inferstack.telemetry import RequestRecord

        config = self.lambda_.get_function_configuration(FunctionName=FUNCTION, Qualifier=version)
        telemetry = telemetry_for(Settings.from_env(config["Environment"]["Variables"]))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            for _ in range(answers):
                telemetry.record(RequestRecord(503, 3.0, model="wine", model_version=release))
        put_emf(self.cloudwatch, out.getvalue())


def put_emf(cloudwatch: Any, stdout: str) -> None:
    """What CloudWatch Logs does with EMF lines: each metric of each directive, under each of
    its dimension sets with the document's values, at the document's timestamp
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html)."""
    data: dict[str, list[dict[str, Any]]] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        document = json.loads(line)
        meta = document["_aws"]
        at = datetime.fromtimestamp(meta["Timestamp"] / 1000, UTC)
        for directive in meta["CloudWatchMetrics"]:
            for names in directive["Dimensions"]:
                # Sorted by name: moto matches a query's dimensions in order (its Dimension
                # sort is broken), CloudWatch in any order.
                dimensions = [{"Name": n, "Value": str(document[n])} for n in sorted(names)]
                for metric in directive["Metrics"]:
                    values = document[metric["Name"]]
                    for value in values if isinstance(values, list) else [values]:
                        data.setdefault(directive["Namespace"], []).append(
                            {
                                "MetricName": metric["Name"],
                                "Dimensions": dimensions,
                                "Value": float(value),
                                "Unit": metric.get("Unit", "None"),
                                "Timestamp": at,
                            }
                        )
    assert data, "no EMF document was printed"
    for namespace, items in data.items():
        for first in range(0, len(items), 500):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=items[first : first + 500])


def put_lambda_metrics(cloudwatch: Any, version: str, invocations: int, errors: int) -> None:
    """Invocations and Errors of `version` through the alias, as Lambda publishes them: in
    AWS/Lambda with FunctionName, Resource "<function>:<alias>" and ExecutedVersion
    (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics.html)."""
    dimensions = [  # sorted by name, as put_emf has them (moto matches them in order)
        {"Name": "ExecutedVersion", "Value": version},
        {"Name": "FunctionName", "Value": FUNCTION},
        {"Name": "Resource", "Value": f"{FUNCTION}:{ALIAS}"},
    ]
    cloudwatch.put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": name, "Dimensions": dimensions, "Value": float(value), "Unit": "Count"}
            for name, value in (("Invocations", invocations), ("Errors", errors))
        ],
    )


def retrained(tmp_path: Path) -> Path:
    """The demo model with other bytes (same signature), as a retrained model is."""
    import onnx

    model = onnx.load(DEMO_MODEL)
    model.doc_string = "retrained"
    onnx.save(model, tmp_path / "retrained.onnx")
    return tmp_path / "retrained.onnx"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> Iterator[None]:
    use_fake_aws(monkeypatch)
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        versioned_bucket(boto3.client("s3"), BUCKET)
        client = boto3.client("lambda")
        inference_function(client, function=FUNCTION, bucket=BUCKET)
        # The stack's inference function emits its metrics (the helper turns them off).
        config = client.get_function_configuration(FunctionName=FUNCTION)
        variables = {**config["Environment"]["Variables"], **METRIC_IDENTITY, ENV_METRICS: "on"}
        client.update_function_configuration(
            FunctionName=FUNCTION, Environment={"Variables": variables}
        )
        yield


def first_release_live(world: World) -> str:
    """Release 1 (no live release before it: no canary); the alias's version."""
    step = world.promoter.run(world.release(DEMO_MODEL, "model.onnx"), deadline_s=60)
    assert step["result"] == "live"
    assert [state for state, _ in world.history("1")] == ["validated", "rolling_out", "live"]
    version, weights = world.alias()
    assert weights == {}
    assert world.metric_reads == []  # a first release has nothing to compare with
    return version


def canary_started(world: World, tmp_path: Path) -> tuple[dict[str, Any], str, str]:
    """Release 1 live, release 2 started as a canary: (step, previous, canary version)."""
    previous = first_release_live(world)
    step = world.promoter.start(world.release(retrained(tmp_path), "v2.onnx"))
    assert step["phase"] == "in_progress", step
    version, weights = world.alias()
    canary = step["state"]["version"]
    # The alias stays on the previous version; the new one gets the canary's weight.
    share = world.target["canary"]["weight_percent"] / 100
    assert (version, weights) == (previous, {canary: share})
    return step, previous, canary


def test_a_healthy_canary_bakes_then_takes_the_whole_alias(aws: None, tmp_path: Path) -> None:
    world = World(weight_percent=10, bake_minutes=10, max_error_rate=0.05)
    step, previous, canary = canary_started(world, tmp_path)
    started = f"canary 10% on version {canary} for 10 min (version {previous} serves the rest)"
    assert step["phase_reason"] == started
    # The release's history says why it is still rolling out.
    assert world.history("2")[-1] == ("rolling_out", started)
    # During the bake the alias's own version still serves release 1.
    assert served_version(world.lambda_, FUNCTION) == "1"

    world.serve(canary, 40)
    put_lambda_metrics(world.cloudwatch, canary, invocations=40, errors=0)
    world.later(4)
    step = world.promoter.check(step)
    assert (step["phase"], step["phase_reason"]) == (
        "in_progress",
        f"canary 10% on version {canary}: 40 requests, 0 errors; 6 min left",
    )
    assert world.alias() == (previous, {canary: 0.1})

    world.later(6 + SETTLE_S / MINUTE)
    step = world.promoter.check(step)
    assert step["phase"] == "succeeded", step
    assert world.alias() == (canary, {})
    done = world.promoter.finish(step)
    assert done["result"] == "live"
    assert world.store.live("wine").release == "2"
    assert served_version(world.lambda_, FUNCTION) == "2"
    (live,) = [e for e in world.store.history("wine", "2") if e.state == "live"]
    assert live.detail["canary"]["passed"] is True
    assert live.detail["canary"]["figures"]["requests"] == 40
    assert world.history("1")[-1][0] == "superseded"
    assert world.failures == []


def test_a_canary_over_its_error_rate_goes_back_and_fails(aws: None, tmp_path: Path) -> None:
    world = World(weight_percent=10, bake_minutes=10, max_error_rate=0.05)
    step, previous, canary = canary_started(world, tmp_path)
    world.serve(canary, 20)
    world.fail(canary, "2", 3)
    world.later(2)
    step = world.promoter.check(step)  # no need to wait for the bake's end
    assert step["phase"] == "failed", step["phase_reason"]
    reason = (
        f"canary of version {canary} failed: error rate 13.04% (3 of 23 requests: 3 answered "
        f"5xx, 0 function errors) is over max_error_rate 5.00%; alias live is back on "
        f"version {previous}"
    )
    assert step["phase_reason"] == reason
    assert world.alias() == (previous, {})
    done = world.promoter.finish(step)
    assert done["result"] == "failed"
    assert world.history("2")[-1] == ("failed", reason)
    assert world.store.live("wine").release == "1"
    assert served_version(world.lambda_, FUNCTION) == "1"
    assert world.failures == [("wine", reason)]


def test_the_previous_versions_errors_are_not_the_canarys(aws: None, tmp_path: Path) -> None:
    """Lambda's Errors by ExecutedVersion: the canary's function errors (crashes, timeouts,
    which our EMF never records) fail it; the previous version's do not count."""
    world = World(weight_percent=10, bake_minutes=10, max_error_rate=0.05)
    step, previous, canary = canary_started(world, tmp_path)
    world.serve(canary, 30)
    put_lambda_metrics(world.cloudwatch, previous, invocations=300, errors=60)
    world.later(2)
    assert world.promoter.check(step)["phase"] == "in_progress"

    put_lambda_metrics(world.cloudwatch, canary, invocations=33, errors=3)
    world.later(1)
    step = world.promoter.check(step)
    assert step["phase"] == "failed"
    assert (
        "error rate 9.09% (3 of 33 requests: 0 answered 5xx, 3 function errors)"
        in (step["phase_reason"])
    )
    assert world.alias() == (previous, {})
    assert world.promoter.finish(step)["result"] == "failed"
    assert world.store.live("wine").release == "1"


def test_a_bake_that_few_requests_reached_fails(aws: None, tmp_path: Path) -> None:
    world = World(weight_percent=5, bake_minutes=10, min_requests=50)
    step, previous, canary = canary_started(world, tmp_path)
    world.serve(canary, 12)
    world.later(10)
    step = world.promoter.check(step)  # the bake is over; the last metrics may still come
    assert step["phase"] == "in_progress"
    assert step["phase_reason"].endswith("bake over, the verdict in 120 s (late metrics)")
    world.later(SETTLE_S / MINUTE)
    step = world.promoter.check(step)
    assert step["phase"] == "failed"
    assert step["phase_reason"] == (
        f"canary of version {canary} failed: only 12 requests reached it in 10 min, fewer than "
        f"min_requests 50: nothing shows it serves well; alias live is back on version {previous}"
    )
    assert world.alias() == (previous, {})
    assert world.promoter.finish(step)["result"] == "failed"
    assert world.store.live("wine").release == "1"


class MetricDataDouble:
    """Answers GetMetricData as CloudWatch would for fixed figures, per metric and statistic
    of each query (moto computes no percentile). Answers are checked against the operation's
    output shape; the queries are recorded."""

    def __init__(self, client: Any, figures: dict[tuple[str, str], float]) -> None:
        self.figures = figures
        self.queries: list[dict[str, Any]] = []
        client.meta.events.register("before-parameter-build.cloudwatch.GetMetricData", self._keep)
        client.meta.events.register("before-call.cloudwatch.GetMetricData", self._answer)

    def _keep(self, params: dict[str, Any], **_: Any) -> None:
        self.queries = list(params["MetricDataQueries"])

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        results = []
        for query in self.queries:
            stat = query["MetricStat"]
            value = self.figures.get((stat["Metric"]["MetricName"], stat["Stat"]))
            results.append(
                {
                    "Id": query["Id"],
                    "Timestamps": [] if value is None else [datetime.now(UTC)],
                    "Values": [] if value is None else [value],
                    "StatusCode": "Complete",
                }
            )
        answer = {"MetricDataResults": results, "Messages": []}
        report = ParamValidator().validate(answer, model.output_shape)
        assert not report.has_errors(), report.generate_report()
        return AWSResponse("https://double.invalid", 200, HTTPHeaders(), None), answer


def test_a_canary_over_its_p99_goes_back_and_fails(aws: None, tmp_path: Path) -> None:
    world = World(weight_percent=10, bake_minutes=10, max_p99_ms=100)
    step, previous, canary = canary_started(world, tmp_path)
    double = MetricDataDouble(
        world.cloudwatch,
        {("Requests", "Sum"): 40, ("Invocations", "Sum"): 40, ("Latency", "p99"): 812.4},
    )
    world.later(3)
    step = world.promoter.check(step)
    assert step["phase"] == "failed"
    assert step["phase_reason"] == (
        f"canary of version {canary} failed: p99 latency 812 ms over 40 requests is over "
        f"max_p99_ms 100 ms; alias live is back on version {previous}"
    )
    # The p99 is read where the canary's own requests are: its release's Latency.
    (latency,) = [q for q in double.queries if q["MetricStat"]["Stat"] == "p99"]
    dimensions = {d["Name"]: d["Value"] for d in latency["MetricStat"]["Metric"]["Dimensions"]}
    assert (latency["MetricStat"]["Metric"]["MetricName"], dimensions["model_version"]) == (
        "Latency",
        "2",
    )
    assert world.alias() == (previous, {})
    assert world.promoter.finish(step)["result"] == "failed"
    assert world.store.live("wine").release == "1"


def test_a_rollback_never_canaries(aws: None, tmp_path: Path) -> None:
    world = World(weight_percent=10, bake_minutes=10)
    step, _, canary = canary_started(world, tmp_path)
    world.serve(canary, 10)
    world.later(10 + SETTLE_S / MINUTE)
    assert world.promoter.finish(world.promoter.check(step))["result"] == "live"
    reads = len(world.metric_reads)

    back = world.promoter.run(world.promoter.rollback("wine", to=None, by="ops"), deadline_s=60)
    assert (back["release"], back["result"]) == ("1", "live")
    assert "canary" not in back["state"]
    version, weights = world.alias()
    assert (version, weights) == (back["state"]["version"], {})
    assert len(world.metric_reads) == reads  # restored at once, no bake
    assert served_version(world.lambda_, FUNCTION) == "1"


def test_a_canary_whose_checks_failed_leaves_the_alias(aws: None, tmp_path: Path) -> None:
    """The state machine's Catch on Check hands Finish a failed step (the promoter handler's
    "the rollout could not be checked: ..."): the canary's weight must not stay on the alias."""
    world = World(weight_percent=10, bake_minutes=10)
    step, previous, _ = canary_started(world, tmp_path)
    caught = {**step, "phase": "failed", "phase_reason": "the rollout could not be checked: X"}
    done = world.promoter.finish(caught)
    assert done["result"] == "failed"
    assert done["reason"] == (
        f"the rollout could not be checked: X; alias live is back on version {previous}"
    )
    assert world.alias() == (previous, {})
    assert world.history("2")[-1] == ("failed", done["reason"])
    assert world.store.live("wine").release == "1"
