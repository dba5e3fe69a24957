"""The SageMaker integration's route header, as synthesized, against a real server.

API Gateway reaches a SageMaker model through InvokeEndpoint, whose container only has
POST /invocations; the integration sends the protocol route in
X-Amzn-SageMaker-Custom-Attributes as a static value. Every value the prod template
holds is sent to a real `inferstack serve` serving models of those names, and must get
what the named protocol route itself answers.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from inferstack.demo import demo_dir, demo_model_path
from tests.contract.conftest import running_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.infra.conftest import Synthesized

HEADER = "integration.request.header.X-Amzn-SageMaker-Custom-Attributes"


def route_headers(template: dict[str, object]) -> list[str]:
    """The header value of every API method whose integration sets it (quotes removed)."""
    values = []
    for resource in template.values():
        properties = resource.get("Properties", {})  # type: ignore[attr-defined]
        parameters = properties.get("Integration", {}).get("RequestParameters", {})
        if HEADER in parameters:
            literal = parameters[HEADER]
            assert literal.startswith("'") and literal.endswith("'"), literal
            values.append(literal[1:-1])
    return values


def call(
    base: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, data=body or None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_synthesized_route_header_reaches_its_protocol_route(
    synthesized: dict[str, Synthesized], tmp_path: Path
) -> None:
    prod = synthesized["prod"]
    methods = prod.template.find_resources("AWS::ApiGateway::Method")
    values = route_headers(methods)
    assert values, "the prod stack has SageMaker models: some methods must carry the route"
    routes = []
    for value in values:
        pairs = dict(part.split("=", 1) for part in value.split(","))
        routes.append((pairs["method"], pairs["route"]))
    names = sorted(
        {m.group(1) for _, path in routes if (m := re.search(r"/models/([^/:]+)", path))}
    )
    assert names, routes
    assert any(path.endswith("/infer") for _, path in routes), routes

    example = json.loads((demo_dir() / "example_request.json").read_text())
    bodies = {
        "infer": json.dumps({**example, "id": "from-api-gateway"}).encode(),
        "predict": json.dumps({"instances": example["inputs"][0]["data"]}).encode(),
    }
    args = [f"--model={name}={demo_model_path()}" for name in names]
    with running_server(args, tmp_path / "serve.log", names) as server:
        for value, (method, path) in zip(values, routes, strict=True):
            kind = "infer" if path.endswith("/infer") else "predict" if ":predict" in path else ""
            body = bodies.get(kind, b"")
            json_type = {"Content-Type": "application/json"}
            direct = call(server.base, method, path, body, json_type)
            assert direct[0] == 200, (path, direct)
            headers = {**json_type, "X-Amzn-SageMaker-Custom-Attributes": value}
            answer = call(server.base, "POST", "/invocations", body, headers)
            assert answer == direct, (value, answer, direct)
