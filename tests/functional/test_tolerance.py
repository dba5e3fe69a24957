"""The tolerance rules that decide whether TensorRT's (or an FP16 copy's) outputs may serve."""

from __future__ import annotations

import numpy as np
import pytest

from inferstack.models.tolerance import max_abs_error, mismatch


def test_fp32_accepts_float_noise_and_refuses_a_real_difference() -> None:
    want = {"y": np.linspace(-1, 1, 10, dtype=np.float32)}
    assert mismatch(want, {"y": want["y"] + 5e-5}, "fp32") is None
    wrong = want["y"].copy()
    wrong[7] += 0.01
    message = mismatch(want, {"y": wrong}, "fp32")
    assert message is not None
    assert "output 'y'" in message and "[7]" in message and "fp32" in message


def test_fp16_is_looser_than_fp32() -> None:
    want = {"y": np.full((2, 3), 0.5, np.float32)}
    got = {"y": want["y"] + 0.004}
    assert mismatch(want, got, "fp16") is None
    assert mismatch(want, got, "fp32") is not None


def test_absolute_tolerance_scales_with_the_outputs_magnitude() -> None:
    want = {"logits": np.array([1000.0, 0.0], np.float32)}
    # 0.05 off on a zero is within 1e-4 * 1000 of an output in the thousands
    assert mismatch(want, {"logits": np.array([1000.0, 0.05], np.float32)}, "fp32") is None
    assert mismatch(want, {"logits": np.array([1000.0, 0.2], np.float32)}, "fp32") is not None


def test_nan_and_inf_must_match_exactly() -> None:
    want = {"y": np.array([np.nan, np.inf, 1.0], np.float32)}
    assert mismatch(want, {"y": want["y"].copy()}, "fp16") is None
    message = mismatch(want, {"y": np.array([0.0, np.inf, 1.0], np.float32)}, "fp16")
    assert message is not None and "[0]" in message
    assert mismatch(want, {"y": np.array([np.nan, -np.inf, 1.0], np.float32)}, "fp16") is not None
    assert mismatch({"y": np.ones(2, np.float32)}, {"y": np.array([1.0, np.nan])}, "fp16")


def test_shapes_missing_outputs_and_integers_are_exact() -> None:
    want = {"y": np.zeros((2, 3), np.float32), "label": np.array([1, 2], np.int64)}
    assert "shape [3, 2]" in (
        mismatch(want, {"y": np.zeros((3, 2), np.float32), "label": want["label"]}, "fp32") or ""
    )
    assert "'label' is missing" in (mismatch(want, {"y": want["y"]}, "fp32") or "")
    message = mismatch(want, {"y": want["y"], "label": np.array([1, 3])}, "fp16")
    assert message is not None and "'label'" in message and "[1]" in message


def test_max_abs_error_and_unknown_precision() -> None:
    want = {"y": np.array([1.0, 2.0, np.nan]), "k": np.array([1])}
    assert max_abs_error(want, {"y": np.array([1.25, 2.0, np.nan]), "k": np.array([9])}) == 0.25
    with pytest.raises(ValueError, match="int8"):
        mismatch(want, want, "int8")
