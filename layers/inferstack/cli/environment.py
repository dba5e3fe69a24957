"""What a lifecycle command needs of a deployed environment, from SSM or from flags.

`cdk deploy` mirrors the stack's outputs to SSM under /inferstack/<env>/ (infra/stack.py);
boto3 reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>, so every command also works
against any compatible endpoint (moto's server in the tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferstack.names import (
    SSM_MODEL_BUCKET,
    SSM_ROLLOUT_STATE_MACHINE,
    SSM_TARGETS,
    ssm_parameter_name,
)

if TYPE_CHECKING:
    from inferstack.release.store import ReleaseStore


class EnvironmentError_(Exception):
    """The environment's outputs could not be read (not deployed, no access, wrong name)."""


@dataclass
class DeployedEnvironment:
    name: str
    bucket: str
    targets: dict[str, dict[str, Any]]
    state_machine: str | None

    @classmethod
    def resolve(
        cls,
        name: str,
        *,
        bucket: str | None = None,
        state_machine: str | None = None,
        targets: str | None = None,
    ) -> DeployedEnvironment:
        """Flags first; what is not given comes from SSM."""
        wanted = {
            SSM_MODEL_BUCKET: bucket,
            SSM_TARGETS: targets,
            SSM_ROLLOUT_STATE_MACHINE: state_machine,
        }
        missing = [key for key, value in wanted.items() if value is None]
        found = _ssm_values(name, missing) if missing else {}
        values = {key: wanted[key] or found.get(key) for key in wanted}
        if not values[SSM_MODEL_BUCKET]:
            raise EnvironmentError_(
                f"environment {name!r}: no {ssm_parameter_name(name, SSM_MODEL_BUCKET)} in SSM "
                "(deploy it with `cdk deploy -c env=NAME`, or pass --bucket)"
            )
        return cls(
            name=name,
            bucket=str(values[SSM_MODEL_BUCKET]),
            targets=json.loads(values[SSM_TARGETS] or "{}"),
            state_machine=values[SSM_ROLLOUT_STATE_MACHINE],
        )

    def store(self) -> ReleaseStore:
        import boto3

        from inferstack.release.store import ReleaseStore

        return ReleaseStore(boto3.client("s3"), self.bucket)

    def target_of(self, model: str) -> dict[str, Any]:
        if self.targets and model not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise EnvironmentError_(
                f"environment {self.name!r} serves no model {model!r} ({known})"
            )
        return self.targets.get(model, {})


def _ssm_values(environment: str, names: list[str]) -> dict[str, str]:
    import boto3

    parameters = {ssm_parameter_name(environment, name): name for name in names}
    try:
        answer = boto3.client("ssm").get_parameters(Names=list(parameters))
    except Exception as exc:  # credentials, endpoint, permissions
        raise EnvironmentError_(
            f"could not read SSM for environment {environment!r}: {exc}"
        ) from exc
    return {parameters[p["Name"]]: p["Value"] for p in answer.get("Parameters", [])}


def caller() -> str:
    """Who is acting, as the release history records it: the AWS identity, else the user."""
    try:
        import boto3

        return str(boto3.client("sts").get_caller_identity()["Arn"])
    except Exception:
        import getpass

        return getpass.getuser()
