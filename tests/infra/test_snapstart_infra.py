"""Lambda SnapStart in the CDK app: the per-model `cold_start` option and what it synthesizes.

The configuration refuses what AWS refuses (SnapStart with provisioned concurrency, ephemeral
storage over 512 MB) and a model that cannot fit SnapStart's /tmp, naming the file, the key
and AWS's reason. The templates hold SnapStart on the snapstart models' functions only, the
alias `live` on a published version, a metric filter that turns Lambda's "Restore Duration"
into a metric, and the dashboard graphs of new environments (initialized vs restored) and
restore duration. cfn-lint and cdk-nag run on dev (which uses SnapStart) in test_checks.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inferstack.names import ENV_TARGETS
from infra.config import (
    SNAPSTART_MAX_MODEL_MB,
    ColdStart,
    ConfigError,
    LambdaModel,
    load_environment,
)
from infra.constructs.monitoring import restore_duration_namespace

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

SNAPSTART_DOCS = "https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html"

# Lambda's REPORT lines (text log format), fields as AWS documents them: an invocation in an
# environment restored from a snapshot carries Restore Duration and no Init Duration
# (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-monitoring.html); Lambda separates
# the fields with tabs.
RESTORED_REPORT = (
    "REPORT RequestId: 3f1c2b9e-8d4a-4c61-9b0e-2f6a1d7c5e10\tDuration: 2.05 ms\t"
    "Billed Duration: 3 ms\tMemory Size: 1024 MB\tMax Memory Used: 150 MB\t"
    "Restore Duration: 474.16 ms\tBilled Restore Duration: 257 ms\t"
    "\nXRAY TraceId: 1-5e1b4151-5ac6c58f5b9d2c2f7a6c3a1e\tSegmentId: 6b5f1c0d2e3a4b5c\t"
    "Sampled: true"
)
INITIALIZED_REPORT = (
    "REPORT RequestId: 7a0d9c1e-1b2c-4d3e-8f4a-5b6c7d8e9f00\tDuration: 12.40 ms\t"
    "Billed Duration: 13 ms\tMemory Size: 1024 MB\tMax Memory Used: 150 MB\t"
    "Init Duration: 2310.52 ms\t"
)
WARM_REPORT = (
    "REPORT RequestId: 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0\tDuration: 1.91 ms\t"
    "Billed Duration: 2 ms\tMemory Size: 1024 MB\tMax Memory Used: 151 MB\t"
)


def _write_env(directory: Path, name: str, models: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.toml").write_text(models)
    return directory


def _one_lambda_model(tmp_path: Path, keys: str) -> str:
    """The ConfigError message of an environment with one Lambda model and `keys`."""
    _write_env(tmp_path, "lab", f'[[models]]\nname = "wine"\ntarget = "lambda"\n{keys}\n')
    with pytest.raises(ConfigError) as error:
        load_environment("lab", tmp_path)
    return str(error.value)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            'cold_start = "snapstart"\nprovisioned_concurrency = 2',
            "SnapStart does not support provisioned concurrency",
        ),
        (
            'cold_start = "snapstart"\nephemeral_storage_mb = 1024',
            "SnapStart does not support ephemeral storage over 512 MB",
        ),
        (
            f'cold_start = "snapstart"\nmax_model_mb = {SNAPSTART_MAX_MODEL_MB + 1}',
            f"at most {SNAPSTART_MAX_MODEL_MB}",
        ),
    ],
    ids=["provisioned-concurrency", "ephemeral-storage", "model-too-large-for-tmp"],
)
def test_snapstart_refuses_what_aws_refuses_with_the_reason(
    tmp_path: Path, keys: str, expected: str
) -> None:
    message = _one_lambda_model(tmp_path, keys)
    # The file and the model, the key, AWS's reason and where AWS says it.
    assert message.startswith(f"{tmp_path / 'lab.toml'}: models.0: cold_start = 'snapstart'")
    assert expected in message
    assert SNAPSTART_DOCS in message


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('cold_start = "provisioned"', "needs provisioned_concurrency >= 1"),
        (
            'cold_start = "on_demand"\nprovisioned_concurrency = 3',
            "set cold_start = 'provisioned', or remove provisioned_concurrency",
        ),
        ('cold_start = "snapshot"', "Input should be 'on_demand', 'snapstart' or 'provisioned'"),
    ],
    ids=["provisioned-without-concurrency", "on-demand-with-concurrency", "unknown-value"],
)
def test_cold_start_must_agree_with_provisioned_concurrency(
    tmp_path: Path, keys: str, expected: str
) -> None:
    message = _one_lambda_model(tmp_path, keys)
    assert "models.0" in message and "cold_start" in message
    assert expected in message


def test_snapstart_defaults_fit_snapstart() -> None:
    """With SnapStart the function gets 512 MB of /tmp (AWS's most) and the upload gate
    keeps models small enough to be cached there; arm64 is allowed."""
    model = LambdaModel.model_validate(
        {"name": "wine", "target": "lambda", "cold_start": "snapstart", "architecture": "arm64"}
    )
    assert model.ephemeral_storage_mb == 512
    assert model.max_model_mb == SNAPSTART_MAX_MODEL_MB == 448
    plain = LambdaModel.model_validate({"name": "wine", "target": "lambda"})
    assert (plain.cold_start, plain.ephemeral_storage_mb, plain.max_model_mb) == (
        ColdStart.ON_DEMAND,
        1024,
        None,
    )


def test_existing_files_keep_their_meaning() -> None:
    """Files written before `cold_start` existed: provisioned concurrency means
    "provisioned", none means "on_demand"; dev uses SnapStart."""
    expected = {
        "prod": ColdStart.PROVISIONED,
        "staging": ColdStart.ON_DEMAND,
        "dev": ColdStart.SNAPSTART,
    }
    for name, cold_start in expected.items():
        (wine,) = [m for m in load_environment(name).models if isinstance(m, LambdaModel)]
        assert wine.cold_start is cold_start, name


# ------------------------------------------------------------------ templates


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def _inference_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Logical id -> properties of every inference function, by its model name."""
    return {
        props["Environment"]["Variables"]["INFERSTACK_MODEL_NAME"]: {"id": logical_id, **props}
        for logical_id, resource in _resources(template, "AWS::Lambda::Function").items()
        if "INFERSTACK_MODEL_NAME"
        in (props := resource["Properties"]).get("Environment", {}).get("Variables", {})
    }


def _template(env: Synthesized) -> dict[str, Any]:
    template: dict[str, Any] = json.loads(env.template_path.read_text())
    return template


def test_snapstart_is_on_the_snapstart_models_functions_only(env: Synthesized) -> None:
    template = _template(env)
    snapstart = {
        m.name
        for m in env.config.models
        if isinstance(m, LambdaModel) and m.cold_start is ColdStart.SNAPSTART
    }
    assert snapstart == ({"wine"} if env.config.name == "dev" else set())
    for logical_id, resource in _resources(template, "AWS::Lambda::Function").items():
        props = resource["Properties"]
        model = props.get("Environment", {}).get("Variables", {}).get("INFERSTACK_MODEL_NAME")
        if model in snapstart:
            assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, logical_id
            assert props["EphemeralStorage"] == {"Size": 512}, logical_id
        else:  # other models, the promoter, the drift check, CDK's helpers
            assert "SnapStart" not in props, logical_id


def test_the_alias_serves_a_published_snapshotted_version(
    synthesized: dict[str, Synthesized],
) -> None:
    template = _template(synthesized["dev"])
    function = _inference_functions(template)["wine"]["id"]
    versions = {
        logical_id
        for logical_id, resource in _resources(template, "AWS::Lambda::Version").items()
        if resource["Properties"]["FunctionName"] == {"Ref": function}
    }
    assert len(versions) == 1
    (alias,) = (
        r["Properties"]
        for r in _resources(template, "AWS::Lambda::Alias").values()
        if r["Properties"]["FunctionName"] == {"Ref": function}
    )
    assert alias["Name"] == "live"
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [versions.pop(), "Version"]}
    assert "ProvisionedConcurrencyConfig" not in alias
    # CDK's "SnapStart only supports published Lambda versions" warning is answered by it.
    from aws_cdk.assertions import Annotations, Match

    warnings = Annotations.from_stack(synthesized["dev"].stack).find_warning(
        "*", Match.string_like_regexp(".*SnapStart.*")
    )
    assert not warnings, [str(w.entry.data) for w in warnings]
    # prod keeps its provisioned concurrency (cold_start = "provisioned" by default).
    prod = _template(synthesized["prod"])
    (prod_alias,) = _resources(prod, "AWS::Lambda::Alias").values()
    assert prod_alias["Properties"]["ProvisionedConcurrencyConfig"] == {
        "ProvisionedConcurrentExecutions": 5
    }


