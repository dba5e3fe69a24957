"""The codec at its edges: the cases a mutation run showed no test would notice.

Raw binary requests (Inference-Header-Content-Length: 0) for shapes with a zero, a one or
two variable dimensions; BYTES elements cut short; outputs that are not UTF-8. Every client
mistake is a BadRequestError whose message names the input and says what to send instead.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from inferstack.exceptions import BadRequestError
from inferstack.protocol.codec import decode_raw_request, decode_request, encode_response
from inferstack.protocol.types import InferOutput, InferResponse, TensorSpec


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_request(name: str, datatype: str, shape: list[int], tail: bytes) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": name,
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": len(tail)},
            }
        ]
    }
    head = json.dumps(header).encode()
    return head + tail, len(head)


# --------------------------------------------------------------------------- raw requests


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_raw_request_for_an_input_with_a_fixed_zero_dimension(datatype: str) -> None:
    """An empty body is all of an input of shape [0, 3]: its shape is the model's."""
    (tensor,) = decode_raw_request(b"", TensorSpec("x", datatype, (0, 3))).inputs
    assert tensor.shape == (0, 3)
    assert tensor.data.shape == (0, 3)


def test_raw_request_for_a_column_of_values_fills_the_batch_dimension() -> None:
    column = np.arange(5, dtype="<f4")
    (tensor,) = decode_raw_request(column.tobytes(), TensorSpec("x", "FP32", (-1, 1))).inputs
    assert tensor.shape == (5, 1)
    np.testing.assert_array_equal(tensor.data, column.reshape(5, 1))


@pytest.mark.parametrize(
    "shape", [(-1, -1, 2), (-1, 0)], ids=["two-variable-dimensions", "zero-size-rows"]
)
def test_raw_request_that_cannot_give_the_shape_asks_for_a_json_header(
    shape: tuple[int, ...],
) -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_raw_request(np.zeros(4, dtype="<f4").tobytes(), TensorSpec("x", "FP32", shape))
    assert caught.value.message == (
        f"a raw request cannot give input 'x' its shape {list(shape)}; "
        "send a JSON header with the shape"
    )


def test_raw_bytes_request_cut_short_names_the_input() -> None:
    body = bytes_elements(b"abc") + b"\x01\x00"  # a second length prefix, 2 of its 4 bytes
    with pytest.raises(BadRequestError) as caught:
        decode_raw_request(body, TensorSpec("text", "BYTES", (-1,)))
    assert caught.value.message == "text: BYTES element length prefix is cut short"


# --------------------------------------------------------------------------- binary BYTES


def test_binary_bytes_element_cut_short_is_a_bad_request() -> None:
    body, length = binary_request("s", "BYTES", [2], bytes_elements(b"ab") + b"\x05\x00")
    with pytest.raises(BadRequestError) as caught:
        decode_request(body, length)
    assert caught.value.message == "input 's': BYTES element length prefix is cut short"


def test_binary_bytes_element_count_must_match_the_shape() -> None:
    body, length = binary_request("s", "BYTES", [3], bytes_elements(b"ab", b"c"))
    with pytest.raises(BadRequestError) as caught:
        decode_request(body, length)
    assert caught.value.message == "input 's': shape needs 3 BYTES elements; data has 2"


@pytest.mark.parametrize("size", [-1, "8", True, 1.5])
def test_binary_data_size_must_be_a_non_negative_integer(size: object) -> None:
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    head = json.dumps(header).encode()
    with pytest.raises(BadRequestError) as caught:
        decode_request(head + b"\0" * 8, len(head))
    assert caught.value.message == "input 'x': binary_data_size must be a non-negative integer"


def test_a_header_length_that_is_the_whole_body_means_no_binary_data() -> None:
    """Some clients send Inference-Header-Content-Length on every request."""
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
    ).encode()
    (tensor,) = decode_request(body, len(body)).inputs
    assert tensor.data.tolist() == [1.0, 2.0]


def test_binary_data_overrun_says_how_much_is_left_for_that_input() -> None:
    inputs = [
        {"name": n, "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
        for n in ("a", "b")
    ]
    head = json.dumps({"inputs": inputs}).encode()
    with pytest.raises(BadRequestError) as caught:
        decode_request(head + b"\0" * 12, len(head))
    assert caught.value.message == (
        "input 'b': binary_data_size is 8 bytes but only 4 bytes of binary data remain"
    )


def test_binary_data_past_the_last_tensor_is_refused() -> None:
    body, length = binary_request("x", "FP32", [2], b"\0" * 8)
    with pytest.raises(BadRequestError) as caught:
        decode_request(body + b"\0" * 4, length)
    assert caught.value.message == (
        "binary section has 4 bytes after the last tensor; check each input's binary_data_size"
    )


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP32", ["a"], "input 'x': data does not fit datatype FP32 ("),
        ("BYTES", [1], "input 'x' is BYTES but its data holds a non-string"),
        ("INT64", [1.5], "input 'x' is INT64 but its data holds non-integers"),
    ],
)
def test_json_data_that_does_not_fit_names_the_input(
    datatype: str, data: list[object], message: str
) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": data}]}
    with pytest.raises(BadRequestError) as caught:
        decode_request(json.dumps(doc).encode())
    assert caught.value.message.startswith(message)


