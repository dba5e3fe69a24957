"""Drift detection: profiles of traffic compared with a release's baseline.

Never imported by the serving path (handler, data plane, models): the drift check and the CLI
use it. features -> profile (mergeable sketches) -> baseline (saved as SageMaker's
statistics.json / constraints.json and ours) -> compare.check -> DriftResult.to_json().
"""

from __future__ import annotations

from inferstack.drift.baseline import Baseline, BaselineError, build_baseline
from inferstack.drift.compare import DriftResult, Thresholds, check
from inferstack.drift.features import Feature, features_of, request_features
from inferstack.drift.profile import Profile

__all__ = [
    "Baseline",
    "BaselineError",
    "DriftResult",
    "Feature",
    "Profile",
    "Thresholds",
    "build_baseline",
    "check",
    "features_of",
    "request_features",
]
