"""What one upload is: a single `.onnx` file, or one bundle (`.tar.gz`).

A bundle holds, at its top level and nothing else: the model (`model.onnx`), every
external-data file the model names, an optional reference sample (`reference.npy` for a
single-input model, `reference.npz` mapping input names to arrays) and optional per-model
settings (`settings.json`, a JSON object). `build_bundle` makes one (`inferstack push`);
`open_upload` unpacks one safely (the promoter and `inferstack validate`).
"""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, cast

from inferstack.release.exceptions import UploadError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import onnx

MODEL_FILE = "model.onnx"
SETTINGS_FILE = "settings.json"
REFERENCE_FILES = ("reference.npy", "reference.npz")
BUNDLE_SUFFIXES = (".tar.gz", ".tgz")
# A bundle is a model and a few companions: more members than this is not one.
MAX_MEMBERS = 256
MAX_SETTINGS_BYTES = 64 * 1024
# Tar headers (512-byte blocks, pax records) on top of the files' own bytes.
_HEADER_ALLOWANCE = 1024 * 1024
_CHUNK = 1024 * 1024


class Upload(NamedTuple):
    """One upload, ready for the validation gate; every path is a local file."""

    model_path: Path
    external_files: list[Path]
    reference: Path | None
    settings: dict[str, Any]
    kind: Literal["onnx", "bundle"]


def is_bundle(path: Path | str) -> bool:
    return str(path).lower().endswith(BUNDLE_SUFFIXES)


# --------------------------------------------------------------------------- external data


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """The `location` of every tensor stored outside the model file, in order, once each.

    Read from a model loaded with `load_external_data=False`: nothing outside the file is
    opened. Covers initializers, sparse initializers and tensors in node attributes, in
    subgraphs too (https://onnx.ai/onnx/repo-docs/ExternalData.html).
    """
    found: dict[str, None] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            entries = {entry.key: entry.value for entry in tensor.external_data}
            found.setdefault(entries.get("location", ""), None)
    return list(found)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def location_problem(location: str) -> str | None:
    """Why an external-data location may not be followed, or None when it stays inside the
    model's own directory (a relative path without `..`; ONNX resolves it from there)."""
    if not location:
        return "an external tensor names no file"
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or location.startswith("\\"):
        return f"external data path '{location}' is absolute"
    if ".." in posix.parts or ".." in windows.parts:
        return f"external data path '{location}' leaves the model's directory ('..')"
    return None


def has_external_data(model_path: Path) -> bool:
    """The model keeps tensors in other files (it must be uploaded as a bundle)."""
    try:
        return bool(_read_locations(model_path))
    except UploadError:
        return False  # not ONNX: the gate says so, check by check


def _read_locations(model_path: Path) -> list[str]:
    import onnx

    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not ONNX
        raise UploadError(f"'{model_path.name}' is not an ONNX model: {_one_line(exc)}") from exc
    return external_data_locations(model)


def _flat_locations(model_path: Path) -> list[str]:
    """The model's external-data files, which a bundle holds beside it at the top level."""
    locations = _read_locations(model_path)
    for location in locations:
        problem = location_problem(location)
        if problem:
            raise UploadError(problem)
        if len(PurePosixPath(location).parts) != 1 or "\\" in location:
            raise UploadError(
                f"external data path '{location}' is in a subfolder: a bundle holds its files "
                "side by side; save the model with its data beside it "
                "(onnx.save(model, path, save_as_external_data=True, location='model.onnx.data'))"
            )
        if location in (MODEL_FILE, SETTINGS_FILE, *REFERENCE_FILES):
            raise UploadError(f"external data file '{location}' has a name a bundle reserves")
    return locations


# --------------------------------------------------------------------------- build


