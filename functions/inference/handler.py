"""Lambda inference function (container image): one ONNX model behind the protocol.

Configured by INFERSTACK_MODEL_NAME and INFERSTACK_MODEL_URI (a path in the image or
s3://bucket/key?versionId=v). The model loads here, at module scope, during Lambda's
init phase, once per execution environment.
"""

from inferstack.bootstrap import lambda_entry_from_env

handler = lambda_entry_from_env()
