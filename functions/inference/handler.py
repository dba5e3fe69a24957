"""Lambda inference function (container image): one ONNX model behind the protocol.

Configured by the environment, read into inferstack.settings.Settings like every host:
INFERSTACK_MODEL_NAME and INFERSTACK_MODEL_URI (a path in the image or
s3://bucket/key?versionId=v) and the optional settings. A malformed setting stops the
init with a ConfigurationError that names the variable. The model loads here, at module
scope, during Lambda's init phase, once per execution environment. Under SnapStart that init
runs once per published version, before the snapshot; the runtime's hooks (inferstack.snapstart,
run by the base image's runtime client) refresh each restored environment.
"""

# numpy and onnxruntime first, on purpose: reached later through the runtime's import
# chain, numpy's own import measured ~30 ms slower (numpy._typing), a fifth of a cold
# start (benchmarks/RESULTS.md, cold_start).
import numpy  # noqa: F401
import onnxruntime  # noqa: F401

from inferstack.bootstrap import lambda_entry_from_env

handler = lambda_entry_from_env()