def build_bundle(
    model: Path,
    out: Path,
    *,
    reference: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write `out` (.tar.gz): the model as model.onnx, its external data, the reference sample
    and the settings. Files are added as plain files, owner and times cleared."""
    model = Path(model)
    locations = _flat_locations(model)
    members: list[tuple[str, Path | bytes]] = [(MODEL_FILE, model)]
    for location in locations:
        data_file = model.parent / location
        if not data_file.is_file():
            raise UploadError(f"the model's external data file '{location}' is missing")
        members.append((location, data_file))
    if reference is not None:
        suffix = Path(reference).suffix.lower()
        if suffix not in (".npy", ".npz"):
            raise UploadError("a reference sample is a .npy (one input) or .npz (input names)")
        members.append((f"reference{suffix}", Path(reference)))
    if settings is not None:
        members.append((SETTINGS_FILE, json.dumps(settings, sort_keys=True).encode()))
    out = Path(out)
    with tarfile.open(out, "w:gz") as archive:
        for name, source in members:
            _add(archive, name, source)
    return out


def _add(archive: tarfile.TarFile, name: str, source: Path | bytes) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    if isinstance(source, bytes):
        import io

        info.size = len(source)
        archive.addfile(info, io.BytesIO(source))
        return
    info.size = source.stat().st_size
    with source.open("rb") as stream:
        archive.addfile(info, stream)


# --------------------------------------------------------------------------- open


def open_upload(path: Path, workdir: Path, *, max_unpacked_bytes: int) -> Upload:
    """The upload at `path` as local files: a single .onnx is used as is; a bundle is unpacked
    into `workdir` (which must be empty), never writing more than `max_unpacked_bytes`."""
    path = Path(path)
    if not path.is_file():
        raise UploadError(f"no such file: {path.name}")
    if not is_bundle(path):
        if path.suffix.lower() != ".onnx":
            raise UploadError(f"'{path.name}' is neither a .onnx model nor a .tar.gz bundle")
        return Upload(path, [], None, {}, "onnx")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise UploadError(f"cannot unpack a bundle into {workdir}: it is not empty")
    names = _unpack(path, workdir, max_unpacked_bytes)
    return _upload_from(workdir, names)


def _unpack(path: Path, workdir: Path, max_bytes: int) -> list[str]:
    """Stream the archive, member by member, with our own checks and the stdlib's 'data'
    filter (https://docs.python.org/3.11/library/tarfile.html#tarfile.data_filter)."""
    names: list[str] = []
    written = 0
    try:
        with gzip.open(path, "rb") as raw:
            stream = cast("IO[bytes]", _Bounded(raw, max_bytes + _HEADER_ALLOWANCE))
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    name = _member_name(member, names)
                    tarfile.data_filter(member, str(workdir))
                    if written + member.size > max_bytes:
                        raise UploadError(_too_big(max_bytes))
                    source = archive.extractfile(member)
                    if source is None:  # pragma: no cover - regular files always have data
                        raise UploadError(f"bundle member '{name}' has no data")
                    written += _copy(source, workdir / name, max_bytes - written)
                    names.append(name)
    except UploadError:
        raise
    except tarfile.FilterError as exc:
        raise UploadError(f"unsafe bundle member: {exc}") from exc
    except (OSError, EOFError, tarfile.TarError, gzip.BadGzipFile) as exc:
        raise UploadError(f"'{path.name}' is not a readable .tar.gz: {_one_line(exc)}") from exc
    if not names:
        raise UploadError("the bundle is empty")
    return names


def _member_name(member: tarfile.TarInfo, seen: list[str]) -> str:
    name = member.name
    if name.startswith("./"):
        name = name[2:]
    if not member.isreg():
        kind = "folder" if member.isdir() else "link" if member.issym() or member.islnk() else ""
        raise UploadError(
            f"bundle member '{name}' is a {kind or 'special file'}: a bundle holds only "
            "regular files at its top level"
        )
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UploadError(f"bundle member '{name}' is not a plain file name at the top level")
    if name in seen:
        raise UploadError(f"bundle member '{name}' appears twice")
    if len(seen) >= MAX_MEMBERS:
        raise UploadError(f"the bundle has more than {MAX_MEMBERS} files")
    return name


def _copy(source: IO[bytes], target: Path, budget: int) -> int:
    copied = 0
    with target.open("xb") as sink:
        while chunk := source.read(_CHUNK):
            copied += len(chunk)
            if copied > budget:
                raise UploadError(_too_big(budget))
            sink.write(chunk)
    return copied


def _upload_from(workdir: Path, names: list[str]) -> Upload:
    models = [name for name in names if name.lower().endswith(".onnx")]
    if len(models) != 1:
        found = ", ".join(models) or "none"
        raise UploadError(f"a bundle holds exactly one .onnx file (found: {found})")
    model_path = workdir / models[0]
    locations = _flat_locations(model_path)
    missing = [location for location in locations if location not in names]
    if missing:
        raise UploadError(f"the model's external data is missing from the bundle: {missing}")
    references = [name for name in names if name in REFERENCE_FILES]
    if len(references) > 1:
        raise UploadError("a bundle holds one reference sample: reference.npy or reference.npz")
    known = {models[0], SETTINGS_FILE, *REFERENCE_FILES, *locations}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UploadError(
            f"unknown file(s) in the bundle: {', '.join(unknown)} (a bundle holds the model, "
            "its external data, reference.npy|.npz and settings.json)"
        )
    settings = _settings(workdir / SETTINGS_FILE) if SETTINGS_FILE in names else {}
    return Upload(
        model_path=model_path,
        external_files=[workdir / location for location in locations],
        reference=workdir / references[0] if references else None,
        settings=settings,
        kind="bundle",
    )


def _settings(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_SETTINGS_BYTES:
        raise UploadError(f"settings.json is over {MAX_SETTINGS_BYTES // 1024} KiB")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UploadError(f"settings.json is not valid JSON: {_one_line(exc)}") from exc
    if not isinstance(value, dict):
        raise UploadError("settings.json must hold a JSON object")
    return value


# --------------------------------------------------------------------------- reference


def load_reference(path: Path, input_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """A reference sample as model inputs: a .npy is the model's single input (named by
    `input_names` when given), a .npz maps input names to arrays. Pickles are refused."""
    import numpy as np

    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UploadError(
            f"reference sample '{path.name}' is unreadable: {_one_line(exc)}"
        ) from exc
    if not isinstance(array, np.ndarray):
        raise UploadError(f"reference sample '{path.name}' is not one array")
    if input_names is None:
        return {"": array}
    if len(input_names) != 1:
        raise UploadError(
            f"a .npy reference is one input, but the model has {len(input_names)} inputs: "
            "give a .npz that maps each input name to its array"
        )
    return {input_names[0]: array}


# --------------------------------------------------------------------------- helpers


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Bounded:
    """A read-only stream that fails once more than `limit` bytes were read through it: the
    decompressed size of a gzip bomb is bounded before tarfile buffers any of it."""

    def __init__(self, stream: _Readable, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        want = self._limit - self._read + 1 if size < 0 else size
        data = self._stream.read(want)
        self._read += len(data)
        if self._read > self._limit:
            raise UploadError(_too_big(self._limit - _HEADER_ALLOWANCE))
        return data


def _too_big(limit: int) -> str:
    return f"the bundle unpacks to more than {limit} bytes (the bound for this model)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:300] or type(exc).__name__