# The space-delimited filter pattern, applied as CloudWatch Logs does: fields are the
# whitespace-separated words, a quoted value must equal its field, a trailing `...` takes
# any remaining words (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/
# FilterAndPatternSyntaxForMetricFilters.html).
_FIELD = re.compile(r'^\s*([\w.]+)\s*(?:=\s*"([^"]*)")?\s*$')


def _match(pattern: str, line: str) -> dict[str, str] | None:
    assert pattern.startswith("[") and pattern.endswith("]"), pattern
    fields = [_FIELD.match(part) for part in pattern[1:-1].split(",")]
    words = line.split()
    rest = fields[-1] is not None and fields[-1].group(1) == "..."
    named = fields[:-1] if rest else fields
    if len(words) < len(named) or (not rest and len(words) != len(named)):
        return None
    values: dict[str, str] = {}
    for field, word in zip(named, words, strict=False):
        assert field is not None
        name, literal = field.groups()
        if literal is not None and word != literal:
            return None
        values[name] = word
    return values


def _restore_filter(template: dict[str, Any], log_group: dict[str, Any]) -> dict[str, Any]:
    (props,) = (
        r["Properties"]
        for r in _resources(template, "AWS::Logs::MetricFilter").values()
        if r["Properties"]["LogGroupName"] == log_group
    )
    assert isinstance(props, dict)
    return props


