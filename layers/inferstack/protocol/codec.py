"""Open Inference Protocol (KServe v2) REST codec, JSON and binary tensor data.

Binary layout (Triton's binary_tensor_data extension): the JSON header, then each
tensor's raw little-endian bytes in JSON order; `Inference-Header-Content-Length`
says where the header ends. BYTES elements are a uint32 length then the bytes.

Every malformed request raises BadRequestError with a message that names the input.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import numpy as np
import orjson

from inferstack.exceptions import BadRequestError
from inferstack.protocol.datatypes import (
    BF16,
    BYTES,
    DATATYPES,
    NUMPY_DTYPES,
    WIRE_DTYPES,
    bf16_to_float,
    float_to_bf16,
)
from inferstack.protocol.types import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
    TensorSpec,
)

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")
_INT_KINDS = "iu"
_END = object()


# --------------------------------------------------------------------------- decode


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Decode an infer request; `header_length` is the Inference-Header-Content-Length value."""
    binary: memoryview | bytes
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    doc = parse_json(header)
    if not isinstance(doc, dict):
        raise BadRequestError("request body must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("request needs a non-empty 'inputs' list")

    offset = 0
    decoded: list[InferInput] = []
    for index, item in enumerate(inputs):
        tensor, offset = _decode_input(item, index, binary, offset)
        decoded.append(tensor)
    if offset != len(binary):
        raise BadRequestError(
            f"binary section has {len(binary) - offset} bytes after the last tensor; "
            "check each input's binary_data_size"
        )

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError("'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequestError("parameter 'binary_data_output' must be a boolean")
    return InferRequest(
        inputs=decoded,
        id=request_id,
        parameters=parameters,
        outputs=_decode_outputs(doc.get("outputs")),
        binary_output=binary_output,
    )


def decode_raw_request(body: bytes, spec: TensorSpec) -> InferRequest:
    """A binary request with no JSON header (Inference-Header-Content-Length: 0).

    The whole body is the model's single input; its shape is the model's, with at most
    one variable dimension worked out from the body size.
    """
    if spec.datatype == BYTES:
        array = _bytes_elements(memoryview(body), None, spec.name)
        fixed = math.prod(d for d in spec.shape if d >= 0)
        shape = _fill_variable_dim(spec, array.size, fixed)
    else:
        itemsize = WIRE_DTYPES[spec.datatype].itemsize
        if len(body) % itemsize:
            raise BadRequestError(
                f"raw body of {len(body)} bytes is not a whole number of "
                f"{spec.datatype} elements for input '{spec.name}'"
            )
        fixed = math.prod(d for d in spec.shape if d >= 0)
        shape = _fill_variable_dim(spec, len(body) // itemsize, fixed)
        array = _numeric_from_bytes(memoryview(body), spec.datatype)
    return InferRequest(
        inputs=[InferInput(spec.name, spec.datatype, shape, array.reshape(shape))],
        binary_output=True,
    )


def parse_json(raw: bytes | memoryview) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    # Python clients (tritonclient among them) write NaN and Infinity, which strict JSON
    # and orjson refuse; the standard library reads them, and whether NaN is a valid
    # input is the model's business. Only failed parses pay for this second try.
    try:
        return json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting past orjson's depth limit (1024) also exhausts the
        # standard library's parser; orjson's message says so ("depth limit exceeded").
        raise BadRequestError(f"request body is not valid JSON: {error}") from None


def array_from_json(data: Any, datatype: str, what: str) -> np.ndarray:
    """Numbers, booleans or strings from JSON (nested or flat) -> a numpy array."""
    try:
        if datatype == BYTES:
            return _strings_to_bytes(data, what)
        if datatype == BF16:
            return float_to_bf16(_floats(data, np.dtype(np.float32), what))
        target = NUMPY_DTYPES[datatype]
        if target.kind == "f":
            return _floats(data, target, what)
        return _exact_array(data, datatype, target, what)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequestError(f"{what}: data does not fit datatype {datatype} ({exc})") from None


def _floats(data: Any, target: np.dtype, what: str) -> np.ndarray:
    """JSON numbers as floats. numpy reads null as NaN: a NaN sends the data through a
    second, slower parse that tells a null (refused) from a NaN the client sent."""
    array = np.array(data, dtype=target)
    if np.isnan(array).any() and np.array(data).dtype.kind not in "biuf":
        raise BadRequestError(f"{what}: data must hold numbers only, not null")
    return array


def _exact_array(data: Any, datatype: str, target: np.dtype, what: str) -> np.ndarray:
    """Integers and booleans: parse first, so 1.5 is refused instead of truncated."""
    array = np.array(data)
    if array.size == 0:
        return array.astype(target)
    if target.kind == "b":
        if array.dtype.kind != "b":
            raise BadRequestError(f"{what} is BOOL but its data holds non-booleans")
        return array
    if array.dtype.kind not in _INT_KINDS:
        # numpy widens [0, 2**64 - 1] to float64: check integrality, then convert
        # from the Python ints themselves, which is exact and range-checked.
        if array.dtype.kind != "f" or not np.array_equal(array, np.floor(array)):
            raise BadRequestError(f"{what} is {datatype} but its data holds non-integers")
        return np.array(data, dtype=target)
    info = np.iinfo(target)
    if array.min() < info.min or array.max() > info.max:
        raise BadRequestError(f"{what} has values out of range for {datatype}")
    return array.astype(target)


def _decode_input(  # noqa: PLR0912 - one branch per protocol rule, in spec order
    item: Any, index: int, binary: memoryview | bytes, offset: int
) -> tuple[InferInput, int]:
    if not isinstance(item, dict):
        raise BadRequestError(f"inputs[{index}] must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"inputs[{index}] needs a non-empty string 'name'")
    what = f"input '{name}'"
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequestError(
            f"{what} has datatype {datatype!r}; expected one of {', '.join(sorted(DATATYPES))}"
        )
    shape = _shape(item.get("shape"), what)
    count = math.prod(shape)
    parameters = _parameters(item.get("parameters"), what)

    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise BadRequestError(f"{what} has both 'data' and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequestError(f"{what}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise BadRequestError(
                f"{what}: binary_data_size is {size} bytes but only "
                f"{len(binary) - offset} bytes of binary data remain"
            )
        chunk = binary[offset : offset + size]
        offset += size
        if datatype == BYTES:
            array = _bytes_elements(memoryview(chunk), count, what)
        else:
            expected = count * WIRE_DTYPES[datatype].itemsize
            if size != expected:
                raise BadRequestError(
                    f"{what}: binary_data_size is {size} bytes; shape {list(shape)} of "
                    f"{datatype} needs {expected}"
                )
            array = _numeric_from_bytes(chunk, datatype)
    else:
        if "data" not in item:
            raise BadRequestError(f"{what} has neither 'data' nor binary_data_size")
        array = array_from_json(item["data"], datatype, what)
        if array.size != count:
            raise BadRequestError(
                f"{what}: shape {list(shape)} needs {count} elements; data has {array.size}"
            )
    return InferInput(name, datatype, shape, array.reshape(shape), parameters), offset


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequestError("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequestError(f"outputs[{index}] needs a string 'name'")
        name = item["name"]
        if name in seen:
            raise BadRequestError(f"output '{name}' is requested twice")
        seen.add(name)
        parameters = _parameters(item.get("parameters"), f"output '{name}'")
        if "classification" in parameters:
            raise BadRequestError("the classification extension is not supported")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequestError(f"output '{name}': binary_data must be a boolean")
        outputs.append(RequestedOutput(name, binary))
    return outputs


def _shape(raw: Any, what: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise BadRequestError(f"{what} needs 'shape' as a list of non-negative integers")
    return tuple(raw)


def _parameters(raw: Any, what: str) -> Parameters:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequestError(f"{what}: 'parameters' must be an object")
    return raw


def _numeric_from_bytes(chunk: memoryview | bytes, datatype: str) -> np.ndarray:
    wire = WIRE_DTYPES[datatype]
    array = np.frombuffer(chunk, dtype=wire)
    return array if wire.isnative else array.astype(wire.newbyteorder("="))


def _bytes_elements(chunk: memoryview, count: int | None, what: str) -> np.ndarray:
    """Parse length-prefixed BYTES elements; `count` None means "as many as there are"."""
    items: list[bytes] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise BadRequestError(f"{what}: BYTES element length prefix is cut short")
        (length,) = _LENGTH.unpack_from(chunk, pos)
        pos += 4
        if pos + length > end:
            raise BadRequestError(f"{what}: BYTES element of {length} bytes runs past the data")
        items.append(bytes(chunk[pos : pos + length]))
        pos += length
    if count is not None and len(items) != count:
        raise BadRequestError(f"{what}: shape needs {count} BYTES elements; data has {len(items)}")
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _strings_to_bytes(data: Any, what: str) -> np.ndarray:
    # Walked with a stack, not recursion: JSON may nest up to 1024 levels.
    flat: list[bytes] = []
    pending = [iter([data])]
    while pending:
        node = next(pending[-1], _END)
        if node is _END:
            pending.pop()
        elif isinstance(node, list):
            pending.append(iter(node))
        elif isinstance(node, str):
            flat.append(node.encode("utf-8"))
        else:
            raise BadRequestError(f"{what} is BYTES but its data holds a non-string")
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _fill_variable_dim(spec: TensorSpec, elements: int, fixed: int) -> tuple[int, ...]:
    variable = [i for i, d in enumerate(spec.shape) if d < 0]
    if not variable:
        if elements != fixed:
            raise BadRequestError(
                f"raw body holds {elements} elements; input '{spec.name}' "
                f"of shape {list(spec.shape)} needs {fixed}"
            )
        return spec.shape
    if len(variable) > 1 or fixed == 0 or elements % fixed:
        raise BadRequestError(
            f"a raw request cannot give input '{spec.name}' its shape {list(spec.shape)}; "
            "send a JSON header with the shape"
        )
    shape = list(spec.shape)
    shape[variable[0]] = elements // fixed
    return tuple(shape)


# --------------------------------------------------------------------------- encode


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """Serialize a response; returns (body, JSON header length if any output is binary)."""
    header_outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        # Not np.ascontiguousarray: it turns a 0-d tensor (shape []) into shape [1].
        array = np.asarray(output.data)
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(array.shape),
        }
        if output.binary:
            raw = tensor_to_bytes(array, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_data(array, output.datatype)
        header_outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "id": response.id if response.id is not None else os.urandom(16).hex(),
        "outputs": header_outputs,
    }
    if response.model_version is not None:
        doc["model_version"] = response.model_version
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def json_data(array: np.ndarray, datatype: str) -> Any:
    """A tensor as a flat JSON-ready value (numpy arrays are serialized by orjson)."""
    flat = array.reshape(-1)
    if datatype == BYTES:
        return [_text(v) for v in flat]
    if datatype == BF16:
        return bf16_to_float(flat)
    return flat


def tensor_to_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == BYTES:
        parts: list[bytes] = []
        for value in array.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return array.astype(WIRE_DTYPES[datatype], copy=False).tobytes()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
