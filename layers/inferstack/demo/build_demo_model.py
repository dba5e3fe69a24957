"""Build the kit's bundled demo model: a wine classifier exported to ONNX.

Why: InferStack needs a small, real model that ships with the package, so the
quick start, the tests and the drift check work with no downloads and no
training. This script is how that model was made; rerun it to rebuild the
artifacts byte for byte (given the same library versions):

    python layers/inferstack/demo/build_demo_model.py [--out DIR]

It writes wine.onnx, reference_sample.npy (the training features, float32, for
the drift check), demo.json (provenance) and example_request.json (an Open
Inference Protocol request body for ``curl -d @example_request.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx
import sklearn
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

NAME = "wine"
INPUT_NAME = "features"
OUTPUT_NAMES = ("label", "probabilities")
N_FEATURES = 13
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PROBA_ATOL = 1e-5
DATASET = "sklearn.datasets.load_wine"


@dataclass(frozen=True)
class Data:
    """The wine data set, split once, features already cast to float32."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    class_names: list[str]


def load_data() -> Data:
    """Load sklearn's bundled wine data and make the fixed, stratified split."""
    bunch = load_wine()
    x, y = bunch.data, bunch.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    # The served model sees float32, so train and check on float32 values too.
    return Data(
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_train=np.asarray(y_train, dtype=np.int64),
        y_test=np.asarray(y_test, dtype=np.int64),
        feature_names=[str(n) for n in bunch.feature_names],
        class_names=[str(n) for n in bunch.target_names],
    )


def train(data: Data) -> Pipeline:
    """Fit the scaler + logistic regression pipeline on the training split."""
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000, random_state=0)),
        ]
    )
    pipe.fit(data.x_train, data.y_train)
    return pipe


def normalise_opsets(model: onnx.ModelProto) -> None:
    """One opset_import per domain, sorted by domain, main domain at TARGET_OPSET[""].

    skl2onnx can list a domain twice and orders domains by set iteration, which
    varies with PYTHONHASHSEED; this makes the serialized bytes reproducible.
    """
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    versions[""] = max(versions.get("", 0), TARGET_OPSET[""])
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))


def check_outputs(model: onnx.ModelProto, n_classes: int) -> None:
    """Fail unless the graph's outputs are label INT64 [N] and probabilities FLOAT [N, k]."""
    want = [
        (OUTPUT_NAMES[0], onnx.TensorProto.INT64, [None]),
        (OUTPUT_NAMES[1], onnx.TensorProto.FLOAT, [None, n_classes]),
    ]
    got = [
        (
            o.name,
            o.type.tensor_type.elem_type,
            [d.dim_value or None for d in o.type.tensor_type.shape.dim],
        )
        for o in model.graph.output
    ]
    if got != want:
        raise RuntimeError(f"unexpected ONNX outputs {got}, wanted {want}")


def export(pipe: Pipeline, data: Data) -> onnx.ModelProto:
    """Convert to ONNX with a plain probability tensor and stable names and metadata."""
    n_classes = len(data.class_names)
    # With zipmap off, skl2onnx already names the outputs "label" and "probabilities";
    # check_outputs pins that (final_types would rename them but adds two Cast nodes).
    model: onnx.ModelProto = convert_sklearn(
        pipe,
        name=NAME,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        options={id(pipe.named_steps["clf"]): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    check_outputs(model, n_classes)
    normalise_opsets(model)
    model.graph.name = NAME
    model.doc_string = (
        "Wine cultivar classifier (StandardScaler + LogisticRegression) trained on "
        f"{DATASET}; demo model bundled with InferStack. Input '{INPUT_NAME}': float32 "
        f"[N, {N_FEATURES}]. Outputs 'label': int64 [N]; 'probabilities': float32 "
        f"[N, {n_classes}]."
    )
    helper.set_model_props(
        model,
        {
            "dataset": DATASET,
            "classes": json.dumps(data.class_names),
            "feature_names": json.dumps(data.feature_names),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def verify(model_bytes: bytes, pipe: Pipeline, data: Data) -> None:
    """Check onnxruntime agrees with sklearn on the test split; raise if it does not."""
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: data.x_test})
    want_label = pipe.predict(data.x_test)
    want_proba = pipe.predict_proba(data.x_test)
    if label.dtype != np.int64 or label.shape != (len(data.x_test),):
        raise RuntimeError(f"bad label output: {label.dtype} {label.shape}")
    if proba.dtype != np.float32 or proba.shape != want_proba.shape:
        raise RuntimeError(f"bad probabilities output: {proba.dtype} {proba.shape}")
    if not np.array_equal(label, want_label):
        bad = int(np.sum(label != want_label))
        raise RuntimeError(f"ONNX labels differ from sklearn on {bad} test rows")
    diff = float(np.max(np.abs(proba.astype(np.float64) - want_proba)))
    if diff > PROBA_ATOL:
        raise RuntimeError(f"ONNX probabilities differ from sklearn by {diff:.3g} > {PROBA_ATOL}")
    print(f"verified: labels equal on {len(label)} test rows, max |dp| = {diff:.3g}")


def write_json(path: Path, obj: Any) -> None:
    """Write stable, human-readable JSON with a trailing newline."""
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def build(out: Path) -> dict[str, Any]:
    """Train, export, verify and write every artifact into ``out``; return demo.json."""
    data = load_data()
    pipe = train(data)
    model = export(pipe, data)
    model_bytes = model.SerializeToString(deterministic=True)
    verify(model_bytes, pipe, data)

    out.mkdir(parents=True, exist_ok=True)
    onnx_file = f"{NAME}.onnx"
    (out / onnx_file).write_bytes(model_bytes)
    np.save(out / "reference_sample.npy", data.x_train, allow_pickle=False)

    accuracy = float(accuracy_score(data.y_test, pipe.predict(data.x_test)))
    meta: dict[str, Any] = {
        "name": NAME,
        "file": onnx_file,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "dataset": DATASET,
        "feature_names": data.feature_names,
        "class_names": data.class_names,
        "test_accuracy": round(accuracy, 6),
        "reference_sample": "reference_sample.npy",
        "reference_rows": int(data.x_train.shape[0]),
        "versions": {
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
        },
        "input": INPUT_NAME,
        "outputs": list(OUTPUT_NAMES),
    }
    write_json(out / "demo.json", meta)

    rows = np.round(data.x_test[:2].astype(np.float64), 4).tolist()
    request = {
        "inputs": [{"name": INPUT_NAME, "shape": [2, N_FEATURES], "datatype": "FP32", "data": rows}]
    }
    write_json(out / "example_request.json", request)
    return meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        metavar="DIR",
        help="folder to write the artifacts into (default: this script's folder)",
    )
    args = parser.parse_args(argv)
    meta = build(args.out)
    print(
        f"wrote {args.out / meta['file']} sha256={meta['sha256']} "
        f"test_accuracy={meta['test_accuracy']} reference_rows={meta['reference_rows']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