def test_an_empty_binary_tensor_has_binary_data_size_zero() -> None:
    body, length = binary_request("x", "FP32", [0, 2], b"")
    (tensor,) = decode_request(body, length).inputs
    assert tensor.data.shape == (0, 2)


# --------------------------------------------------------------------------- JSON data


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("INT64", [2**62 + 1, -(2**63)]), ("UINT64", [2**64 - 1, 2**53 + 1])],
)
def test_large_integers_from_json_reach_the_model_exactly(datatype: str, values: list[int]) -> None:
    """No detour through float64, which holds integers exactly only up to 2**53."""
    doc = {"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": values}]}
    (tensor,) = decode_request(json.dumps(doc).encode()).inputs
    assert tensor.data.dtype == np.dtype(datatype.lower())
    assert tensor.data.tolist() == values


@pytest.mark.parametrize("datatype", ["INT64", "UINT8", "BOOL"])
def test_an_empty_batch_keeps_its_datatype(datatype: str) -> None:
    """ONNX Runtime refuses a tensor of the wrong element type, even an empty one."""
    doc = {"inputs": [{"name": "x", "shape": [0, 2], "datatype": datatype, "data": []}]}
    (tensor,) = decode_request(json.dumps(doc).encode()).inputs
    assert tensor.data.shape == (0, 2)
    assert tensor.data.dtype == np.dtype(datatype.lower().replace("bool", "bool_"))


X = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([X], "request body must be a JSON object"),
        ({"inputs": X}, "request needs a non-empty 'inputs' list"),
        ({"inputs": [X], "id": 7}, "'id' must be a string"),
        ({"inputs": [X], "parameters": []}, "request: 'parameters' must be an object"),
        (
            {"inputs": [X], "parameters": {"binary_data_output": 1}},
            "parameter 'binary_data_output' must be a boolean",
        ),
    ],
    ids=["array", "inputs-not-a-list", "id", "parameters", "binary-output"],
)
def test_malformed_requests_say_what_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(json.dumps(doc).encode())
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"name": "", "shape": [1], "datatype": "FP32", "data": [1]},
            "inputs[0] needs a non-empty string 'name'",
        ),
        (
            {"name": 5, "shape": [1], "datatype": "FP32", "data": [1]},
            "inputs[0] needs a non-empty string 'name'",
        ),
        (
            {"name": "x", "shape": [1], "datatype": "FP33", "data": [1]},
            "input 'x' has datatype 'FP33'; expected one of BF16, BOOL, BYTES, FP16, FP32, FP64, "
            "INT16, INT32, INT64, INT8, UINT16, UINT32, UINT64, UINT8",
        ),
        (
            {"name": "x", "shape": "2", "datatype": "FP32", "data": [1, 2]},
            "input 'x' needs 'shape' as a list of non-negative integers",
        ),
        (
            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": 5},
            "input 'x': 'parameters' must be an object",
        ),
    ],
    ids=["empty-name", "number-name", "unknown-datatype", "shape", "parameters"],
)
def test_malformed_inputs_are_named_in_the_error(item: object, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(json.dumps({"inputs": [item]}).encode())
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"name": "y"}, "'outputs' must be a list"),
        ([3], "outputs[0] needs a string 'name'"),
        ([{"name": "y"}, {"name": 7}], "outputs[1] needs a string 'name'"),
        ([{"name": "y", "parameters": 5}], "output 'y': 'parameters' must be an object"),
        (
            [{"name": "y", "parameters": {"binary_data": "yes"}}],
            "output 'y': binary_data must be a boolean",
        ),
        (
            [{"name": "y", "parameters": {"classification": 2}}],
            "the classification extension is not supported",
        ),
    ],
    ids=["not-a-list", "not-an-object", "name-not-a-string", "parameters", "binary", "class"],
)
def test_malformed_requested_outputs_are_named_in_the_error(outputs: object, message: str) -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
        "outputs": outputs,
    }
    with pytest.raises(BadRequestError) as caught:
        decode_request(json.dumps(doc).encode())
    assert caught.value.message == message


# --------------------------------------------------------------------------- encoding


def test_bytes_outputs_that_are_not_utf8_are_sent_with_replacement_characters() -> None:
    """JSON carries text: bytes that are not UTF-8 are answered, marked, not a failure."""
    data = np.array([b"ok", b"caf\xe9"], dtype=object)
    body, header_length = encode_response(
        InferResponse("m", None, "r", [InferOutput("y", "BYTES", data)])
    )
    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == ["ok", "caf\ufffd"]


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
@pytest.mark.parametrize("data", [[1.0, None], [None], [[None, 2.0], [3.0, 4.0]]])
def test_null_in_float_data_is_refused_not_read_as_nan(datatype: str, data: list) -> None:
    """JSON null is not a number: numpy would make it NaN and the model would run on it."""
    shape = list(np.array(data).shape)
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()
    with pytest.raises(BadRequestError, match="input 'x': data must hold numbers only, not null"):
        decode_request(body)


def test_nan_sent_by_a_python_client_still_reaches_the_model() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [NaN, 1.0]}]}'
    (tensor,) = decode_request(body).inputs
    assert np.isnan(tensor.data[0]) and tensor.data[1] == 1.0
