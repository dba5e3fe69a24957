"""Lambda: pin the release on a new published version, smoke-invoke it, move the alias.

Steps, each leaving the previous release serving if it fails:
1. Set INFERSTACK_MODEL_URI on $LATEST to the release's manifest (RevisionId-guarded, so a
   concurrent `cdk deploy` or console edit makes this fail instead of being overwritten),
   wait for the update to finish (function_updated_v2).
2. Publish a version (RevisionId-guarded again) and wait until it is Active: its execution
   environments load exactly this release, whatever the live pointer says later. A SnapStart
   function's version stays Pending while Lambda runs its init (the model's download, session
   and warm-up) and snapshots it, minutes for a large model: the rollout goes on from `check`
   once it is Active, and a Failed version fails the release with Lambda's reason, the alias
   untouched (`_await_snapshot`).
3. Invoke that version directly (the alias still serves the old one): ready, then one
   inference on the release's smoke request; both must answer 200 with this release's id.
4. Move the alias (RevisionId-guarded). Provisioned concurrency configured on the alias moves
   with it: the rollout is live once Lambda reports the new version's allocation READY
   (`check`), and a FAILED allocation moves the alias back.

With a canary (the model's target record has one; the promoter passes none for rollbacks and
for a model with no live release yet), step 4 is a bake first: the alias stays on the previous
version and routes `weight_percent` of its invocations to the new one (RoutingConfig
AdditionalVersionWeights). Each `check` reads the new version's own figures (canary.py); a
crossed threshold, or a bake that ends with fewer than `min_requests`, puts the alias back on
the previous version alone and fails the release. A healthy bake moves the alias fully (weights
cleared), then the provisioned-concurrency check above. No canary when the alias is on $LATEST
(a weighted alias cannot be) or already on the new version. Weighted aliases:
https://docs.aws.amazon.com/lambda/latest/dg/configuring-alias-routing.html.

$LATEST keeps the pin until the next `cdk deploy`, which sets the live pointer again:
both load the live release, so a deploy never undoes a promotion.

AWS references: UpdateFunctionConfiguration / PublishVersion / UpdateAlias RevisionId
(https://docs.aws.amazon.com/lambda/latest/api/API_UpdateAlias.html), function states and
waiters (https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html), aliases and
provisioned concurrency
(https://docs.aws.amazon.com/lambda/latest/dg/provisioned-concurrency.html), SnapStart's
version states (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-activate.html#snapstart-function-states).
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from inferstack.names import ENV_MODEL_URI
from inferstack.release.rollout.base import Progress, ReleaseRef, Rollout, aws_reason
from inferstack.release.rollout.canary import READ_GRACE_S, SETTLE_S, crossed, unexercised

if TYPE_CHECKING:
    from collections.abc import Callable

    from inferstack.release.rollout.canary import Canary, CanaryMetrics, Figures

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
        canary: Canary | None = None,
        metrics: CanaryMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`smoke_body`: one inference request (protocol JSON) the new version must answer.
        `invoke(function, qualifier, event) -> proxy response`: Lambda Invoke by default.
        `canary` and `metrics` (its figures' reader): a bake before the alias moves;
        `clock`: wall-clock epoch seconds (a bake spans invocations)."""
        if canary is not None and metrics is None:
            raise ValueError("a canary needs the metrics reader of its figures")
        self.client = client
        self.function = function
        self.alias = alias
        self.smoke_body = smoke_body
        self.invoke = invoke or self._invoke
        self.canary, self.metrics, self.clock = canary, metrics, clock

    def start(self, release: ReleaseRef) -> Progress:
        try:
            version, published = self._publish(release)
        except Exception as exc:  # botocore errors and waiter failures alike
            return Progress("failed", f"could not publish a version: {aws_reason(exc)}")
        if _snapstart(published):
            state = {
                "version": version,
                "stage": SNAPSHOT,
                "snapshot": {
                    **release._asdict(),
                    "since": self.clock(),
                    # The promoter gives a rollback or a first release no canary; a check
                    # gets the target as configured, so the choice is kept here.
                    "canary": self.canary is not None,
                },
            }
            return self._await_snapshot(state, published)
        return self._serve(release, version, self.canary)

    def _serve(self, release: ReleaseRef, version: str, canary: Canary | None) -> Progress:
        """The published (Active) version smoke-tested, then the alias moved to it (through
        `canary` if any)."""
        problem = self._smoke(release, version)
        if problem:
            return Progress(
                "failed",
                f"version {version} failed its smoke test: {problem}",
                {"version": version},
            )
        try:
            alias = self.client.get_alias(FunctionName=self.function, Name=self.alias)
            previous = str(alias["FunctionVersion"])
            if canary is not None and previous not in (version, LATEST):
                return self._begin_canary(release, version, alias, canary)
            self._route(alias, version)
        except Exception as exc:
            return Progress(
                "failed",
                f"could not move alias {self.alias}: {aws_reason(exc)}",
                {"version": version},
            )
        state = {"version": version, "previous": previous}
        return self.check(Progress("in_progress", None, state))

    def check(self, progress: Progress) -> Progress:
        """A SnapStart snapshot until it is ready, a canary's bake while it lasts (its state
        says), then the alias's provisioned concurrency."""
        state = dict(progress.state or {})
        if state.get("stage") == SNAPSHOT:
            return self._await_snapshot(state)
        canary = state.get("canary")
        if canary and "passed" not in canary:
            return self._bake(state)
        return self._provisioned(state)

    def abandon(self, progress: Progress) -> str | None:
        """The rollout ended without this target's verdict (its checks failed, say): a canary
        still on the alias goes back; what became of the alias, or None if nothing to undo."""
        state = dict(progress.state or {})
        canary = state.get("canary")
        if not canary or "passed" in canary:
            return None
        return self._move_back(state)

    # ------------------------------------------------------------------ canary
    def _begin_canary(
        self, release: ReleaseRef, version: str, alias: dict[str, Any], canary: Canary
    ) -> Progress:
        previous = str(alias["FunctionVersion"])
        self._route(alias, previous, {version: canary.weight_percent / 100})
        started = self.clock()
        state = {
            "version": version,
            "previous": previous,
            "stage": "canary",
            "canary": {
                "release": release.release,
                "weight_percent": canary.weight_percent,
                "started": started,
                "ends": started + canary.bake_minutes * 60,
            },
        }
        return Progress(
            "in_progress",
            f"canary {canary.weight_percent}% on version {version} for "
            f"{canary.bake_minutes} min (version {previous} serves the rest)",
            state,
        )

    def _bake(self, state: dict[str, Any]) -> Progress:
        """One look at the canary: fail it, wait on, or move the alias fully."""
        canary, metrics = self.canary, self.metrics
        if canary is None or metrics is None:  # the target lost its canary mid-bake
            return self._end_canary(state, "the model's target has no canary any more")
        record = dict(state["canary"])
        version = str(state["version"])
        now = self.clock()
        verdict_at = float(record["ends"]) + SETTLE_S
        try:
            figures = metrics.read(
                str(record["release"]),
                version,
                float(record["started"]),
                now,
                p99=canary.max_p99_ms is not None,
            )
        except Exception as exc:
            unread = f"could not read its metrics: {aws_reason(exc)}"
            if now < verdict_at + READ_GRACE_S:
                return Progress("in_progress", f"{_head(record, version)}: {unread}", state)
            return self._end_canary(state, unread)
        state = {**state, "canary": {**record, "figures": figures.to_json()}}
        problem = crossed(canary, figures)
        if problem is None and now >= verdict_at:
            problem = unexercised(canary, figures)
        if problem is not None:
            return self._end_canary(state, problem)
        if now < verdict_at:
            return Progress("in_progress", _baking(record, version, figures, now), state)
        return self._promote_canary(state, figures)

    def _promote_canary(self, state: dict[str, Any], figures: Figures) -> Progress:
        """A healthy bake: the alias fully on the new version, if still as the canary set it."""
        try:
            alias = self.client.get_alias(FunctionName=self.function, Name=self.alias)
            weights = _weights(alias)
            if str(alias["FunctionVersion"]) != str(state["previous"]) or set(weights) != {
                str(state["version"])
            }:
                raise RuntimeError(
                    f"it changed during the canary (version {alias['FunctionVersion']}, "
                    f"weights {weights})"
                )
            self._route(alias, str(state["version"]))
        except Exception as exc:
            return self._end_canary(
                state,
                f"{figures.text()}, but alias {self.alias} could not be moved fully: "
                f"{aws_reason(exc)}",
            )
        state = {**state, "stage": "alias", "canary": {**state["canary"], "passed": True}}
        return self._provisioned(state)

    def _end_canary(self, state: dict[str, Any], problem: str) -> Progress:
        """The canary failed: the alias back on the previous version alone, the release
        failed with the figure, the threshold and where the alias is now."""
        state = {**state, "canary": {**state["canary"], "passed": False}}
        return Progress(
            "failed",
            f"canary of version {state['version']} failed: {problem}; {self._move_back(state)}",
            state,
        )

    # ------------------------------------------------------------------ SnapStart
    def _await_snapshot(
        self, state: dict[str, Any], config: dict[str, Any] | None = None
    ) -> Progress:
        """Where the version's snapshot stands (`config`: its configuration, read if not
        given): Active goes on to the smoke test and the alias, Failed fails the release with
        Lambda's StateReasonCode and StateReason, Pending waits (the state machine's Check
        loop; see SNAPSHOT_WAIT_S)."""
        record, version = state["snapshot"], str(state["version"])
        try:
            if config is None:
                config = self.client.get_function_configuration(
                    FunctionName=self.function, Qualifier=version
                )
        except Exception as exc:  # read again at the next check, within the bound
            status = f"unknown (could not read it: {aws_reason(exc)})"
        else:
            status = str(config.get("State"))
            if status == "Active":
                release = ReleaseRef(record["model"], record["release"], record["uri"])
                return self._serve(release, version, self.canary if record["canary"] else None)
            if status == "Failed":
                return Progress(
                    "failed",
                    f"snapshot of version {version} failed: "
                    f"{_state_reason(config) or 'Lambda gave no reason'}; "
                    f"alias {self.alias} was not moved",
                    state,
                )
            reason = _state_reason(config)
            status = f"{status} ({reason})" if reason else status
        waited = self.clock() - float(record["since"])
        if waited > SNAPSHOT_WAIT_S:
            return Progress(
                "failed",
                f"snapshot of version {version} is not ready after {waited / 60:.0f} min "
                f"(state {status}); alias {self.alias} was not moved",
                state,
            )
        return Progress(
            "in_progress",
            f"SnapStart snapshot of version {version}: Lambda is initializing it (model "
            f"download, session, warm-up) and snapshotting it; state {status}",
            state,
        )

    # ------------------------------------------------------------------ provisioned concurrency
    def _provisioned(self, state: dict[str, Any]) -> Progress:
        """Live once the alias's provisioned concurrency (if any) is READY on the new version.

        Moving the alias moves its provisioned concurrency: Lambda initializes that many
        environments of the new version (minutes for a large model), and a FAILED allocation
        (the init failing, say) moves the alias back. GetProvisionedConcurrencyConfig:
        https://docs.aws.amazon.com/lambda/latest/api/API_GetProvisionedConcurrencyConfig.html
        """
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
            return Progress(
                "failed",
                f"provisioned concurrency of version {state.get('version')}"
                f" failed: {reason}; {self._move_back(state)}",
                state,
            )
        state = {**state, "stage": "provisioned_concurrency"}
        return Progress("in_progress", f"provisioned concurrency {status}", state)

    # ------------------------------------------------------------------ alias
    def _route(
        self, alias: dict[str, Any], version: str, weights: dict[str, float] | None = None
    ) -> None:
        """Point the alias read as `alias` at `version` (+ weighted versions), only if it is
        unchanged since (RevisionId)."""
        self.client.update_alias(
            FunctionName=self.function,
            Name=self.alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": weights or {}},
            **_guarded(alias),
        )

    def _move_back(self, state: dict[str, Any]) -> str:
        """The alias back on the previous version alone, if this rollout's version is on it
        (fully or as the canary); what became of the alias, for the reason."""
        previous, version = state.get("previous"), str(state.get("version"))
        try:
            alias = self.client.get_alias(FunctionName=self.function, Name=self.alias)
            weights = _weights(alias)
            if not previous:
                return f"alias {self.alias} had no previous version to go back to"
            if str(alias["FunctionVersion"]) != version and version not in weights:
                return (
                    f"alias {self.alias} was changed meanwhile (version "
                    f"{alias['FunctionVersion']}, weights {weights}): left as it is"
                )
            self._route(alias, str(previous))
        except Exception as exc:
            return f"could not move alias {self.alias} back: {aws_reason(exc)}"
        return f"alias {self.alias} is back on version {previous}"

    def _publish(self, release: ReleaseRef) -> tuple[str, dict[str, Any]]:
        """The version published for `release` and PublishVersion's answer (its configuration)."""
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
        if not _snapstart(published):  # Active within seconds: waited for here, as ever
            self.client.get_waiter("published_version_active").wait(
                FunctionName=self.function, Qualifier=version
            )
        return version, published

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


