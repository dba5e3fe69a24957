"""Every HTTP route of the protocol, declared once.

The FastAPI app registers these and the Lambda entry point matches them directly,
so both hosts expose the same API from one table.
"""

from __future__ import annotations

import re

from inferstack.exceptions import MethodNotAllowedError, RouteNotFoundError


class Route:
    """One endpoint: method, path template, the DataPlane method that serves it."""

    __slots__ = ("endpoint", "method", "path", "regex", "summary", "tag")

    def __init__(self, method: str, path: str, endpoint: str, summary: str, tag: str) -> None:
        self.method, self.path, self.endpoint = method, path, endpoint
        self.summary, self.tag = summary, tag
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.regex = re.compile(f"^{pattern}$") if "{" in path else None

    def __repr__(self) -> str:
        return f"Route({self.method} {self.path} -> {self.endpoint})"


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

_STATIC = {(r.method, r.path): r for r in ROUTES if r.regex is None}
_DYNAMIC = [(r, r.regex) for r in ROUTES if r.regex is not None]


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for a request and its (URL-decoded) path parameters."""
    path = path.rstrip("/") or "/"
    route = _STATIC.get((method, path))
    if route is not None:
        return route, {}
    allowed = False
    for route, regex in _DYNAMIC:
        found = regex.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, {k: _unquote(v) for k, v in found.groupdict().items()}
        allowed = True
    # Only a miss pays for telling 405 from 404.
    if allowed or any(r.path == path for r in _STATIC.values()):
        raise MethodNotAllowedError(f"{method} is not allowed on {path}")
    raise RouteNotFoundError(f"no endpoint at {path}")


def _unquote(value: str) -> str:
    if "%" not in value:
        return value
    from urllib.parse import unquote  # rare (quoted model names): kept off the cold start

    return unquote(value)
