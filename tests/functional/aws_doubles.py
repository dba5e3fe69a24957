"""Narrow doubles of the AWS calls moto cannot make (shared/AWS-TESTING.md), never of our code.

OneCall answers one operation of a moto-backed client (answers are checked against the
operation's output shape); every other call still goes to moto.

Lambda Invoke of an image function: moto never runs its code. The double starts the real
inference handler in-process with the environment moto recorded for the invoked version,
as Lambda would start an execution environment of that version, and keeps it warm.
"""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator


def lambda_invoke(client: Any) -> Any:
    """invoke(function, qualifier, event) -> the handler's proxy response."""
    from inferstack.bootstrap import lambda_entry_from_env

    environments: dict[tuple[str, str], Any] = {}

    def invoke(function: str, qualifier: str, event: dict[str, Any]) -> dict[str, Any]:
        key = (function, qualifier)
        if key not in environments:
            config = client.get_function_configuration(FunctionName=function, Qualifier=qualifier)
            environments[key] = lambda_entry_from_env(config["Environment"]["Variables"])
        response: dict[str, Any] = environments[key](event, None)
        return response

    return invoke


class OneCall:
    """Answers one operation on a moto-backed client; every other call still goes to moto."""

    def __init__(self, client: Any, operation: str, *answers: dict[str, Any] | Exception) -> None:
        self.calls: list[dict[str, Any]] = []
        self._answers = list(answers)
        service = client.meta.service_model.service_id.hyphenize()
        events = client.meta.events
        events.register(f"before-parameter-build.{service}.{operation}", self._record)
        events.register(f"before-call.{service}.{operation}", self._answer)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(dict(params))

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        report = ParamValidator().validate(answer, model.output_shape)
        assert not report.has_errors(), report.generate_report()
        return AWSResponse("https://double.invalid", 200, HTTPHeaders(), None), answer


def no_provisioned_concurrency(client: Any) -> OneCall:
    """GetProvisionedConcurrencyConfig as AWS answers it for an alias without provisioned
    concurrency (moto answers 404 "Not yet implemented")."""
    missing = ClientError(
        {"Error": {"Code": "ProvisionedConcurrencyConfigNotFoundException",
                   "Message": "No Provisioned Concurrency Config found for this function"}},
        "GetProvisionedConcurrencyConfig",
    )  # fmt: skip
    return OneCall(client, "GetProvisionedConcurrencyConfig", missing)
