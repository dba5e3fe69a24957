"""A release's drift baseline: its reference sample's inputs and the model's outputs on them.

Computed when the release is made (the promoter, after the validation gate), stored under
baselines/<model>/<content id>/ (statistics.json and constraints.json in SageMaker Model
Monitor's schemas, baseline.json ours), and named in the manifest ("baseline": {"prefix"}),
where the drift check finds it. A release without a reference sample has none: synthetic
smoke-test inputs describe no traffic.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferstack.names import BASELINES_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np


def baseline_prefix(model: str, content: str) -> str:
    return f"{BASELINES_PREFIX}{model}/{content}/"


def reference_outputs(model_path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs on the reference sample (ONNX Runtime on the CPU; a GPU model's
    graph runs there too, slower)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def store_baseline(
    s3: Any,
    bucket: str,
    *,
    model: str,
    content: str,
    model_path: Path,
    reference: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Build the baseline of `reference` and store it; the manifest's "baseline" entry."""
    from inferstack.drift.baseline import build_baseline

    baseline = build_baseline(reference, reference_outputs(model_path, reference))
    prefix = baseline_prefix(model, content)
    with tempfile.TemporaryDirectory(prefix="inferstack-baseline-") as work:
        baseline.save(work)
        for path in sorted(Path(work).iterdir()):
            s3.put_object(
                Bucket=bucket,
                Key=prefix + path.name,
                Body=path.read_bytes(),
                ContentType="application/json",
            )
    return {"prefix": prefix, "rows": baseline.rows, "features": len(baseline.features)}