def test_restore_duration_metric_filter_reads_lambdas_report_line(
    synthesized: dict[str, Synthesized],
) -> None:
    template = _template(synthesized["dev"])
    function = _inference_functions(template)["wine"]
    # On the log group the function writes to.
    log_group = function["LoggingConfig"]["LogGroup"]
    props = _restore_filter(template, log_group)
    (transformation,) = props["MetricTransformations"]
    assert transformation == {
        "MetricName": "RestoreDuration",
        "MetricNamespace": "InferStack/SnapStart/dev/wine",
        "MetricValue": "$restore_ms",
        "Unit": "Milliseconds",
    }
    assert restore_duration_namespace("dev", "wine") == transformation["MetricNamespace"]
    pattern = props["FilterPattern"]
    restored = _match(pattern, RESTORED_REPORT)
    assert restored is not None and restored["restore_ms"] == "474.16"
    # Environments that were initialized, and warm invocations, publish nothing.
    assert _match(pattern, INITIALIZED_REPORT) is None
    assert _match(pattern, WARM_REPORT) is None
    # The functions log in Lambda's text format, which these lines are: JSON would need a
    # JSON pattern ({ $.record.metrics.restoreDurationMs = * }).
    assert function.get("LoggingConfig", {}).get("LogFormat", "Text") == "Text"


def test_no_restore_metric_filter_without_snapstart(synthesized: dict[str, Synthesized]) -> None:
    for name in ("staging", "prod"):
        template = _template(synthesized[name])
        filters = _resources(template, "AWS::Logs::MetricFilter").values()
        assert not [
            f
            for f in filters
            if f["Properties"]["MetricTransformations"][0]["MetricName"] == "RestoreDuration"
        ], name


