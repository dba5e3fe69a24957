"""Multivariate drift: PCA reconstruction error (NannyML's method), from mergeable moments.

At baseline the numeric features are standardized and a PCA keeps the components that
explain 65% of the variance, fitted on half the reference rows. The other half calibrates:
the mean per-row reconstruction error and its spread. A window's mean reconstruction error is
computed exactly from its first and second moments (profile.Joint: tr(R E[z z^T]) with R the
residual projector), so every captured row counts and nothing but F x F numbers is kept.
The threshold is the calibrated mean plus z(alpha) standard errors of the difference of two
means (1/m + 1/n_cal: chunk-calibrated thresholds in closed form for independent rows), and
at least a `min_effect_multivariate` relative rise. A correlation flip with unchanged
marginals moves variance into the discarded components and raises the error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping

    from inferstack.drift.compare import Thresholds
    from inferstack.drift.profile import Joint

VARIANCE_KEPT = 0.65
MAX_FIT_ROWS = 200_000


@dataclass
class PcaModel:
    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # features x kept
    error_mean: float
    error_std: float
    calibration_rows: int

    def errors(self, matrix: np.ndarray) -> np.ndarray:
        """Per-row reconstruction error of rows x features."""
        z = (matrix - self.mean) / self.scale
        residual = z - (z @ self.components) @ self.components.T
        return np.asarray(np.einsum("ij,ij->i", residual, residual))

    def mean_error(self, joint: Joint) -> float:
        """The mean error of the joint moments' rows, exactly (no rows needed)."""
        z = joint.second_moment(self.mean) / np.outer(self.scale, self.scale)
        kept = self.components.T @ z @ self.components
        return float(np.trace(z) - np.trace(kept))

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
            "error_mean": self.error_mean,
            "error_std": self.error_std,
            "calibration_rows": self.calibration_rows,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PcaModel:
        names = tuple(doc["names"])
        return cls(
            names,
            np.asarray(doc["mean"], dtype=np.float64),
            np.asarray(doc["scale"], dtype=np.float64),
            np.asarray(doc["components"], dtype=np.float64).reshape(len(names), -1),
            float(doc["error_mean"]),
            float(doc["error_std"]),
            int(doc["calibration_rows"]),
        )


def fit_pca(
    names: tuple[str, ...], matrix: np.ndarray, *, seed: int = 0, variance: float = VARIANCE_KEPT
) -> PcaModel | None:
    """Fit on half the complete rows, calibrate on the other half (None: too few rows)."""
    rows = matrix[~np.isnan(matrix).any(axis=1)]
    rng = np.random.default_rng(seed)
    if len(rows) > 2 * MAX_FIT_ROWS:
        rows = rows[rng.choice(len(rows), 2 * MAX_FIT_ROWS, replace=False)]
    if len(rows) < 4 * len(names) or len(names) < 2:
        return None
    order = rng.permutation(len(rows))
    fit, calibration = rows[order[: len(rows) // 2]], rows[order[len(rows) // 2 :]]
    mean = fit.mean(axis=0)
    scale = fit.std(axis=0)
    scale[scale == 0] = 1.0
    z = (fit - mean) / scale
    eigenvalues, vectors = np.linalg.eigh(z.T @ z / len(z))
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    share = np.cumsum(eigenvalues) / max(eigenvalues.sum(), 1e-12)
    # At least one component left out: with all kept, the error is rounding noise.
    kept = min(int(np.searchsorted(share, variance) + 1), len(names) - 1)
    model = PcaModel(names, mean, scale, vectors[:, :kept], 0.0, 0.0, len(calibration))
    errors = model.errors(calibration)
    model.error_mean, model.error_std = float(errors.mean()), float(errors.std(ddof=1))
    return model


def threshold_of(model: PcaModel, rows: int, alpha: float, limits: Thresholds) -> float:
    z = NormalDist().inv_cdf(1 - alpha)
    spread = model.error_std * math.sqrt(1 / max(rows, 1) + 1 / model.calibration_rows)
    floor = max(limits.min_effect_multivariate * model.error_mean, 1e-6 * len(model.names))
    return model.error_mean + max(z * spread, floor)


def check_multivariate(
    model: PcaModel, joint: Joint, alpha: float, limits: Thresholds
) -> dict[str, Any] | None:
    """The SUMMARY's "multivariate" entry (None when the window's features differ)."""
    if tuple(joint.names) != model.names:
        return None
    if joint.rows == 0:
        return None
    error = model.mean_error(joint)
    threshold = threshold_of(model, joint.rows, alpha, limits)
    margin = threshold - model.error_mean
    return {
        "method": "pca_reconstruction",
        "error": float(f"{error:.6g}"),
        "threshold": float(f"{threshold:.6g}"),
        "reference_error": float(f"{model.error_mean:.6g}"),
        "ratio": float(f"{(error - model.error_mean) / margin:.6g}") if margin > 0 else 0.0,
        "drift": error > threshold,
        "components": int(model.components.shape[1]),
        "features": len(model.names),
        "rows": joint.rows,
    }
