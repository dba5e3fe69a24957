"""Image size: what each Lambda function image's requirements.txt installs, in MB (10^6 bytes).

One measurement per image (functions/<image>/requirements.txt; the inference function, the
drift check and the model promoter), each the same way: `pip install --target <tmp>
--only-binary=:all: -r requirements.txt`, as specified for this interpreter (pip
byte-compiles as it installs); and as the image's Dockerfile builds it, for the Python of its
base image (the last FROM line, public.ecr.aws/lambda/python:3.12) with manylinux wheels,
then `compileall`: x86_64, and arm64 (aarch64), the architecture the stack deploys the three
functions on by default (infra/config.py, infra/constructs/drift.py and promoter.py). Sizes
are apparent file sizes; packages are attributed through each distribution's RECORD (files
it does not list, by the top-level directory they sit in). Beside them: the InferStack code
the Dockerfile copies (layers/inferstack less its .dockerignore's exclusions, and the
handler), compiled the same way. The base image itself is not counted.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Config, md_table

NAME = "image_size"
TARGET = "none set: report the installed size of each Lambda image's Python dependencies"
IMAGES = ("inference", "drift_check", "model_promoter")
FUNCTIONS_DIR = REPO / "functions"
CODE = REPO / "layers" / "inferstack"
HANDLER = "handler.py"
MB = 1e6
# The Dockerfile variants: label -> manylinux platform tags of one architecture.
ARCHITECTURES = {
    "lambda_image": ("x86_64", "manylinux x86_64"),
    "lambda_image_arm64": ("aarch64", "manylinux aarch64 (arm64)"),
}
MANYLINUX = ("manylinux_2_28_{}", "manylinux_2_17_{}", "manylinux2014_{}")
_FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)
_PYTHON_TAG = re.compile(r"python:(\d+\.\d+)")


def run(config: Config) -> dict[str, Any]:
    images = {image: measure_image(FUNCTIONS_DIR / image) for image in IMAGES}
    measured = all(entry.get("status") == "measured" for entry in images.values())
    return {
        "name": NAME,
        "target": TARGET,
        "met": None,
        "results": {"status": "measured" if measured else "failed", "images": images},
    }


def measure_image(folder: Path) -> dict[str, Any]:
    """One function image: its requirements installed each way, and its own code."""
    requirements, dockerfile = folder / "requirements.txt", folder / "Dockerfile"
    if not requirements.is_file() or not dockerfile.is_file():
        return {"status": "missing", "requirements": _relative(requirements)}
    base_image, image_python = base_image_python(dockerfile)
    variants: dict[str, Any] = {}
    # 1. The command as specified, for this interpreter (pip byte-compiles as it installs).
    variants["this_interpreter"] = _install(requirements, [], compile_with=None)
    variants["this_interpreter"]["python"] = sys.version.split()[0]
    variants["this_interpreter"]["platform"] = sysconfig.get_platform()
    variants["this_interpreter"]["bytecode"] = "pip's, as it installs"
    # 2. As the Dockerfile builds it: the base image's CPython, manylinux wheels, then
    #    `compileall` (run here with a local python of that version when there is one).
    local = _python(image_python)
    bytecode = (
        f"compileall by a local python{image_python}"
        if local
        else f"none (no local python{image_python}): sources only"
    )
    for label, (machine, platform) in ARCHITECTURES.items():
        cross = ["--python-version", image_python, "--implementation", "cp", "--no-compile"]
        cross += ["--abi", "cp" + image_python.replace(".", "")]
        for tag in MANYLINUX:
            cross += ["--platform", tag.format(machine)]
        variants[label] = _install(requirements, cross, compile_with=local)
        variants[label] |= {"python": image_python, "platform": platform, "bytecode": bytecode}
    return {
        "status": "measured"
        if all(v.get("status") == "measured" for v in variants.values())
        else "failed",
        "requirements": _relative(requirements),
        "requirements_lines": _requirement_lines(requirements),
        "dockerfile": _relative(dockerfile),
        "base_image": base_image,
        "code": _code(folder, compile_with=local),
        "variants": variants,
    }


def base_image_python(dockerfile: Path) -> tuple[str, str]:
    """The runtime stage's base image (the last FROM) and its Python version."""
    images = _FROM.findall(dockerfile.read_text())
    match = _PYTHON_TAG.search(images[-1]) if images else None
    if match is None:
        raise ValueError(f"{dockerfile}: no FROM of a python:<version> base image")
    return images[-1], match.group(1)


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


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