LATEST = "$LATEST"  # an alias on it cannot carry weights
SNAPSHOT = "snapshot"  # the rollout's stage while a SnapStart version is Pending
# Why the snapshot is waited for in the state machine's Check loop (every 30 s, as a canary's
# bake) and not by a waiter inside Start: "When Lambda creates a snapshot, your initialization
# code can run for up to 15 minutes" (the function's timeout, at least 130 s), and the version
# stays Pending meanwhile
# (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-troubleshooting.html#snapstart-creation-latency),
# longer than the promoter function's own 10-minute timeout. Lambda fails a version whose init
# runs over; past twice that, the rollout gives up and frees the model's slot (held for hours
# otherwise).
SNAPSHOT_WAIT_S = 30 * 60.0


def _snapstart(config: dict[str, Any]) -> bool:
    """Whether a published version is snapshotted: SnapStart on published versions
    (https://docs.aws.amazon.com/lambda/latest/api/API_SnapStartResponse.html)."""
    snap = config.get("SnapStart") or {}
    return snap.get("ApplyOn") == "PublishedVersions" or snap.get("OptimizationStatus") == "On"


def _state_reason(config: dict[str, Any]) -> str:
    """ "<StateReasonCode>: <StateReason>" of a version's configuration
    (https://docs.aws.amazon.com/lambda/latest/api/API_GetFunctionConfiguration.html)."""
    code, reason = config.get("StateReasonCode"), config.get("StateReason")
    return ": ".join(str(part) for part in (code, reason) if part)


def _weights(alias: dict[str, Any]) -> dict[str, float]:
    return dict((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})


def _head(record: dict[str, Any], version: str) -> str:
    return f"canary {record['weight_percent']}% on version {version}"


def _baking(record: dict[str, Any], version: str, figures: Figures, now: float) -> str:
    """The in-progress reason: "canary 10% on version 7: 123 requests, 0 errors; 6 min left"."""
    ends = float(record["ends"])
    if now < ends:
        left = f"{math.ceil((ends - now) / 60)} min left"
    else:
        left = f"bake over, the verdict in {math.ceil(ends + SETTLE_S - now)} s (late metrics)"
    return f"{_head(record, version)}: {figures.text()}; {left}"


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
