"""Model lifecycle: how long the validation gate takes, and an upload's way to live.

- validation: `validate_model` (the promoter's and `inferstack validate`'s checks) on the
  demo model and light_resnet50, each check timed;
- upload to live: on moto's HTTP server with real boto3 clients (tests/lifecycle_world.py),
  from the S3 PutObject of an upload to a new execution environment of the Lambda alias
  serving it: event delivery, validation, release records, publish + smoke + alias, pointer.
  moto answers in microseconds where AWS takes tens to hundreds of milliseconds per call, so
  this is the kit's own time on the path, not what a deployment will see end to end.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Config, demo_model, onnx_light_model, scoped_environ

NAME = "lifecycle"
TARGET = "none set: report validation time (light_resnet50) and upload-to-live time (moto)"


def run(config: Config) -> dict[str, Any]:
    runs = config.pick(3, 1)
    results: dict[str, Any] = {"validation": {}, "upload_to_live": {}}
    for model in (demo_model(), onnx_light_model("light_resnet50")):
        results["validation"][model.path.name] = _validation(model.path, runs)
    results["upload_to_live"] = _upload_to_live(config.pick(5, 2))
    return {"name": NAME, "target": TARGET, "met": None, "results": results}


def _validation(path: Path, runs: int) -> dict[str, Any]:
    from inferstack.release.validate import limits_for, validate_model

    totals: list[float] = []
    checks: dict[str, list[float]] = {}
    p50_ms = None
    for _ in range(runs):
        began = time.perf_counter()
        report = validate_model(path, limits=limits_for("sagemaker"))
        totals.append(time.perf_counter() - began)
        if not report.passed:
            raise RuntimeError(f"{path.name} did not pass: {report.failed_check}")
        for check in report.checks:
            checks.setdefault(check.name, []).append(check.seconds)
        p50_ms = report.p50_ms
    return {
        "runs": runs,
        "bytes": path.stat().st_size,
        "total_s": {"median": round(statistics.median(totals), 3), "min": round(min(totals), 3)},
        "checks_median_s": {k: round(statistics.median(v), 3) for k, v in checks.items()},
        "smoke_p50_ms": p50_ms,
    }


def _upload_to_live(runs: int) -> dict[str, Any]:
    import os

    from tests.lifecycle_world import (
        BUCKET,
        CREDENTIALS,
        LifecycleWorld,
        moto_server,
        upload_rule_pattern,
    )

    pattern = upload_rule_pattern(
        {"Resources": {"PromoterUploadRule": {"Type": "AWS::Events::Rule", "Properties": {
            "EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"],
                             "detail": {"bucket": {"name": []},
                                        "object": {"key": [{"prefix": "uploads/"}]}}}}}}},
        BUCKET,
    )  # fmt: skip
    times: list[float] = []
    with scoped_environ(CREDENTIALS), tempfile.TemporaryDirectory() as cache:
        os.environ["INFERSTACK_CACHE_DIR"] = cache
        import onnx

        model = onnx.load(demo_model().path)
        for endpoint in moto_server():
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            world = LifecycleWorld(endpoint, pattern)
            for index in range(runs):
                # Each upload is new content (a release each time), as a retrained model is.
                model.doc_string = f"retrained {index}"
                body = model.SerializeToString()
                began = time.perf_counter()
                world.s3.put_object(Bucket=BUCKET, Key=f"uploads/wine/{index}.onnx", Body=body)
                world.pump()
                served = world.served_version()
                times.append(time.perf_counter() - began)
                if served != str(index + 1):
                    raise RuntimeError(
                        f"upload {index} did not go live: {served} {world.results[-1:]}"
                    )
    return {
        "runs": runs,
        "model": "wine.onnx",
        "seconds": {"median": round(statistics.median(times), 3), "min": round(min(times), 3),
                    "max": round(max(times), 3)},
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> list[str]:
    from benchmarks.common import md_table

    res = result["results"]
    rows = []
    for name, v in res["validation"].items():
        checks = ", ".join(f"{k} {s}" for k, s in v["checks_median_s"].items() if s >= 0.01)
        rows.append([name, v["bytes"], v["runs"], v["total_s"]["median"], v["total_s"]["min"],
                     v["smoke_p50_ms"], checks])  # fmt: skip
    live = res["upload_to_live"]
    return [
        "Validation gate (`validate_model`, SageMaker limits), seconds:",
        "",
        md_table(
            [
                "model",
                "bytes",
                "runs",
                "median s",
                "min s",
                "smoke p50 ms",
                "checks >= 10 ms (median s)",
            ],
            rows,
        ),
        "",
        f"Upload to live on moto's server ({live['model']}, {live['runs']} uploads, each a new "
        f"release): median **{live['seconds']['median']} s** (min {live['seconds']['min']}, "
        f"max {live['seconds']['max']}): S3 event, validation, release records, Lambda "
        "publish + smoke invoke + alias, live pointer, then a new execution environment of "
        "the alias answering. moto answers in microseconds; AWS adds its own latency per call "
        "(a Lambda version publish alone takes seconds).",
    ]
