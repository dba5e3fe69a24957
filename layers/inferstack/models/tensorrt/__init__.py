"""The TensorRT backend: engines built from the release's ONNX file, cached in S3.

Only `engine.py` and `cuda.py` import NVIDIA's libraries, and only when a model loads; the
other modules (profiles, the engine cache, the GPU probe) are plain code tested on the CPU.
"""
