"""The protocol codec against tritonclient's own encoder and decoder (a real peer)."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton

from inferstack.exceptions import BadRequestError
from inferstack.protocol.codec import decode_raw_request, decode_request, encode_response
from inferstack.protocol.datatypes import bf16_to_float, float_to_bf16
from inferstack.protocol.types import InferOutput, InferResponse, TensorSpec

RNG = np.random.default_rng(7)
NaN, INF = float("nan"), float("inf")


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """A client-side array for each protocol datatype, with awkward values."""
    count = int(np.prod(shape))
    if datatype == "BOOL":
        return RNG.integers(0, 2, size=shape).astype(bool)
    if datatype == "BYTES":
        values = [b"", b"caf\xc3\xa9", b"x" * 300, b"tab\tnl\n", b"0", b"last"]
        return np.array((values * count)[:count], dtype=object).reshape(shape)
    if datatype == "BF16":
        return np.array(RNG.normal(size=shape), dtype=ml_dtypes.bfloat16)
    dtype = np.dtype(triton.triton_to_np_dtype(datatype))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        edges = np.array([info.min, info.max, 0, 1], dtype=dtype)
        values = np.concatenate([edges, RNG.integers(0, 100, size=count, dtype=dtype)])
        return values[:count].reshape(shape)
    values = RNG.normal(size=count).astype(dtype)
    values[0] = np.finfo(dtype).max
    return values.reshape(shape)


DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
]


def served_view(datatype: str, array: np.ndarray) -> np.ndarray:
    """How the runtime holds a client's array (BF16 as its raw 16-bit patterns)."""
    return array.view(np.uint16) if datatype == "BF16" else array


def client_body(arrays: dict[str, tuple[str, np.ndarray]], *, binary: bool) -> tuple[bytes, int]:
    inputs = []
    for name, (datatype, array) in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, request_id="req-1"
    )
    return body, header_length


# tritonclient sends BF16 only as binary; JSON BF16 has its own test below.
REQUEST_CASES = [(t, b) for t in DATATYPES for b in (False, True) if (t, b) != ("BF16", False)]


@pytest.mark.parametrize(("datatype", "binary"), REQUEST_CASES)
def test_request_round_trip_for_every_datatype(datatype: str, binary: bool) -> None:
    array = sample(datatype)
    body, header_length = client_body({"x": (datatype, array)}, binary=binary)

    request = decode_request(body, header_length if binary else None)

    (decoded,) = request.inputs
    assert (decoded.name, decoded.datatype, decoded.shape) == ("x", datatype, (2, 3))
    np.testing.assert_array_equal(decoded.data, served_view(datatype, array))
    assert request.id == "req-1"


def test_bf16_from_json_rounds_to_nearest_even() -> None:
    values = [1.0, -2.5, 3.14159, 1e-3]
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [4], "datatype": "BF16", "data": values}]}
    ).encode()
    (tensor,) = decode_request(body).inputs
    expected = np.array(values, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(tensor.data, expected)
    np.testing.assert_allclose(bf16_to_float(tensor.data), values, rtol=1e-2)
    assert float_to_bf16(np.array([np.nan], dtype=np.float32))[0] == 0x7FC0


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_response_round_trip_for_every_datatype(datatype: str, binary: bool) -> None:
    array = sample(datatype, (3, 2))
    response = InferResponse(
        "m", "7", "req-9", [InferOutput("y", datatype, served_view(datatype, array), binary)]
    )
    body, header_length = encode_response(response)

    assert (header_length is not None) == binary
    result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)
    got = result.as_numpy("y")
    meta = result.get_response()
    assert (meta["model_name"], meta["model_version"], meta["id"]) == ("m", "7", "req-9")
    if datatype == "BF16" and not binary:
        # JSON carries BF16 as the float values it stands for.
        np.testing.assert_array_equal(got, array.astype(np.float32))
    elif datatype == "BYTES" and not binary:
        expected = np.array([v.decode() for v in array.ravel()], dtype=object).reshape(3, 2)
        np.testing.assert_array_equal(got.astype(str), expected.astype(str))
    else:
        np.testing.assert_array_equal(got, array)
        assert got.shape == (3, 2)


