"""InferStack runtime: the Open Inference Protocol over ONNX Runtime, for Lambda and servers.

Heavy modules (FastAPI, boto3) are imported lazily by the parts that need them so
the Lambda cold-start path costs little more than numpy + onnxruntime.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
