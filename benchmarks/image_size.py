"""Image size: what functions/inference/requirements.txt installs, in MB (10^6 bytes).

`pip install --target <tmp> --only-binary=:all: -r functions/inference/requirements.txt`,
twice: as specified, for this interpreter (pip byte-compiles as it installs); and as
functions/inference/Dockerfile builds the image, CPython 3.12 manylinux x86_64 wheels
then `compileall`. Sizes are apparent file sizes; packages are attributed through each
distribution's RECORD (files it does not list, by the top-level directory they sit in).
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import FUNCTION_DIR, Config

NAME = "image_size"
TARGET = "none set: report the installed size of the Lambda image's Python dependencies"
REQUIREMENTS = FUNCTION_DIR / "requirements.txt"
MB = 1e6


# The Lambda base image of functions/inference/Dockerfile: public.ecr.aws/lambda/python:3.12.
IMAGE_PYTHON = "3.12"
IMAGE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def run(config: Config) -> dict[str, Any]:
    if not REQUIREMENTS.is_file():
        return {
            "name": NAME,
            "target": TARGET,
            "met": None,
            "results": {"status": "missing", "requirements": str(REQUIREMENTS)},
        }
    variants: dict[str, Any] = {}
    # 1. The command as specified, for this interpreter (pip byte-compiles as it installs).
    variants["this_interpreter"] = _install([], compile_with=None)
    variants["this_interpreter"]["python"] = sys.version.split()[0]
    variants["this_interpreter"]["platform"] = sysconfig.get_platform()
    # 2. As the Dockerfile builds it: CPython 3.12 manylinux x86_64 wheels, then
    #    `compileall` (run here with a local python3.12 when there is one).
    python312 = _python(IMAGE_PYTHON)
    cross = ["--python-version", IMAGE_PYTHON, "--implementation", "cp", "--no-compile"]
    cross += ["--abi", "cp" + IMAGE_PYTHON.replace(".", "")]
    for tag in IMAGE_PLATFORMS:
        cross += ["--platform", tag]
    variants["lambda_image"] = _install(cross, compile_with=python312)
    variants["lambda_image"]["python"] = IMAGE_PYTHON
    variants["lambda_image"]["platform"] = "manylinux x86_64"
    variants["lambda_image"]["bytecode"] = (
        f"compileall by a local python{IMAGE_PYTHON}"
        if python312
        else f"none (no local python{IMAGE_PYTHON}): sources only"
    )
    measured = all(v.get("status") == "measured" for v in variants.values())
    return {
        "name": NAME,
        "target": TARGET,
        "met": None,
        "results": {
            "status": "measured" if measured else "failed",
            "requirements": str(REQUIREMENTS.relative_to(FUNCTION_DIR.parent.parent)),
            "requirements_lines": _requirement_lines(),
            "variants": variants,
        },
    }


def _python(version: str) -> str | None:
    """A working local `python3.12` (on PATH, or a pyenv install), if any."""
    found = [shutil.which(f"python{version}")]
    found += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}"))
    )
    for candidate in filter(None, found):
        check = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode == 0 and check.stdout.strip() == version:
            return candidate
    return None


def _install(extra: list[str], compile_with: str | None) -> dict[str, Any]:
    target = Path(tempfile.mkdtemp(prefix="inferstack-image-size-"))
    try:
        began = time.perf_counter()
        argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        argv += ["--no-input", "--target", str(target), "--only-binary=:all:", *extra]
        argv += ["-r", str(REQUIREMENTS)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            return {"status": "pip failed", "stderr_tail": done.stderr[-2000:]}
        if compile_with is not None:
            subprocess.run(
                [compile_with, "-m", "compileall", "-q", "-j", "0", str(target)],
                capture_output=True,
                check=False,
                timeout=900,
            )
        return {
            "status": "measured",
            "pip_args": " ".join(["--target <tmp>", "--only-binary=:all:", *extra]),
            "install_s": round(time.perf_counter() - began, 1),
            **measure(target),
        }
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _requirement_lines() -> list[str]:
    lines = []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def measure(target: Path, top: int = 10) -> dict[str, Any]:
    sizes: dict[Path, int] = {}
    for path in target.rglob("*"):
        if path.is_file() and not path.is_symlink():
            sizes[path.resolve()] = path.stat().st_size
    total = sum(sizes.values())
    pycache = sum(size for path, size in sizes.items() if "__pycache__" in path.parts)

    per_dist: dict[str, int] = {}
    versions: dict[str, str] = {}
    claimed: set[Path] = set()
    for record in target.glob("*.dist-info/RECORD"):
        dist = record.parent.name.removesuffix(".dist-info")
        name, _, version = dist.partition("-")
        versions[name] = version
        owned = 0
        with record.open(newline="") as f:
            for row in csv.reader(f):
                if not row:
                    continue
                path = (target / row[0]).resolve()
                if path in sizes and path not in claimed:
                    claimed.add(path)
                    owned += sizes[path]
        per_dist[name] = owned
    # Files no RECORD lists: attributed by the top-level directory they sit in.
    top_dirs = _top_level_owner(target)
    for path, size in sizes.items():
        if path in claimed:
            continue
        owner = top_dirs.get(path.relative_to(target.resolve()).parts[0], "(unattributed)")
        per_dist[owner] = per_dist.get(owner, 0) + size
    ranked = sorted(per_dist.items(), key=lambda kv: -kv[1])
    return {
        "total_mb": round(total / MB, 1),
        "total_bytes": total,
        "pycache_mb": round(pycache / MB, 1),
        "files": len(sizes),
        "distributions": len(versions),
        "top_packages": [
            {
                "package": name,
                "version": versions.get(name, ""),
                "mb": round(size / MB, 1),
                "share": round(size / total, 3) if total else 0.0,
            }
            for name, size in ranked[:top]
        ],
    }


def _top_level_owner(target: Path) -> dict[str, str]:
    """Top-level directory in the target -> the distribution whose RECORD lists files in it."""
    owners: dict[str, str] = {}
    root = target.resolve()
    for record in target.glob("*.dist-info/RECORD"):
        name = record.parent.name.removesuffix(".dist-info").partition("-")[0]
        with record.open(newline="") as f:
            for row in csv.reader(f):
                if row and not row[0].startswith(".."):
                    first = Path(row[0]).parts[0]
                    if (root / first) != record.parent.resolve():
                        owners.setdefault(first, name)
    return owners


def markdown(result: dict[str, Any]) -> list[str]:
    from benchmarks.common import md_table

    res = result["results"]
    if res.get("status") == "missing":
        return [f"**missing**: no `{res['requirements']}` when this ran."]
    out = [f"`{res['requirements']}`: {len(res['requirements_lines'])} pinned requirements."]
    for label, v in res["variants"].items():
        out.append("")
        if v.get("status") != "measured":
            out.append(f"{label}: **{v.get('status')}**")
            continue
        extra = f", bytecode: {v['bytecode']}" if "bytecode" in v else ""
        out += [
            f"**{label}** (Python {v['python']}, {v['platform']}{extra}): "
            f"**{v['total_mb']} MB** in {v['files']} files, {v['distributions']} "
            f"distributions ({v['pycache_mb']} MB of `__pycache__`).",
            "",
            md_table(
                ["package", "version", "MB", "share"],
                [
                    [p["package"], p["version"], p["mb"], f"{p['share'] * 100:.1f}%"]
                    for p in v["top_packages"]
                ],
            ),
        ]
    return out
