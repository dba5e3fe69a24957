"""The per-request EMF line: Powertools' own document, built once per shape, values filled in."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from inferstack.telemetry import PowertoolsTelemetry, RequestRecord

pytestmark = pytest.mark.filterwarnings("ignore:Dimension 'environment' has already been added")


@pytest.fixture(autouse=True)
def _metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def powertools_flush(telemetry: PowertoolsTelemetry, record: RequestRecord, cold: bool) -> None:
    """What record() printed before templates: add_metric per value, flush_metrics."""
    metrics, unit = telemetry.metrics, telemetry._units
    metrics.add_dimension("model", record.model or "")
    metrics.add_dimension("model_version", record.model_version or "unversioned")
    metrics.add_metric("Requests", unit.Count, 1)
    metrics.add_metric("Latency", unit.Milliseconds, record.total_ms)
    metrics.add_metric("ModelLatency", unit.Milliseconds, record.model_ms or 0)
    metrics.add_metric("RequestBytes", unit.Bytes, record.request_bytes)
    metrics.add_metric("ResponseBytes", unit.Bytes, record.response_bytes)
    metrics.add_metric("ServerErrors", unit.Count, 1 if record.status >= 500 else 0)
    if cold:
        metrics.add_metric("ColdStart", unit.Count, 1)
    metrics.flush_metrics()


def record(
    version: str, total_ms: float, model_ms: float, sizes: tuple[int, int], status: int = 200
) -> RequestRecord:
    return RequestRecord(
        status,
        total_ms,
        model="wine",
        model_version=version,
        model_ms=model_ms,
        request_bytes=sizes[0],
        response_bytes=sizes[1],
    )


def test_each_request_prints_the_document_powertools_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    telemetry = PowertoolsTelemetry(environment="test", service="inferstack")
    requests = [
        record("1", 2.5, 1.25, (484, 190)),
        record("1", 7.0, 3.5, (12, 900)),
        record("1", 1.0, 0.5, (12, 40), status=503),
        record("1", 1.0, 0.5, (12, 40), status=400),
    ]
    before = int(time.time() * 1000)
    for request in requests:
        telemetry.record(request)
    ours = [d for d in emf_lines(capsys.readouterr().out) if "Requests" in d]  # not Errors
    after = int(time.time() * 1000)
    for index, request in enumerate(requests):
        powertools_flush(telemetry, request, cold=index == 0)
    theirs = emf_lines(capsys.readouterr().out)

    assert len(ours) == len(theirs) == 4
    for mine, expected in zip(ours, theirs, strict=True):
        assert before <= mine["_aws"].pop("Timestamp") <= after
        expected["_aws"].pop("Timestamp")
        assert mine == expected
    # The values are each request's own, not the template's.
    assert [d["Latency"] for d in ours] == [[2.5], [7.0], [1.0], [1.0]]
    assert [d["ResponseBytes"] for d in ours] == [[190.0], [900.0], [40.0], [40.0]]
    # A 5xx answer counts in its version's ServerErrors (the canary's error rate); a 4xx
    # is the client's mistake, not the version's.
    assert [d["ServerErrors"] for d in ours] == [[0.0], [0.0], [1.0], [0.0]]
    assert "ColdStart" in ours[0] and "ColdStart" not in ours[1]


def test_a_new_model_version_gets_its_own_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = PowertoolsTelemetry(environment="test")
    for version in ("1", "2", "1"):
        telemetry.record(record(version, 1.0, 0.5, (1, 1)))
    versions = [d["model_version"] for d in emf_lines(capsys.readouterr().out)]
    assert versions == ["1", "2", "1"]


def test_powertools_switch_is_honoured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    telemetry = PowertoolsTelemetry(environment="test")
    telemetry.record(record("1", 1.0, 0.5, (1, 1)))
    assert emf_lines(capsys.readouterr().out) == []
