"""The OpenAPI document: valid OpenAPI, and usable by a fuzzer on every operation.

schemathesis drives the real app in-process (ASGI) with requests generated from
/openapi.json, against real ONNX Runtime models: no answer may be a 500, and every
answer must match what the document says (status code, content type, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate

from inferstack.bootstrap import server_app
from inferstack.demo import demo_model_path
from inferstack.protocol.routes import ROUTES, Route
from inferstack.settings import ModelConfig
from tests.functional.protocol_models import write_add_shared, write_lookup, write_scale

# Served models and inputs that fit them: the fuzzer aims at these as well as at random ones.
VALID_INPUTS: dict[str, list[dict[str, Any]]] = {
    "wine": [{"name": "features", "shape": [1, 13], "datatype": "FP32", "data": [0.5] * 13}],
    "scale": [{"name": "s", "shape": [], "datatype": "FP32", "data": [1.5]}],
    "shared": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
        {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [3.0, 4.0]},
    ],
    "lookup": [{"name": "i", "shape": [2], "datatype": "INT64", "data": [0, 3]}],
}
VALID_INSTANCES: dict[str, list[Any]] = {"wine": [[0.5] * 13], "scale": [1.5], "lookup": [0, 3]}
# A few examples per operation keep the whole run to seconds; derandomized, so CI is stable.
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("openapi-models")
    models = [
        ModelConfig("wine", str(demo_model_path()), "1"),
        ModelConfig("scale", str(write_scale(directory / "scale.onnx")), "1"),
        ModelConfig("shared", str(write_add_shared(directory / "shared.onnx")), "1"),
        ModelConfig("lookup", str(write_lookup(directory / "lookup.onnx")), "1"),
    ]
    return server_app(models, max_request_bytes=64 * 1024, load_in_background=False)


@pytest.fixture(scope="module")
def document(app: Any) -> Iterator[dict[str, Any]]:
    with TestClient(app) as client:
        yield client.get("/openapi.json").json()


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # raises with the reason, e.g. an unresolved path parameter


def test_every_route_is_documented_with_its_path_parameters(document: dict[str, Any]) -> None:
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(route.regex.groupindex if route.regex else ()), route
        assert "200" in operation["responses"], route


@pytest.fixture(scope="module")
def api_schema(app: Any) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @schema.hook
    def flatmap_path_parameters(
        context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[Any]:
        # Random names only reach the 404 branch: half the time, name a served model.
        if not isinstance(path_parameters, dict):
            return st.just(path_parameters)
        served = {**path_parameters}
        if "model" in served:
            served["model"] = st.sampled_from(sorted(VALID_INPUTS))
        if "version" in served:
            served["version"] = st.sampled_from(["1", path_parameters["version"]])
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries(served))

    @schema.hook
    def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> Any:
        # Generated tensors rarely fit a model: half the time, swap in inputs that do and
        # keep the rest of the generated body (parameters, requested outputs).
        model = (case.path_parameters or {}).get("model")
        if model not in VALID_INPUTS or not isinstance(case.body, dict):
            return st.just(case)
        if context.operation is not None and context.operation.path.endswith(":predict"):
            fitting = {**case.body, "instances": VALID_INSTANCES.get(model, [])}
        else:
            fitting = {**case.body, "inputs": VALID_INPUTS[model]}

        def with_body(body: Any) -> schemathesis.Case:
            case.body = body
            return case

        return st.sampled_from([case.body, fitting]).map(with_body)

    return schema


# schemathesis.pytest.from_fixture fails under pytest 9 ('Function' has no '_nodeid'):
# each operation's strategy is driven by hypothesis directly instead.
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_fuzzing_finds_no_server_error_and_answers_as_documented(
    api_schema: schemathesis.BaseSchema, route: Route
) -> None:
    operation = api_schema[route.path][route.method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    exercise()
