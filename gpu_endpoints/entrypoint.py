"""Container entry point: maps SageMaker's `docker run <image> serve` onto `inferstack serve`.

SageMaker starts the container with the single argument `serve`; ECS runs the image's CMD
(also `serve`). Either way the server must listen on all interfaces, on the port SageMaker
assigns (SAGEMAKER_BIND_TO_PORT, 8080 when absent), serving the model the environment names.
The process is replaced (exec), so SIGTERM reaches the server directly.
"""

from __future__ import annotations

import os
import sys


def serve_command(args: list[str], env: dict[str, str]) -> list[str]:
    command = [sys.executable, "-m", "inferstack.cli"]
    if args and args[0] != "serve":
        return command + args  # anything else goes to the CLI untouched (`--help`)
    port = env.get("SAGEMAKER_BIND_TO_PORT") or "8080"
    # Inside a container: SageMaker and the NLB reach the server from outside it.
    command += ["serve", "--host", "0.0.0.0", "--port", port, "--metrics"]  # noqa: S104
    name, uri = env.get("INFERSTACK_MODEL_NAME"), env.get("INFERSTACK_MODEL_URI")
    if name and uri:
        command += ["--model", f"{name}={uri}"]
    return command + args[1:]


def main() -> None:
    command = serve_command(sys.argv[1:], dict(os.environ))
    os.execv(command[0], command)  # noqa: S606 - exec without a shell, on purpose


if __name__ == "__main__":
    main()