def _dashboard(env: Synthesized) -> str:
    (dashboard,) = _resources(_template(env), "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return "".join(p if isinstance(p, str) else "REGION" for p in parts)


def _widget(body: dict[str, Any], title: str) -> dict[str, Any] | None:
    found = [w for w in body["widgets"] if w.get("properties", {}).get("title") == title]
    return found[0] if found else None


def test_dashboard_shows_initialized_vs_restored_and_restore_duration(
    synthesized: dict[str, Synthesized],
) -> None:
    dev = json.loads(_dashboard(synthesized["dev"]))
    widget = _widget(dev, "wine: new environments (cold starts)")
    assert widget is not None
    entries = [e[0] for e in widget["properties"]["metrics"]]
    by_id = {e.get("id"): e for e in entries if "id" in e}
    assert 'MetricName="ColdStart"' in by_id["cold"]["expression"]
    assert 'MetricName="RestoredStart"' in by_id["restored"]["expression"]
    lines = {e["label"]: e["expression"] for e in entries if "id" not in e}
    assert lines == {
        "initialized (ColdStart - RestoredStart)": "FILL(SUM(cold), 0) - FILL(SUM(restored), 0)",
        "restored from snapshot (RestoredStart)": "FILL(SUM(restored), 0)",
    }
    restore = _widget(dev, "wine: SnapStart restore duration (ms)")
    assert restore is not None
    metrics = restore["properties"]["metrics"]
    assert {tuple(m[:2]) for m in metrics} == {("InferStack/SnapStart/dev/wine", "RestoreDuration")}
    assert [m[2]["stat"] for m in metrics] == ["p50", "p99", "Maximum"]
    # An on-demand model has the cold-start split too, but no restore duration.
    staging = json.loads(_dashboard(synthesized["staging"]))
    assert _widget(staging, "wine: new environments (cold starts)") is not None
    assert _widget(staging, "wine: SnapStart restore duration (ms)") is None


def test_a_custom_environment_gets_snapstart_where_configured(tmp_path: Path) -> None:
    """Two Lambda models on different architectures: SnapStart, filter and graph go to the
    snapstart one only."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.app import add_stack, feature_flags

    _write_env(
        tmp_path,
        "lab",
        '[[models]]\nname = "fast"\ntarget = "lambda"\narchitecture = "x86_64"\n'
        'cold_start = "snapstart"\n\n'
        '[[models]]\nname = "plain"\ntarget = "lambda"\nephemeral_storage_mb = 2048\n',
    )
    config = load_environment("lab", tmp_path)
    app = cdk.App(outdir=str(tmp_path / "out"), context=feature_flags())
    stack = add_stack(app, config)
    template = dict(Template.from_stack(stack).to_json())
    functions = _inference_functions(template)
    assert functions["fast"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert functions["fast"]["Architectures"] == ["x86_64"]
    assert functions["fast"]["EphemeralStorage"] == {"Size": 512}
    assert "SnapStart" not in functions["plain"]
    assert functions["plain"]["EphemeralStorage"] == {"Size": 2048}
    fast_filter = _restore_filter(template, functions["fast"]["LoggingConfig"]["LogGroup"])
    assert fast_filter["MetricTransformations"][0]["MetricNamespace"] == (
        "InferStack/SnapStart/lab/fast"
    )
    assert not [
        r
        for r in _resources(template, "AWS::Logs::MetricFilter").values()
        if r["Properties"]["LogGroupName"] == functions["plain"]["LoggingConfig"]["LogGroup"]
        and r["Properties"]["MetricTransformations"][0]["MetricName"] == "RestoreDuration"
    ]
    # The upload bound that fits SnapStart's /tmp reaches the promoter's validation gate.
    assert _promoter_targets(template)["fast"]["max_model_bytes"] == 448 * 1024 * 1024
    assert "max_model_bytes" not in _promoter_targets(template)["plain"]


def _promoter_targets(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The promoter's per-model targets (INFERSTACK_TARGETS), tokens as placeholders."""
    (value,) = (
        props["Environment"]["Variables"][ENV_TARGETS]
        for props in (
            r["Properties"] for r in _resources(template, "AWS::Lambda::Function").values()
        )
        if ENV_TARGETS in props.get("Environment", {}).get("Variables", {})
    )
    if isinstance(value, dict):
        value = "".join(p if isinstance(p, str) else "TOKEN" for p in value["Fn::Join"][1])
    targets: dict[str, dict[str, Any]] = json.loads(value)
    return targets
