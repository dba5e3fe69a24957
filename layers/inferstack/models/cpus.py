"""How many CPUs this process may really use: cgroup quota, affinity, Lambda memory.

os.cpu_count() reports the host's cores; a container with a 1-CPU quota or a
1,024 MB Lambda (0.6 vCPU) that starts that many ONNX Runtime threads thrashes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from inferstack.constants import LAMBDA_MB_PER_VCPU
from inferstack.names import ENV_LAMBDA_MEMORY_MB

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The smallest of affinity, cgroup quota and the Lambda memory share (at least 1)."""
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None]
    limits.append(os.cpu_count())
    limits.append(cgroup_cpu_quota(cgroup_root))
    memory = os.environ.get(ENV_LAMBDA_MEMORY_MB)
    if memory and memory.isdigit():
        limits.append(max(1, round(int(memory) / LAMBDA_MB_PER_VCPU)))
    return max(1, min(limit for limit in limits if limit))


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs allowed by the cgroup v2 `cpu.max` or v1 CFS quota; None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 else None
