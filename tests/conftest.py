"""Fixtures shared by every test folder: the demo model and direct ONNX Runtime runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inferstack.demo import demo_model_path

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wine_path() -> Path:
    return demo_model_path()


@pytest.fixture(scope="session")
def wine_session(wine_path: Path) -> ort.InferenceSession:
    """The demo model in a plain ONNX Runtime session: the reference for served outputs."""
    return ort.InferenceSession(str(wine_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def wine_rows() -> np.ndarray:
    request = json.loads((demo_model_path().parent / "example_request.json").read_text())
    return np.asarray(request["inputs"][0]["data"], dtype=np.float32)
