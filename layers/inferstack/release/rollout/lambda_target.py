"""Lambda: pin the release on a new published version, smoke-invoke it, move the alias.

Steps, each leaving the previous release serving if it fails:
1. Set INFERSTACK_MODEL_URI on $LATEST to the release's manifest (RevisionId-guarded, so a
   concurrent `cdk deploy` or console edit makes this fail instead of being overwritten),
   wait for the update to finish (function_updated_v2).
2. Publish a version (RevisionId-guarded again) and wait until it is Active: its execution
   environments load exactly this release, whatever the live pointer says later.
3. Invoke that version directly (the alias still serves the old one): ready, then one
   inference on the release's smoke request; both must answer 200 with this release's id.
4. Move the alias (RevisionId-guarded). Provisioned concurrency configured on the alias moves
   with it: the rollout is live once Lambda reports the new version's allocation READY
   (`check`), and a FAILED allocation moves the alias back.

$LATEST keeps the pin until the next `cdk deploy`, which sets the live pointer again:
both load the live release, so a deploy never undoes a promotion.

AWS references: UpdateFunctionConfiguration / PublishVersion / UpdateAlias RevisionId
(https://docs.aws.amazon.com/lambda/latest/api/API_UpdateAlias.html), function states and
waiters (https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html), aliases and
provisioned concurrency
(https://docs.aws.amazon.com/lambda/latest/dg/provisioned-concurrency.html).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from inferstack.names import ENV_MODEL_URI
from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout, aws_reason

if TYPE_CHECKING:
    from collections.abc import Callable

    Invoke = Callable[[str, str, dict[str, Any]], dict[str, Any]]

TARGET = "lambda"


class LambdaRollout(Rollout):
    target = TARGET

    def __init__(
        self,
        client: Any,
        *,
        function: str,
        alias: str,
        smoke_body: str,
        invoke: Invoke | None = None,
    ) -> None:
        """`smoke_body`: one inference request (protocol JSON) the new version must answer.
        `invoke(function, qualifier, event) -> proxy response`: Lambda Invoke by default."""
        self.client = client
        self.function = function
        self.alias = alias
        self.smoke_body = smoke_body
        self.invoke = invoke or self._invoke

    def start(self, release: ReleaseRef) -> Progress:
        try:
            version = self._publish(release)
        except Exception as exc:  # botocore errors and waiter failures alike
            return Progress("failed", f"could not publish a version: {aws_reason(exc)}")
        problem = self._smoke(release, version)
        if problem:
            return Progress(
                "failed",
                f"version {version} failed its smoke test: {problem}",
                {"version": version},
            )
        try:
            alias = self.client.get_alias(FunctionName=self.function, Name=self.alias)
            self.client.update_alias(
                FunctionName=self.function,
                Name=self.alias,
                FunctionVersion=version,
                RoutingConfig={"AdditionalVersionWeights": {}},
                **_guarded(alias),
            )
        except Exception as exc:
            return Progress(
                "failed",
                f"could not move alias {self.alias}: {aws_reason(exc)}",
                {"version": version},
            )
        state = {"version": version, "previous": alias["FunctionVersion"]}
        return self.check(Progress("in_progress", None, state))

    def check(self, progress: Progress) -> Progress:
        """Live once the alias's provisioned concurrency (if any) is READY on the new version.

        Moving the alias moves its provisioned concurrency: Lambda initializes that many
        environments of the new version (minutes for a large model), and a FAILED allocation
        (the init failing, say) moves the alias back. GetProvisionedConcurrencyConfig:
        https://docs.aws.amazon.com/lambda/latest/api/API_GetProvisionedConcurrencyConfig.html
        """
        state = dict(progress.state or {})
        try:
            config = self.client.get_provisioned_concurrency_config(
                FunctionName=self.function, Qualifier=self.alias
            )
        except Exception as exc:
            if _code(exc) == "ProvisionedConcurrencyConfigNotFoundException":
                return Progress("succeeded", None, state)  # none on this alias
            return Progress(
                "in_progress", f"could not read provisioned concurrency: {aws_reason(exc)}", state
            )
        status = config.get("Status")
        if status == "READY":
            return Progress("succeeded", None, state)
        if status == "FAILED":
            reason = config.get("StatusReason") or "allocation failed"
            self._move_back(state)
            return Progress(
                "failed",
                f"provisioned concurrency of version {state.get('version')}"
                f" failed: {reason}; alias {self.alias} is back on "
                f"version {state.get('previous')}",
                state,
            )
        return Progress("in_progress", f"provisioned concurrency {status}", state)

    def _move_back(self, state: dict[str, Any]) -> None:
        previous = state.get("previous")
        if previous:
            self.client.update_alias(
                FunctionName=self.function, Name=self.alias, FunctionVersion=str(previous)
            )

    def _publish(self, release: ReleaseRef) -> str:
        config = self.client.get_function_configuration(FunctionName=self.function)
        variables = dict((config.get("Environment") or {}).get("Variables") or {})
        variables[ENV_MODEL_URI] = release.uri
        self.client.update_function_configuration(
            FunctionName=self.function,
            Environment={"Variables": variables},
            **_guarded(config),
        )
        self.client.get_waiter("function_updated_v2").wait(FunctionName=self.function)
        # Read again (the update's completion may change RevisionId) and publish only what
        # this rollout configured: a concurrent edit in between fails the publish.
        current = self.client.get_function_configuration(FunctionName=self.function)
        pinned = (current.get("Environment") or {}).get("Variables", {}).get(ENV_MODEL_URI)
        if pinned != release.uri:
            raise RuntimeError(f"the function's configuration changed under the rollout ({pinned})")
        published = self.client.publish_version(
            FunctionName=self.function,
            Description=f"inferstack {release.model} release {release.release}",
            **_guarded(current),
        )
        version = str(published["Version"])
        self.client.get_waiter("published_version_active").wait(
            FunctionName=self.function, Qualifier=version
        )
        return version

    def _smoke(self, release: ReleaseRef, version: str) -> str | None:
        """Why the new version is not fit to serve, or None."""
        base = f"/v2/models/{release.model}"
        checks = [("GET", f"{base}/ready", None), ("POST", f"{base}/infer", self.smoke_body)]
        for method, path, body in checks:
            try:
                answer = self.invoke(self.function, version, _proxy_event(method, path, body))
            except Exception as exc:
                return f"{method} {path}: {aws_reason(exc)}"
            status = answer.get("statusCode")
            if status != 200:
                return f"{method} {path} answered {status}: {_error_of(answer)}"
            if body is not None:
                served = json.loads(answer.get("body") or "{}").get("model_version")
                if served != release.release:
                    return f"it served release {served!r}, not {release.release!r}"
        return None

    def _invoke(self, function: str, qualifier: str, event: dict[str, Any]) -> dict[str, Any]:
        reply = self.client.invoke(
            FunctionName=function, Qualifier=qualifier, Payload=json.dumps(event).encode()
        )
        payload = json.loads(reply["Payload"].read() or b"{}")
        if reply.get("FunctionError"):
            raise RuntimeError(f"{reply['FunctionError']}: {payload.get('errorMessage', payload)}")
        return dict(payload)


def _code(exc: Exception) -> str | None:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code) if code else None


def _guarded(record: dict[str, Any]) -> dict[str, Any]:
    """RevisionId of what was read, so the write fails if anything changed it since.
    (AWS always returns one; moto returns none, and then the write is unguarded.)"""
    revision = record.get("RevisionId")
    return {"RevisionId": revision} if revision else {}


def _proxy_event(method: str, path: str, body: str | None) -> dict[str, Any]:
    """An API Gateway REST (payload 1.0) proxy event, as the API sends the function."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "requestContext": {"path": path, "httpMethod": method, "stage": "smoke"},
        "body": body,
        "isBase64Encoded": False,
    }


def _error_of(answer: dict[str, Any]) -> str:
    try:
        return str(json.loads(answer.get("body") or "{}").get("error", answer.get("body")))
    except ValueError:
        return str(answer.get("body"))[:200]
