"""Codec: decode a 1x3x224x224 FP32 request, encode the 1x1000 FP32 response.

inferstack.protocol.codec (decode_request + encode_response), binary and JSON.
JSON baseline: `json.loads` + `np.asarray(..., dtype=float32)` for the request and
`json.dumps` of `.tolist()` for the response. Candidate and baseline alternate in
blocks; each round-trip (decode + encode) is timed as one call.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import orjson

from benchmarks.common import SEED, Config, binary_request_body, json_request_body, summary

NAME = "codec"
TARGET = "binary decode+encode p50 <= 1 ms; JSON decode+encode >= 3x faster than the baseline"
BINARY_LIMIT_MS = 1.0
JSON_SPEEDUP = 3.0
INPUT = "data_0"
OUTPUT = "softmaxout_1"


def run(config: Config) -> dict[str, Any]:
    from inferstack.protocol import codec
    from inferstack.protocol.types import InferOutput, InferResponse

    rng = np.random.default_rng(SEED)
    image = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
    scores = rng.random((1, 1000), dtype=np.float32)
    scores /= scores.sum()

    binary_body, header_length = binary_request_body(INPUT, image)
    json_body = json_request_body(INPUT, image)

    def encode(binary: bool) -> tuple[bytes, int | None]:
        response = InferResponse(
            "squeezenet", "1", "bench-1", [InferOutput(OUTPUT, "FP32", scores, binary)]
        )
        return codec.encode_response(response)

    def binary_decode() -> np.ndarray:
        return codec.decode_request(binary_body, header_length).inputs[0].data

    def json_decode() -> np.ndarray:
        return codec.decode_request(json_body).inputs[0].data

    def baseline_decode() -> np.ndarray:
        item = json.loads(json_body)["inputs"][0]
        return np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])

    def baseline_encode() -> bytes:
        doc = {
            "model_name": "squeezenet",
            "model_version": "1",
            "id": "bench-1",
            "outputs": [
                {"name": OUTPUT, "datatype": "FP32", "shape": [1, 1000], "data": scores.tolist()}
            ],
        }
        return json.dumps(doc).encode()

    _check(binary_decode(), json_decode(), baseline_decode(), image)
    _check_response(encode(True), encode(False), baseline_encode(), scores)

    arms = {
        "binary": lambda: encode(True) if binary_decode() is not None else None,
        "json": lambda: encode(False) if json_decode() is not None else None,
        "json_baseline": lambda: baseline_encode() if baseline_decode() is not None else None,
        # The halves, for the record.
        "binary_decode": binary_decode,
        "binary_encode": lambda: encode(True),
        "json_decode": json_decode,
        "json_encode": lambda: encode(False),
        "baseline_decode": baseline_decode,
        "baseline_encode": baseline_encode,
    }
    fast = ("binary", "binary_decode", "binary_encode", "json_encode", "baseline_encode")
    rounds = config.pick(30, 8)
    per_block = {k: (config.pick(100, 40) if k in fast else 4) for k in arms}
    samples: dict[str, list[float]] = {k: [] for k in arms}
    block_ratio: list[float] = []
    perf = time.perf_counter_ns
    for _ in range(3):  # warm-up
        for fn in arms.values():
            fn()
    for index in range(rounds):
        keys = list(arms) if index % 2 == 0 else list(reversed(arms))
        block: dict[str, list[float]] = {}
        for key in keys:
            fn, times = arms[key], []
            for _ in range(per_block[key]):
                t0 = perf()
                fn()
                times.append((perf() - t0) / 1e6)
            block[key] = times
            samples[key] += times
        block_ratio.append(float(np.median(block["json_baseline"]) / np.median(block["json"])))

    stats = {k: summary(v, 1.0, 4) for k, v in samples.items()}
    speedup = stats["json_baseline"]["median"] / stats["json"]["median"]
    binary_ok = stats["binary"]["median"] <= BINARY_LIMIT_MS
    json_ok = speedup >= JSON_SPEEDUP
    return {
        "name": NAME,
        "target": TARGET,
        "met": binary_ok and json_ok,
        "results": {
            "request": {
                "shape": [1, 3, 224, 224],
                "binary_body_bytes": len(binary_body),
                "json_body_bytes": len(json_body),
            },
            "response": {"shape": [1, 1000], "json_bytes": len(encode(False)[0])},
            "round_trip_ms": {k: stats[k] for k in ("binary", "json", "json_baseline")},
            "halves_ms": {k: v for k, v in stats.items() if "_" in k and k != "json_baseline"},
            "binary_met": binary_ok,
            "json_speedup": round(speedup, 2),
            "json_speedup_by_round": summary(block_ratio, 1.0, 2),
            "json_met": json_ok,
        },
    }


def _check(binary: np.ndarray, plain: np.ndarray, baseline: np.ndarray, image: np.ndarray) -> None:
    for name, array in (("binary", binary), ("json", plain), ("baseline", baseline)):
        if array.dtype != np.float32 or not np.array_equal(array, image):
            raise AssertionError(f"{name} decode does not round-trip the tensor")


def _check_response(
    binary: tuple[bytes, int | None],
    plain: tuple[bytes, int | None],
    baseline: bytes,
    scores: np.ndarray,
) -> None:
    body, header_length = binary
    assert header_length is not None and plain[1] is None
    doc = orjson.loads(body[:header_length])
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    raw = np.frombuffer(body[header_length : header_length + size], dtype="<f4")
    for name, array in (
        ("binary", raw),
        ("json", np.asarray(orjson.loads(plain[0])["outputs"][0]["data"], dtype=np.float32)),
        ("baseline", np.asarray(json.loads(baseline)["outputs"][0]["data"], dtype=np.float32)),
    ):
        if not np.array_equal(array.reshape(1, 1000), scores):
            raise AssertionError(f"{name} encode does not round-trip the tensor")


def markdown(result: dict[str, Any]) -> list[str]:
    from benchmarks.common import md_table

    res = result["results"]
    rt, halves = res["round_trip_ms"], res["halves_ms"]
    req = res["request"]
    rows = [
        [
            "binary (Triton extension)",
            req["binary_body_bytes"],
            rt["binary"]["median"],
            rt["binary"]["p99"],
            halves["binary_decode"]["median"],
            halves["binary_encode"]["median"],
        ],
        [
            "JSON, inferstack codec",
            req["json_body_bytes"],
            rt["json"]["median"],
            rt["json"]["p99"],
            halves["json_decode"]["median"],
            halves["json_encode"]["median"],
        ],
        [
            "JSON, baseline (json + np.asarray / tolist)",
            req["json_body_bytes"],
            rt["json_baseline"]["median"],
            rt["json_baseline"]["p99"],
            halves["baseline_decode"]["median"],
            halves["baseline_encode"]["median"],
        ],
    ]
    spread = res["json_speedup_by_round"]
    return [
        "Request 1x3x224x224 FP32, response 1x1000 FP32; times in ms.",
        "",
        md_table(
            [
                "codec",
                "request bytes",
                "decode+encode p50",
                "decode+encode p99",
                "decode p50",
                "encode p50",
            ],
            rows,
        ),
        "",
        md_table(
            ["target", "figure", "met"],
            [
                [
                    "binary decode+encode p50 <= 1 ms",
                    f"{rt['binary']['median']} ms",
                    res["binary_met"],
                ],
                [
                    "JSON >= 3x faster than the baseline",
                    f"{res['json_speedup']}x (by round {spread['p10']}..{spread['p90']})",
                    res["json_met"],
                ],
            ],
        ),
    ]