def test_nested_and_flat_json_data_decode_alike() -> None:
    nested = {"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}
    flat = dict(nested, data=[1, 2, 3, 4])
    a = decode_request(json.dumps({"inputs": [nested]}).encode()).inputs[0].data
    b = decode_request(json.dumps({"inputs": [flat]}).encode()).inputs[0].data
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int32 and a.shape == (2, 2)


def test_nan_and_infinity_from_python_clients_reach_the_model() -> None:
    # json.dumps (and so tritonclient) writes NaN/Infinity; strict JSON has no such tokens.
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, NaN, INF]}]}
    ).encode()
    (tensor,) = decode_request(body).inputs
    assert tensor.data[0] == 1.0 and np.isnan(tensor.data[1]) and np.isinf(tensor.data[2])


def test_requested_outputs_and_binary_flags_are_parsed() -> None:
    body = json.dumps(
        {
            "id": "abc",
            "parameters": {"binary_data_output": True, "custom": 3},
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "outputs": [
                {"name": "a", "parameters": {"binary_data": False}},
                {"name": "b"},
            ],
        }
    ).encode()
    request = decode_request(body)
    assert request.id == "abc"
    assert request.binary_output is True
    assert request.parameters["custom"] == 3
    assert [(o.name, o.binary) for o in request.outputs or []] == [("a", False), ("b", None)]


def test_several_binary_inputs_are_sliced_in_json_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[b"one"], [b"two"]], dtype=object)
    c = np.array([7, 8], dtype=np.int64)
    body, header_length = client_body(
        {"a": ("FP32", a), "b": ("BYTES", b), "c": ("INT64", c)}, binary=True
    )
    request = decode_request(body, header_length)
    got = {t.name: t.data for t in request.inputs}
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    np.testing.assert_array_equal(got["c"], c)


def test_raw_binary_request_fills_the_variable_dimension() -> None:
    rows = np.arange(26, dtype=np.float32).reshape(2, 13)
    request = decode_raw_request(rows.tobytes(), TensorSpec("features", "FP32", (-1, 13)))
    (tensor,) = request.inputs
    assert tensor.shape == (2, 13)
    np.testing.assert_array_equal(tensor.data, rows)


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b"{}", None, "non-empty 'inputs'"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (b'{"inputs": [3]}', None, "inputs[0] must be an object"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', None, "'name'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP33", "data": [1]}]}',
            None,
            "datatype 'FP33'",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            None,
            "non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [true], "datatype": "FP32", "data": [1]}]}',
            None,
            "non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}',
            None,
            "needs 4 elements; data has 3",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",'
            b' "data": [[1, 2], [3]]}]}',
            None,
            "does not fit datatype FP32",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}',
            None,
            "does not fit datatype FP32",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1.5]}]}',
            None,
            "non-integers",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [300]}]}',
            None,
            "out of range for UINT8",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}',
            None,
            "non-booleans",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}',
            None,
            "non-string",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither"),
        (
            b'{"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            None,
            "'id' must be a string",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": {"name": "y"}}',
            None,
            "'outputs' must be a list",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "y"}, {"name": "y"}]}',
            None,
            "requested twice",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": {"classification": 2}}]}',
            None,
            "classification",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": {"binary_data_output": "yes"}}',
            None,
            "must be a boolean",
        ),
        (b'{"inputs": []}', 999, "Inference-Header-Content-Length is 999"),
    ],
)
def test_malformed_requests_are_bad_requests(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(body, header_length)
    assert message in caught.value.message


def binary_request(header: dict[str, object], tail: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + tail, len(head)


@pytest.mark.parametrize(
    ("size", "tail", "message"),
    [
        (8, b"\x00" * 4, "only 4 bytes of binary data remain"),
        (4, b"\x00" * 4, "shape [2] of FP32 needs 8"),
        (8, b"\x00" * 12, "4 bytes after the last tensor"),
    ],
)
def test_binary_sizes_must_match_the_shape(size: int, tail: bytes, message: str) -> None:
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
    with pytest.raises(BadRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_request(*binary_request(header, tail))


def test_binary_bytes_element_running_past_the_data_is_refused() -> None:
    tail = struct.pack("<I", 50) + b"short"
    header = {
        "inputs": [
            {
                "name": "s",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(tail)},
            }
        ]
    }
    with pytest.raises(BadRequestError, match="runs past the data"):
        decode_request(*binary_request(header, tail))


def test_data_and_binary_size_together_are_refused() -> None:
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "data": [1.0],
                "parameters": {"binary_data_size": 4},
            }
        ]
    }
    with pytest.raises(BadRequestError, match="both 'data' and binary_data_size"):
        decode_request(*binary_request(header, b"\x00" * 4))


