"""`inferstack validate`: the promoter's checks on a local file, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import bad_models
from .conftest import DEMO_DIR, DEMO_MODEL

CONSOLE_SCRIPT = Path(sys.executable).with_name("inferstack")


def inferstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_a_good_model_passes_every_check_and_says_so() -> None:
    done = inferstack(
        "validate", str(DEMO_MODEL), "--reference", str(DEMO_DIR / "reference_sample.npy")
    )
    assert done.returncode == 0, done.stderr
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("│") for line in done.stdout.splitlines())
        if len(cells) == 6 and cells[1].strip()
    }
    for check in ("size", "onnx_checker", "opset", "load", "signature", "smoke"):
        assert rows.get(check) == "passed", (check, done.stdout)
    assert "FAILED" not in done.stdout
    assert "on reference inputs" in done.stdout


def test_a_rejected_model_exits_1_naming_its_failed_check(tmp_path: Path) -> None:
    model = bad_models.tiny(tmp_path / "model.onnx", opset=99)
    done = inferstack("validate", str(model))
    assert done.returncode == 1
    assert "rejected: check 'opset' failed" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_a_signature_change_is_refused_unless_intended(tmp_path: Path) -> None:
    live = bad_models.tiny(tmp_path / "live.onnx")
    renamed = bad_models.tiny(tmp_path / "model.onnx", input_name="pixels")
    refused = inferstack("validate", str(renamed), "--live", str(live))
    assert refused.returncode == 1
    assert "check 'signature' failed" in " ".join(refused.stderr.split())
    allowed = inferstack("validate", str(renamed), "--live", str(live), "--allow-signature-change")
    assert allowed.returncode == 0, allowed.stderr


def test_the_json_report_is_what_the_manifest_records(tmp_path: Path) -> None:
    done = inferstack("validate", str(DEMO_MODEL), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["smoke_inputs"] == "synthetic"
    assert [c["name"] for c in report["checks"]][-1] == "smoke"
    assert report["signature"]["inputs"][0]["datatype"] == "FP32"


def test_a_bad_target_or_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert inferstack("validate", str(DEMO_MODEL), "--target", "ec2").returncode == 2
    missing = inferstack("validate", str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