def _install(requirements: Path, extra: list[str], compile_with: str | None) -> dict[str, Any]:
    target = Path(tempfile.mkdtemp(prefix="inferstack-image-size-"))
    try:
        began = time.perf_counter()
        argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        argv += ["--no-input", "--target", str(target), "--only-binary=:all:", *extra]
        argv += ["-r", str(requirements)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            return {"status": "pip failed", "stderr_tail": done.stderr[-2000:]}
        _compile(target, compile_with)
        return {
            "status": "measured",
            "pip_args": " ".join(["--target <tmp>", "--only-binary=:all:", *extra]),
            "install_s": round(time.perf_counter() - began, 1),
            **measure(target),
        }
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _compile(target: Path, python: str | None) -> None:
    if python is not None:
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", str(target)],
            capture_output=True,
            check=False,
            timeout=900,
        )


def _code(folder: Path, compile_with: str | None) -> dict[str, Any]:
    """What the Dockerfile copies besides the wheels: layers/inferstack (less what its
    .dockerignore keeps out everywhere) and the handler, compiled as the image does."""
    ignore = folder / "Dockerfile.dockerignore"
    patterns = [
        line.strip().removeprefix("**/")
        for line in (ignore.read_text().splitlines() if ignore.is_file() else [])
        if line.strip().startswith("**/")
    ]
    target = Path(tempfile.mkdtemp(prefix="inferstack-image-code-"))
    try:
        shutil.copytree(CODE, target / "inferstack", ignore=shutil.ignore_patterns(*patterns))
        shutil.copy2(folder / HANDLER, target / HANDLER)
        _compile(target, compile_with)
        files = [p for p in target.rglob("*") if p.is_file()]
        return {
            "mb": round(sum(p.stat().st_size for p in files) / MB, 1),
            "files": len(files),
            "copied": f"{_relative(CODE)}/, {_relative(folder / HANDLER)}",
        }
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _requirement_lines(requirements: Path) -> list[str]:
    lines = []
    for raw in requirements.read_text().splitlines():
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
        parts = path.relative_to(target.resolve()).parts
        first = parts[0]
        if first == "__pycache__" and len(parts) == 2:  # a top-level module's compileall output
            first = parts[1].partition(".")[0] + ".py"
        owner = top_dirs.get(first, "(unattributed)")
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


VARIANT_COLUMNS = {
    "MB": "total_mb",
    "files": "files",
    "distributions": "distributions",
    "`__pycache__` MB": "pycache_mb",
    "Python": "python",
    "platform": "platform",
    "bytecode": "bytecode",
}


def markdown(result: dict[str, Any]) -> list[str]:
    res = result["results"]
    # A result from before the drift issue measured the inference image alone, at the top.
    images = res.get("images") or {"inference": res}
    rows, packages = [], []
    for image, entry in images.items():
        if entry.get("status") == "missing":
            rows.append([image, f"missing: no `{entry['requirements']}`"])
            continue
        for label, v in entry["variants"].items():
            if v.get("status") != "measured":
                rows.append([image, label, f"**{v.get('status')}**"])
                continue
            rows.append([image, label, *(v.get(key) for key in VARIANT_COLUMNS.values())])
        code = entry.get("code")
        packages += [
            "",
            f"**{image}**: `{entry['requirements']}`, {len(entry['requirements_lines'])} pinned "
            "requirements"
            + (
                f"; base image `{entry['base_image']}` (not counted)"
                if "base_image" in entry
                else ""
            )
            + (f"; its own code ({code['copied']}, compiled): {code['mb']} MB" if code else "")
            + ". MB per package:",
            "",
            _packages_table(entry["variants"]),
        ]
    return [
        "Installed size of each function image's pinned requirements (`pip install --target`), "
        "in MB of 10^6 bytes; `lambda_image*` as the Dockerfile builds it, for the base image's "
        "Python with manylinux wheels.",
        "",
        md_table(["image", "variant", *VARIANT_COLUMNS], rows),
        *packages,
    ]


def _packages_table(variants: dict[str, Any]) -> str:
    """The largest packages, one column per variant; their share of the first Lambda image
    variant's total."""
    measured = {k: v for k, v in variants.items() if v.get("status") == "measured"}
    sizes = {k: {p["package"]: p for p in v["top_packages"]} for k, v in measured.items()}
    lead = next((k for k in measured if k.startswith("lambda_image")), next(iter(measured), ""))
    order = list(sizes.get(lead, {}))
    order += [p for table in sizes.values() for p in table if p not in order]
    rows = []
    for name in order:
        entry = next(table[name] for table in sizes.values() if name in table)
        row = [name, entry["version"]]
        row += [table[name]["mb"] if name in table else None for table in sizes.values()]
        share = sizes.get(lead, {}).get(name)
        rows.append([*row, f"{share['share'] * 100:.1f}%" if share else None])
    return md_table(["package", "version", *measured, f"share of {lead}"], rows)
