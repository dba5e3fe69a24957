"""The v1 convenience format for single-input models.

`{"instances": [row, ...]}` -> `{"predictions": [...]}`: each instance is one row of
the model's only input (the batch dimension is added). With one output, each
prediction is that output's row; with several, a `{output_name: row}` object.

A model whose input is a scalar (shape []) has no batch dimension to add: it takes
exactly one instance, the scalar, and its one prediction is the whole output.
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
    what = f"input '{spec.name}'"
    if not spec.shape:
        return InferRequest(inputs=[_scalar_input(instances, spec.name, spec.datatype)])
    array = array_from_json(instances, spec.datatype, what)
    if spec.datatype == BYTES:
        # Strings arrive flattened; rows keep the instances' count.
        array = array.reshape(len(instances), -1) if len(spec.shape) > 1 else array
    return InferRequest(inputs=[InferInput(spec.name, spec.datatype, array.shape, array)])


def _scalar_input(instances: list[Any], name: str, datatype: str) -> InferInput:
    what = f"input '{name}'"
    if len(instances) != 1:
        raise BadRequestError(
            f"{what} is a scalar (shape []), so v1 predict takes one instance per request; "
            f"got {len(instances)}"
        )
    array = array_from_json(instances[0], datatype, what)
    if array.size != 1:
        raise BadRequestError(f"{what} is a scalar (shape []): the instance must be one value")
    return InferInput(name, datatype, (), array.reshape(()))


def encode_predictions(outputs: Tensors, model: Model) -> dict[str, Any]:
    columns = {
        name: _plain(array, model.output_spec(name).datatype) for name, array in outputs.items()
    }
    if not model.inputs[0].shape:
        # One scalar instance: its prediction is every output whole.
        values = [column.tolist() for column in columns.values()]
        if len(values) == 1:
            return {"predictions": values}
        return {"predictions": [dict(zip(columns, values, strict=True))]}
    rows = {name: _rows(name, column, model) for name, column in columns.items()}
    if len(rows) == 1:
        return {"predictions": next(iter(rows.values()))}
    counts = {name: len(column) for name, column in rows.items()}
    if len(set(counts.values())) > 1:
        raise BadRequestError(
            f"v1 predict needs one row per instance in every output; model '{model.name}' "
            f"returned {counts} rows: use /v2/models/{model.name}/infer"
        )
    names = list(rows)
    return {
        "predictions": [
            dict(zip(names, row, strict=True)) for row in zip(*rows.values(), strict=True)
        ]
    }


def _plain(array: np.ndarray, datatype: str) -> np.ndarray:
    """An output whose tolist() gives JSON values (text for BYTES, floats for BF16)."""
    if datatype == BYTES:
        return np.asarray(json_data(array, BYTES), dtype=object).reshape(array.shape)
    if datatype == BF16:
        return bf16_to_float(array)
    return array


def _rows(name: str, array: np.ndarray, model: Model) -> list[Any]:
    if array.ndim == 0:
        raise BadRequestError(
            f"output '{name}' of model '{model.name}' is a scalar (shape []), not one row per "
            f"instance: use /v2/models/{model.name}/infer"
        )
    rows: list[Any] = array.tolist()
    return rows
