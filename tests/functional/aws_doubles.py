"""Narrow doubles of the AWS calls moto cannot make (shared/AWS-TESTING.md), never of our code.

Lambda Invoke of an image function: moto never runs its code. The double starts the real
inference handler in-process with the environment moto recorded for the invoked version,
as Lambda would start an execution environment of that version, and keeps it warm.
"""

from __future__ import annotations

from typing import Any


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
