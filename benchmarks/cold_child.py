"""One cold start, run as a fresh interpreter by benchmarks/cold_start.py.

    cold_child.py candidate EVENT_JSON BODY_FILE FUNCTION_DIR
        imports the Lambda handler module (functions/inference/handler.py: the model
        loads at module scope) and sends it one HTTP API event.
    cold_child.py floor MODEL_PATH INPUT_NAME INPUT_NPY
        imports numpy and onnxruntime, creates the InferenceSession, runs it once.
    cold_child.py candidate EVENT_JSON BODY_FILE FUNCTION_DIR numpy,onnxruntime
        (diagnostic) the same with those modules imported first.
    cold_child.py profile EVENT_JSON BODY_FILE
        (diagnostic, not the measured candidate) the steps of
        inferstack.bootstrap.lambda_entry_from_env one by one, each timed, then the
        request; prints `BENCH-PROFILE {json}` before the success line. A release URI
        (s3://.../live.json) adds the model's fetch as a step of its own.

Both print the same success line, `BENCH-OK <t_start> <t_ready> <t_done>`, with
time.perf_counter() readings (CLOCK_MONOTONIC on Linux, so the parent can compare
them with its own clock): script start, handler/session ready, first response.
Kept to the standard library until the measured imports, on purpose.
"""

import time

T_START = time.perf_counter()

import itertools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def candidate(event_path: str, body_path: str, function_dir: str, preimport: str = "") -> float:
    import json

    for module in filter(None, preimport.split(",")):  # diagnostic variant only
        __import__(module)

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


def profile(event_path: str, body_path: str) -> float:
    import json

    with open(event_path) as f:
        event = json.load(f)
    with open(body_path) as f:
        event["body"] = f.read()
    marks = [("start", time.perf_counter())]

    def mark(label: str) -> None:
        marks.append((label, time.perf_counter()))

    import numpy  # noqa: F401

    mark("import numpy")
    import onnxruntime  # noqa: F401

    mark("import onnxruntime")
    import orjson  # noqa: F401

    mark("import orjson")
    from inferstack.aws_lambda import LambdaEntry
    from inferstack.dataplane import DataPlane
    from inferstack.models import ModelRepository, OnnxModel
    from inferstack.release_pointer import fetch_release, is_release_uri
    from inferstack.settings import Settings
    from inferstack.snapstart import register as register_snapshot_hooks
    from inferstack.telemetry import PowertoolsTelemetry

    mark("import inferstack modules")
    import aws_lambda_powertools  # noqa: F401

    mark("import aws_lambda_powertools")
    settings = Settings.from_env()
    telemetry = PowertoolsTelemetry()
    mark("settings + PowertoolsTelemetry()")
    uri = settings.model.uri
    if is_release_uri(uri):  # deployed: the live release from S3 (benchmarks/snapstart.py)
        import boto3  # noqa: F401

        mark("import boto3")
        uri = str(fetch_release(uri, cache_dir=settings.cache_dir).path)
        mark("model fetch (S3)")
    model = OnnxModel(settings.model.name, uri, settings.model.version)
    model.warmup = False
    repository = ModelRepository([model])
    repository.load_all()
    mark("InferenceSession (model load)")
    assert model._session is not None
    model._warm_up(model._session)
    mark("warm-up run")
    dataplane = DataPlane(
        repository, max_request_bytes=settings.max_request_bytes, telemetry=telemetry
    )
    handler = LambdaEntry(dataplane, base_path=settings.base_path, log=telemetry.logger)
    if register_snapshot_hooks(dataplane, os.environ):  # a SnapStart init only
        mark("snapshot hooks registered")
    ready = time.perf_counter()

    class Context:
        aws_request_id = "00000000-0000-0000-0000-000000000001"

    response = handler(event, Context())
    mark("first request")
    assert response["statusCode"] == 200
    steps = {b[0]: round((b[1] - a[1]) * 1e3, 2) for a, b in itertools.pairwise(marks)}
    print("BENCH-PROFILE " + json.dumps(steps))
    return ready


def main() -> None:
    mode, *args = sys.argv[1:]
    ready = {"candidate": candidate, "floor": floor, "profile": profile}[mode](*args)
    done = time.perf_counter()
    print(f"BENCH-OK {T_START:.9f} {ready:.9f} {done:.9f}", flush=True)
    os._exit(0)  # teardown is not part of a cold start


main()
