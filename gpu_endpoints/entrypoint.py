"""Container entry point: `docker run <image> serve` is `inferstack serve`.

SageMaker starts the container with the single argument `serve`; ECS runs the image's CMD
(also `serve`). The server reads its configuration from the environment like every other
host (inferstack.settings: the model, SAGEMAKER_BIND_TO_PORT, batching, ...); the image's
ENV supplies what differs in a container (listen on all interfaces, metrics on).
The CLI runs in this process (PID 1), so SIGTERM reaches the server directly.
"""

from __future__ import annotations

import sys

from inferstack.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["serve"]))
