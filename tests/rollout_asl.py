"""The rollout state machine's synthesized definition, and a walker that follows it.

Step Functions does not run here (moto never runs a function's code), so the functional
tests follow the synthesized definition itself: `Execution` walks exactly the subset of
the Amazon States Language the machine uses (Task with Retry/Catch, Choice, Wait, Succeed,
Fail) and stops on anything else, calling the promoter handler for each Task as the
lambda:invoke integration would. Semantics followed, from AWS's documentation:
- a Lambda error's name is its errorType (the Python exception's class name) and its
  Cause the error object as JSON
  (https://docs.aws.amazon.com/lambda/latest/dg/python-exceptions.html);
- Retry: the first retrier whose ErrorEquals names the error (States.ALL any;
  States.TaskFailed any but States.Timeout) retries up to MaxAttempts; then the first
  matching Catch moves on, its ResultPath putting {"Error", "Cause"} into the state's
  input (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html);
- OutputPath "$.Payload" of lambda:invoke is the function's answer
  (https://docs.aws.amazon.com/step-functions/latest/dg/connect-lambda.html).
Waits take no time: `on_wait` and `on_retry` let a test say what happens meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

LAMBDA_INVOKE = ":states:::lambda:invoke"


def definition(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """The state machine's definition, its Fn::Join pieces resolved: `<Id.Attr>` for a
    GetAtt, `<Id>` for a Ref (so a test can tell which resource a state names)."""
    value = template["Resources"][logical_id]["Properties"]["DefinitionString"]
    if isinstance(value, str):
        return dict(json.loads(value))
    separator, parts = value["Fn::Join"]
    return dict(json.loads(separator.join(_piece(p) for p in parts)))


def _piece(part: Any) -> str:
    if isinstance(part, str):
        return part
    if "Fn::GetAtt" in part:
        return "<{}.{}>".format(*part["Fn::GetAtt"])
    if "Ref" in part:
        return f"<{part['Ref']}>"
    raise AssertionError(f"unexpected piece in the definition: {part}")


class TaskError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error, cause)
        self.error, self.cause = error, cause


@dataclass
class Result:
    status: str  # SUCCEEDED | FAILED
    output: Any = None
    error: str | None = None
    cause: str | None = None


_KNOWN = {
    "Task": {"Type", "Resource", "Parameters", "OutputPath", "Retry", "Catch", "Next", "End"},
    "Choice": {"Type", "Choices", "Default"},
    "Wait": {"Type", "Seconds", "Next"},
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Error", "Cause", "CausePath"},
}


@dataclass
class Execution:
    """One execution of `definition`; `invoke(payload)` is the Lambda function."""

    definition: dict[str, Any]
    invoke: Callable[[dict[str, Any]], Any]
    on_wait: Callable[[str], None] = lambda state: None
    on_retry: Callable[[str, str], None] = lambda state, error: None
    visited: list[str] = field(default_factory=list)
    retried: list[tuple[str, str]] = field(default_factory=list)

    def run(self, execution_input: Any, *, max_states: int = 200) -> Result:
        name, data = self.definition["StartAt"], execution_input
        for _ in range(max_states):
            self.visited.append(name)
            state = self.definition["States"][name]
            kind = state["Type"]
            assert set(state) <= _KNOWN[kind], f"{name}: fields this walker does not follow"
            if kind == "Succeed":
                return Result("SUCCEEDED", data)
            if kind == "Fail":
                cause = (
                    _path(data, state["CausePath"]) if "CausePath" in state else state.get("Cause")
                )
                return Result("FAILED", data, state.get("Error"), cause)
            if kind == "Wait":
                self.on_wait(name)
                name = state["Next"]
            elif kind == "Choice":
                name = next(
                    (c["Next"] for c in state["Choices"] if _matches(c, data)),
                    state.get("Default", ""),
                )
                if not name:
                    return Result("FAILED", data, "States.NoChoiceMatched")
            else:
                try:
                    data = self._task(name, state, data)
                except TaskError as exc:
                    catcher = next(
                        (c for c in state.get("Catch", []) if _names(c, exc.error)), None
                    )
                    if catcher is None:
                        return Result("FAILED", data, exc.error, exc.cause)
                    data = _with(
                        data, catcher["ResultPath"], {"Error": exc.error, "Cause": exc.cause}
                    )
                    name = catcher["Next"]
                    continue
                if state.get("End"):
                    return Result("SUCCEEDED", data)
                name = state["Next"]
        raise AssertionError(f"more than {max_states} states: {self.visited[-10:]}")

    def _task(self, name: str, state: dict[str, Any], data: Any) -> Any:
        assert state["Resource"].endswith(LAMBDA_INVOKE), state["Resource"]
        payload = _parameters(state["Parameters"]["Payload"], data)
        attempts: dict[int, int] = {}
        while True:
            try:
                answer = self.invoke(json.loads(json.dumps(payload)))
            except Exception as exc:  # the Lambda runtime reports any exception
                error = type(exc).__name__
                cause = json.dumps({"errorMessage": str(exc), "errorType": error})
                index = next(
                    (i for i, r in enumerate(state.get("Retry", [])) if _names(r, error)), None
                )
                if index is None or attempts.get(index, 0) >= state["Retry"][index]["MaxAttempts"]:
                    raise TaskError(error, cause) from exc
                attempts[index] = attempts.get(index, 0) + 1
                self.retried.append((name, error))
                self.on_retry(name, error)
                continue
            result = {"Payload": json.loads(json.dumps(answer)), "StatusCode": 200}
            return _path(result, state.get("OutputPath", "$"))


def _names(rule: dict[str, Any], error: str) -> bool:
    names = rule["ErrorEquals"]
    return (
        error in names
        or "States.ALL" in names
        or ("States.TaskFailed" in names and error != "States.Timeout")
    )


def _matches(choice: dict[str, Any], data: Any) -> bool:
    if "Or" in choice:
        return any(_matches(c, data) for c in choice["Or"])
    assert set(choice) <= {"Variable", "StringEquals", "Next"}, choice
    try:
        return bool(_path(data, choice["Variable"]) == choice["StringEquals"])
    except KeyError:
        return False


# The context object this walker provides ($$.Execution.Id is the only field the machine reads).
CONTEXT = {"Execution": {"Id": "arn:aws:states:us-east-1:123456789012:execution:rollout:test"}}


def _parameters(template: Any, data: Any) -> Any:
    if isinstance(template, dict):
        return {
            (k[:-2] if k.endswith(".$") else k): (
                _path(data, v) if k.endswith(".$") else _parameters(v, data)
            )
            for k, v in template.items()
        }
    return template


def _path(data: Any, path: str) -> Any:
    if path.startswith("$$."):  # the context object
        data, path = CONTEXT, path[1:]
    assert path == "$" or path.startswith("$."), path
    for part in path[2:].split(".") if path != "$" else []:
        data = data[part]
    return data


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    assert path.startswith("$.") and "." not in path[2:], path
    return {**data, path[2:]: value}
