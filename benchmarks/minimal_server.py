"""The comparison server of server_load: the plainest Starlette + ONNX Runtime server.

    python -m benchmarks.minimal_server MODEL_PATH NAME PORT

One route (POST /v2/models/NAME/infer, a KServe v2 JSON body), the `json` module,
`session.run` inline in the async handler, uvicorn with its defaults (uvloop and
httptools when installed, as for `inferstack serve`), one process. Written the way a
user would write it in ten minutes: no validation, no error mapping, no telemetry.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(model_path: str, name: str) -> Starlette:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]

    async def infer(request: Request) -> Response:
        doc = json.loads(await request.body())
        feed = {
            i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"])
            for i in doc["inputs"]
        }
        results = session.run(output_names, feed)
        outputs = [
            {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(output_names, results, strict=True)
        ]
        body = json.dumps({"model_name": name, "id": doc.get("id", ""), "outputs": outputs})
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route(f"/v2/models/{name}/infer", infer, methods=["POST"])])


def main() -> None:
    model_path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = make_app(model_path, name)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
