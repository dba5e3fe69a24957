"""The v1 convenience format for single-input models.

`{"instances": [row, ...]}` -> `{"predictions": [...]}`: each instance is one row of
the model's only input (the batch dimension is added). With one output, each
prediction is that output's row; with several, a `{output_name: row}` object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from inferstack.exceptions import BadRequestError
from inferstack.protocol.codec import array_from_json, json_data, parse_json
from inferstack.protocol.datatypes import BF16, BYTES, bf16_to_float
from inferstack.protocol.types import InferInput, InferRequest

if TYPE_CHECKING:
    from inferstack.models.base import Model, Tensors


def decode_predict(body: bytes, model: Model) -> InferRequest:
    if len(model.inputs) != 1:
        raise BadRequestError(
            f"v1 predict serves single-input models; '{model.name}' has "
            f"{len(model.inputs)} inputs: use /v2/models/{model.name}/infer"
        )
    doc = parse_json(body)
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequestError('v1 predict needs {"instances": [...]} with at least one instance')
    spec = model.inputs[0]
    array = array_from_json(instances, spec.datatype, f"input '{spec.name}'")
    if spec.datatype == BYTES:
        # Strings arrive flattened; rows keep the instances' count.
        array = array.reshape(len(instances), -1) if len(spec.shape) > 1 else array
    return InferRequest(inputs=[InferInput(spec.name, spec.datatype, array.shape, array)])


def encode_predictions(outputs: Tensors, model: Model) -> dict[str, Any]:
    columns = {
        name: _rows(array, model.output_spec(name).datatype) for name, array in outputs.items()
    }
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    return {"predictions": [dict(zip(names, row, strict=True)) for row in rows]}


def _rows(array: np.ndarray, datatype: str) -> list[Any]:
    if datatype == BYTES:
        array = np.asarray(json_data(array, BYTES), dtype=object).reshape(array.shape)
    elif datatype == BF16:
        array = bf16_to_float(array)
    rows: list[Any] = array.tolist()
    return rows
