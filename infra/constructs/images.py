"""The container images InferStack deploys, all built from the repository root.

Each Dockerfile has its own `<Dockerfile>.dockerignore` allow-list, so CDK stages and hashes
only the files that image copies. Lambda images (inference, promoter, drift check) are built
per architecture; the GPU serving image is one asset per stack, shared by SageMaker endpoints
and ECS services.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

if TYPE_CHECKING:
    from constructs import Construct

# The Docker build context of every image (Dockerfiles COPY layers/inferstack).
REPO_ROOT = Path(__file__).resolve().parents[2]
INFERENCE_DOCKERFILE = "functions/inference/Dockerfile"
GPU_DOCKERFILE = "gpu_endpoints/Dockerfile"
_GPU_IMAGE_ID = "GpuImage"

_ARCHITECTURES: dict[str, tuple[lambda_.Architecture, ecr_assets.Platform]] = {
    "arm64": (lambda_.Architecture.ARM_64, ecr_assets.Platform.LINUX_ARM64),
    "x86_64": (lambda_.Architecture.X86_64, ecr_assets.Platform.LINUX_AMD64),
}
# Never part of an image's build context, whatever a Dockerfile's ignore file says.
_ALWAYS_EXCLUDED = (
    ".git",
    ".venv",
    "cdk.out",
    "node_modules",
    "**/node_modules",
    "tests",
    "benchmarks",
    "infra",
    "**/__pycache__",
    "**/*.py[cod]",
)


def lambda_architecture(architecture: str) -> lambda_.Architecture:
    return _ARCHITECTURES[architecture][0]


@cache
def build_context_excludes(dockerfile: str) -> tuple[str, ...]:
    """Ignore rules for a Dockerfile whose build context is the repository root.

    The rules are the Dockerfile's own `<Dockerfile>.dockerignore` (what BuildKit applies
    to a local `docker build`), so CDK stages and hashes exactly the files the image
    copies: an edit to tests or infra neither rebuilds nor re-uploads an image.
    """
    ignore_file = REPO_ROOT / f"{dockerfile}.dockerignore"
    if not ignore_file.is_file():
        raise FileNotFoundError(f"{ignore_file}: every image Dockerfile needs its ignore file")
    rules = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # The Dockerfile and its ignore file must reach the staged context for the build.
    return (*rules, *_ALWAYS_EXCLUDED, f"!{dockerfile}", f"!{dockerfile}.dockerignore")


def function_image(dockerfile: str, architecture: str) -> lambda_.DockerImageCode:
    """A function's container image, built from the repository root for `architecture`."""
    return lambda_.DockerImageCode.from_image_asset(
        directory=str(REPO_ROOT),
        file=dockerfile,
        platform=_ARCHITECTURES[architecture][1],
        exclude=list(build_context_excludes(dockerfile)),
        ignore_mode=cdk.IgnoreMode.DOCKER,
    )


def inference_image(architecture: str) -> lambda_.DockerImageCode:
    """The Lambda inference image (functions/inference/Dockerfile) for `architecture`."""
    return function_image(INFERENCE_DOCKERFILE, architecture)


def gpu_image(scope: Construct) -> ecr_assets.DockerImageAsset:
    """The GPU serving image (gpu_endpoints/Dockerfile), one asset per stack.

    SageMaker endpoints and ECS services share it, so a stack builds and pushes it once.
    """
    stack = cdk.Stack.of(scope)
    existing = stack.node.try_find_child(_GPU_IMAGE_ID)
    if isinstance(existing, ecr_assets.DockerImageAsset):
        return existing
    return ecr_assets.DockerImageAsset(
        stack,
        _GPU_IMAGE_ID,
        directory=str(REPO_ROOT),
        file=GPU_DOCKERFILE,
        platform=ecr_assets.Platform.LINUX_AMD64,
        # gpu_endpoints/Dockerfile.dockerignore: only what the image copies is staged and
        # hashed, so edits elsewhere in the repository neither rebuild nor re-push it.
        exclude=list(build_context_excludes(GPU_DOCKERFILE)),
        ignore_mode=cdk.IgnoreMode.DOCKER,
    )