def test_raw_request_with_the_wrong_byte_count_is_refused() -> None:
    spec = TensorSpec("features", "FP32", (-1, 13))
    with pytest.raises(BadRequestError, match="whole number of FP32"):
        decode_raw_request(b"\x00" * 7, spec)
    with pytest.raises(BadRequestError, match="cannot give input"):
        decode_raw_request(b"\x00" * 4 * 14, spec)


# --------------------------------------------------------------------------- scalars (shape [])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_scalar_outputs_keep_shape_empty(datatype: str, binary: bool) -> None:
    array = sample(datatype, (1,)).reshape(())
    response = InferResponse(
        "m", None, "r", [InferOutput("y", datatype, served_view(datatype, array), binary)]
    )
    body, header_length = encode_response(response)

    header = json.loads(body[:header_length] if binary else body)
    assert header["outputs"][0]["shape"] == []
    got = triton.InferenceServerClient.parse_response_body(
        body, header_length=header_length
    ).as_numpy("y")
    assert got.shape == ()


REQUEST_SCALARS = [(t, b) for t in DATATYPES for b in (False, True) if (t, b) != ("BF16", False)]


@pytest.mark.parametrize(("datatype", "binary"), REQUEST_SCALARS)
def test_scalar_inputs_decode_with_shape_empty(datatype: str, binary: bool) -> None:
    array = sample(datatype, (1,)).reshape(())
    body, header_length = client_body({"x": (datatype, array)}, binary=binary)

    (tensor,) = decode_request(body, header_length if binary else None).inputs

    assert tensor.shape == () and tensor.data.shape == ()
    np.testing.assert_array_equal(tensor.data, served_view(datatype, array))


def test_scalar_bf16_from_json_stays_a_scalar() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [], "datatype": "BF16", "data": 1.5}]}'
    (tensor,) = decode_request(body).inputs
    assert tensor.data.shape == ()
    assert bf16_to_float(tensor.data).shape == ()
    assert float(bf16_to_float(tensor.data)) == 1.5


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        (TensorSpec("x", "FP32", ()), np.array(2.5, dtype="<f4").tobytes()),
        (TensorSpec("x", "BYTES", ()), struct.pack("<I", 3) + b"abc"),
    ],
    ids=["FP32", "BYTES"],
)
def test_raw_request_for_a_scalar_input(spec: TensorSpec, body: bytes) -> None:
    (tensor,) = decode_raw_request(body, spec).inputs
    assert tensor.shape == () and tensor.data.shape == ()


def test_raw_request_for_a_scalar_input_refuses_two_values() -> None:
    with pytest.raises(BadRequestError, match="needs 1"):
        decode_raw_request(np.zeros(2, dtype="<f4").tobytes(), TensorSpec("x", "FP32", ()))


# --------------------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("depth", [1025, 3000, 100_000])
def test_json_nested_past_the_parser_limit_is_a_bad_request(depth: int) -> None:
    # orjson stops at 1024 levels; the standard library's fallback would overflow the stack.
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(BadRequestError, match="not valid JSON: depth limit exceeded"):
        decode_request(body)


@pytest.mark.parametrize("datatype", ["BYTES", "FP32", "INT64", "BOOL"])
def test_deeply_nested_tensor_data_is_a_bad_request(datatype: str) -> None:
    # 1000 levels parse (orjson allows 1024) but no tensor has that many dimensions.
    value = '"a"' if datatype == "BYTES" else "1"
    data = "[" * 1000 + value + "]" * 1000
    body = (
        f'{{"inputs": [{{"name": "x", "shape": [2], "datatype": "{datatype}", "data": {data}}}]}}'
    )
    with pytest.raises(BadRequestError):
        decode_request(body.encode())
