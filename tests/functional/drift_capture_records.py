"""Data-capture records in SageMaker's documented shape, for the drift tests.

https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html:
one JSON object a line; `data` is the body as a string (JSON, CSV) or base64 (anything else);
key order is not fixed and `data` may end with a newline.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import numpy as np

from inferstack.protocol.codec import tensor_to_bytes

TRITON = "application/vnd.sagemaker-triton.binary+json"


def v2_request(tensors: dict[str, np.ndarray], datatype: str = "FP32") -> str:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "datatype": datatype,
                    "shape": list(a.shape),
                    "data": a.ravel().tolist(),
                }
                for n, a in tensors.items()
            ]
        }
    )


def v2_response(tensors: dict[str, np.ndarray]) -> str:
    return json.dumps(
        {
            "model_name": "wine",
            "id": "1",
            "outputs": [
                {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
                for n, a in tensors.items()
            ],
        }
    )


def binary_request(tensors: dict[str, tuple[str, np.ndarray]]) -> tuple[bytes, int]:
    """A JSON header then raw tensors (the binary extension); returns (body, header length)."""
    entries, chunks = [], []
    for name, (datatype, array) in tensors.items():
        raw = tensor_to_bytes(array, datatype)
        entries.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = json.dumps({"inputs": entries}).encode()
    return header + b"".join(chunks), len(header)


def part(mode: str, data: str | bytes, content_type: str, encoding: str) -> dict[str, Any]:
    text = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


def record(
    time: str,
    endpoint_input: dict[str, Any] | None,
    endpoint_output: dict[str, Any] | None = None,
    *,
    reverse_keys: bool = False,
) -> str:
    capture: dict[str, Any] = {}
    if endpoint_input is not None:
        capture["endpointInput"] = endpoint_input
    if endpoint_output is not None:
        capture["endpointOutput"] = endpoint_output
    doc: dict[str, Any] = {
        "captureData": capture,
        "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": time},
        "eventVersion": "0",
    }
    if reverse_keys:
        doc = dict(reversed(list(doc.items())))
        doc["captureData"] = dict(reversed(list(capture.items())))
    return json.dumps(doc)


def json_record(time: str, rows: np.ndarray, scores: np.ndarray | None = None) -> str:
    """A v2 JSON request (tensor `x`) and, when given, its response (tensor `y`)."""
    output = None
    if scores is not None:
        output = part("OUTPUT", v2_response({"y": scores}) + "\n", "application/json", "JSON")
    return record(
        time, part("INPUT", v2_request({"x": rows}) + "\n", "application/json", "JSON"), output
    )
