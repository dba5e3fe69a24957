"""Every HTTP route of the protocol, declared once.

The FastAPI app registers these and the Lambda entry point matches them directly,
so both hosts expose the same API from one table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from inferstack.exceptions import MethodNotAllowedError, RouteNotFoundError


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # a template: "/v2/models/{model}/infer"
    endpoint: str  # the DataPlane method that serves it
    summary: str
    tag: str
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2", "server_metadata", "Server metadata", "server"),
    Route("GET", "/v2/health/live", "live", "Server liveness", "health"),
    Route("GET", "/v2/health/ready", "ready", "Server readiness", "health"),
    Route("POST", "/v2/repository/index", "repository_index", "List served models", "repository"),
    Route("GET", "/v2/models/{model}", "model_metadata", "Model metadata", "models"),
    Route(
        "GET",
        "/v2/models/{model}/versions/{version}",
        "model_metadata",
        "Model version metadata",
        "models",
    ),
    Route("GET", "/v2/models/{model}/ready", "model_ready", "Model readiness", "health"),
    Route(
        "GET",
        "/v2/models/{model}/versions/{version}/ready",
        "model_ready",
        "Model version readiness",
        "health",
    ),
    Route("POST", "/v2/models/{model}/infer", "infer", "Inference", "inference"),
    Route(
        "POST",
        "/v2/models/{model}/versions/{version}/infer",
        "infer",
        "Inference on a model version",
        "inference",
    ),
    Route("POST", "/v1/models/{model}:predict", "predict_v1", "v1 predict (instances)", "v1"),
)

_STATIC = {(r.method, r.path): r for r in ROUTES if "{" not in r.path}
_DYNAMIC = [r for r in ROUTES if "{" in r.path]


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for a request and its (URL-decoded) path parameters."""
    path = path.rstrip("/") or "/"
    route = _STATIC.get((method, path))
    if route is not None:
        return route, {}
    allowed = False
    for route in (*_STATIC.values(), *_DYNAMIC):
        found = route.regex.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
        allowed = True
    if allowed:
        raise MethodNotAllowedError(f"{method} is not allowed on {path}")
    raise RouteNotFoundError(f"no endpoint at {path}")
