"""TensorRT optimization profiles from a model's signature (what the engine will accept)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from inferstack.exceptions import ModelLoadError
from inferstack.models.tensorrt.profiles import (
    load_check_inputs,
    max_shapes,
    profiles_from_signature,
    synthetic_inputs,
)
from inferstack.protocol.types import TensorSpec

if TYPE_CHECKING:
    from pathlib import Path

IMAGE = TensorSpec("image", "FP32", (-1, 3, 224, 224))
MASK = TensorSpec("mask", "INT64", (-1, 16))


def test_a_variable_first_dimension_is_the_batch_range() -> None:
    profiles = profiles_from_signature([IMAGE, MASK], 32)
    assert profiles.shapes["image"] == ((1, 3, 224, 224), (32, 3, 224, 224), (32, 3, 224, 224))
    assert profiles.shapes["mask"] == ((1, 16), (32, 16), (32, 16))
    assert profiles.max_rows == 32 and profiles.batchable
    assert max_shapes([IMAGE, MASK], profiles)["image"] == (32, 3, 224, 224)
    assert profiles.as_json()["mask"] == [[1, 16], [32, 16], [32, 16]]


def test_a_fixed_first_dimension_turns_batching_off() -> None:
    fixed = TensorSpec("data_0", "FP32", (1, 3, 224, 224))
    profiles = profiles_from_signature([fixed], 32)
    assert profiles.shapes == {}  # static: no profile needed
    assert profiles.max_rows == 1 and not profiles.batchable
    assert max_shapes([fixed], profiles) == {"data_0": (1, 3, 224, 224)}
    assert not profiles_from_signature([IMAGE], 1).batchable  # batching configured off


def test_another_variable_dimension_needs_its_range_in_settings() -> None:
    text = TensorSpec("tokens", "INT64", (-1, -1))
    with pytest.raises(ModelLoadError, match=r"input 'tokens'.*axis 1.*settings.json"):
        profiles_from_signature([text], 8)
    override = {"tokens": {"min": [1, 1], "opt": [8, 128], "max": [8, 512]}}
    profiles = profiles_from_signature([text], 8, {"profiles": override}["profiles"])
    assert profiles.shapes["tokens"] == ((1, 1), (8, 128), (8, 512))
    assert profiles.max_rows == 8 and profiles.batchable


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224]}, '"min", "opt" and "max"'),
        ({"min": [1, 3], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}, "4 positive sizes"),
        ({"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 1, 224, 224]}, "fixes 3"),
        ({"min": [4, 3, 224, 224], "opt": [2, 3, 224, 224], "max": [8, 3, 224, 224]}, "min <="),
    ],
)
def test_bad_overrides_name_the_problem(override: dict[str, list[int]], problem: str) -> None:
    with pytest.raises(ModelLoadError, match=problem):
        profiles_from_signature([IMAGE], 8, {"image": override})


def test_an_override_for_an_unknown_input_is_refused() -> None:
    with pytest.raises(ModelLoadError, match=r"\['imgae'\].*\['image'\]"):
        profiles_from_signature([IMAGE], 8, {"imgae": {}})


def test_requests_outside_the_profile_are_the_clients_mistake() -> None:
    from inferstack.models.tensorrt.profiles import shape_problem

    profiles = profiles_from_signature([IMAGE], 32)
    assert shape_problem(profiles, "image", (32, 3, 224, 224)) is None
    message = shape_problem(profiles, "image", (64, 3, 224, 224))
    assert message is not None and "64 rows" in message and "maximum of 32" in message
    text = TensorSpec("tokens", "INT64", (-1, -1))
    ranged = profiles_from_signature(
        [text], 8, {"tokens": {"min": [1, 1], "opt": [8, 128], "max": [8, 512]}}
    )
    assert "takes 1 to 512" in (shape_problem(ranged, "tokens", (2, 600)) or "")


def test_the_load_check_runs_the_reference_sample_cut_to_the_profile(tmp_path: Path) -> None:
    profiles = profiles_from_signature([IMAGE, MASK], 4)
    sample = tmp_path / "reference.npz"
    np.savez(sample, image=np.ones((10, 3, 224, 224)), mask=np.arange(160).reshape(10, 16))
    inputs, source = load_check_inputs([IMAGE, MASK], profiles, sample)
    assert source == "reference"
    assert inputs["image"].shape == (4, 3, 224, 224) and inputs["image"].dtype == np.float32
    assert inputs["mask"].dtype == np.int64 and inputs["mask"][3, 0] == 48
    single = tmp_path / "reference.npy"
    np.save(single, np.ones((2, 3, 224, 224), np.float64))
    only, _ = load_check_inputs([IMAGE], profiles, single)
    assert only["image"].shape == (2, 3, 224, 224) and only["image"].dtype == np.float32
    np.savez(tmp_path / "wrong.npz", other=np.ones(3))
    with pytest.raises(ModelLoadError, match="reference sample is unusable"):
        load_check_inputs([IMAGE], profiles, tmp_path / "wrong.npz")


def test_without_a_reference_the_check_uses_seeded_inputs_at_the_opt_shape() -> None:
    profiles = profiles_from_signature([IMAGE, MASK], 8)
    inputs, source = load_check_inputs([IMAGE, MASK], profiles, None)
    assert source == "synthetic"
    assert inputs["image"].shape == (8, 3, 224, 224) and float(np.std(inputs["image"])) > 0.5
    assert not inputs["mask"].any()
    again = synthetic_inputs([IMAGE, MASK], profiles)
    assert np.array_equal(again["image"], inputs["image"])  # seeded: the same every load
