"""The bundled demo model (wine classifier) and the script that builds it."""

from pathlib import Path

__all__ = ["DEMO_MODEL_NAME", "demo_dir", "demo_model_path", "reference_sample_path"]

DEMO_MODEL_NAME = "wine"


def demo_dir() -> Path:
    """The folder holding the demo artifacts (this package's folder)."""
    return Path(__file__).resolve().parent


def demo_model_path() -> Path:
    """Path of the bundled ONNX model, ``wine.onnx``."""
    return demo_dir() / f"{DEMO_MODEL_NAME}.onnx"


def reference_sample_path() -> Path:
    """Path of the training-split features (float32 [n, 13]) used by the drift check."""
    return demo_dir() / "reference_sample.npy"
