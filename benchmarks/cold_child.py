"""One cold start, run as a fresh interpreter by benchmarks/cold_start.py.

    cold_child.py candidate EVENT_JSON BODY_FILE FUNCTION_DIR
        imports the Lambda handler module (functions/inference/handler.py: the model
        loads at module scope) and sends it one HTTP API event.
    cold_child.py floor MODEL_PATH INPUT_NAME INPUT_NPY
        imports numpy and onnxruntime, creates the InferenceSession, runs it once.

Both print the same success line, `BENCH-OK <t_start> <t_ready> <t_done>`, with
time.perf_counter() readings (CLOCK_MONOTONIC on Linux, so the parent can compare
them with its own clock): script start, handler/session ready, first response.
Kept to the standard library until the measured imports, on purpose.
"""

import time

T_START = time.perf_counter()

import os  # noqa: E402
import sys  # noqa: E402


def candidate(event_path: str, body_path: str, function_dir: str) -> float:
    import json

    with open(event_path) as f:
        event = json.load(f)
    with open(body_path) as f:
        event["body"] = f.read()
    sys.path.insert(0, function_dir)  # the Lambda task root
    from handler import handler  # type: ignore[import-not-found]

    ready = time.perf_counter()

    class Context:
        aws_request_id = "00000000-0000-0000-0000-000000000001"
        function_name = "inferstack-bench"

    response = handler(event, Context())
    if response.get("statusCode") != 200:
        print(f"BENCH-FAIL {response.get('statusCode')} {str(response.get('body'))[:500]}")
        sys.stdout.flush()
        os._exit(1)
    return ready


def floor(model_path: str, input_name: str, npy_path: str) -> float:
    import numpy as np
    import onnxruntime as ort

    x = np.load(npy_path)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    ready = time.perf_counter()
    session.run(None, {input_name: x})
    return ready


def main() -> None:
    mode, *args = sys.argv[1:]
    ready = candidate(*args) if mode == "candidate" else floor(*args)
    done = time.perf_counter()
    print(f"BENCH-OK {T_START:.9f} {ready:.9f} {done:.9f}", flush=True)
    os._exit(0)  # teardown is not part of a cold start


main()
