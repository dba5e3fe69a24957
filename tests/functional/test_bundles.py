"""Bundles: what `inferstack push` builds and what the promoter unpacks. Unpacking refuses
anything but a few known regular files at the top level, and never writes past its bound."""

from __future__ import annotations

import json
import tarfile
from typing import TYPE_CHECKING

import numpy as np
import pytest

from inferstack.release.bundle import build_bundle, load_reference, open_upload
from inferstack.release.exceptions import UploadError
from inferstack.release.validate import validate_model

from . import bad_models as bad
from .conftest import DEMO_DIR, DEMO_MODEL

if TYPE_CHECKING:
    from pathlib import Path

MB = 1024 * 1024


def unpack(bundle: Path, tmp_path: Path, bound: int = MB):  # type: ignore[no-untyped-def]
    return open_upload(bundle, tmp_path / "unpacked", max_unpacked_bytes=bound)


def test_a_bundle_round_trips_model_data_reference_and_settings(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    model = bad.with_external_data(source / "weighted.onnx", location="weighted.bin")
    np.save(tmp_path / "sample.npy", np.ones((2, 4), dtype=np.float32))
    bundle = build_bundle(
        model, tmp_path / "b.tar.gz", reference=tmp_path / "sample.npy", settings={"threads": 2}
    )
    with tarfile.open(bundle) as archive:
        assert archive.getnames() == [
            "model.onnx",
            "weighted.bin",
            "reference.npy",
            "settings.json",
        ]

    upload = unpack(bundle, tmp_path)
    assert upload.kind == "bundle"
    assert upload.model_path == tmp_path / "unpacked" / "model.onnx"
    assert upload.model_path.read_bytes() == model.read_bytes()
    assert [f.name for f in upload.external_files] == ["weighted.bin"]
    assert upload.reference is not None and upload.reference.name == "reference.npy"
    assert upload.settings == {"threads": 2}
    report = validate_model(upload)
    assert report.passed, report.to_dict()
    assert report.smoke_inputs == "reference"


def test_a_single_onnx_upload_is_used_as_is(tmp_path: Path) -> None:
    upload = open_upload(DEMO_MODEL, tmp_path / "unused", max_unpacked_bytes=MB)
    assert upload == (DEMO_MODEL, [], None, {}, "onnx")
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("location", "fragment"),
    [("../secret.bin", "leaves the model's directory ('..')"), ("/etc/passwd", "is absolute")],
)
def test_build_refuses_external_data_outside_the_model_folder(
    tmp_path: Path, location: str, fragment: str
) -> None:
    model = bad.external_data_at(tmp_path / "m.onnx", location)
    with pytest.raises(UploadError) as caught:
        build_bundle(model, tmp_path / "b.tar.gz")
    assert fragment in str(caught.value)
    assert not (tmp_path / "b.tar.gz").exists()


def test_build_refuses_missing_external_data(tmp_path: Path) -> None:
    model = bad.external_data_at(tmp_path / "m.onnx", "weights.bin")
    with pytest.raises(UploadError, match=r"external data file 'weights\.bin' is missing"):
        build_bundle(model, tmp_path / "b.tar.gz")


def _info(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


MODEL = ("model.onnx", DEMO_MODEL.read_bytes())


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ([MODEL, ("../evil.sh", b"#!/bin/sh")], "'../evil.sh' is not a plain file name"),
        ([MODEL, ("/etc/cron.d/evil", b"x")], "is not a plain file name"),
        ([MODEL, ("sub/model.onnx.data", b"x")], "is not a plain file name"),
        ([_info("model.onnx", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
        ([MODEL, _info("data", tarfile.LNKTYPE, "model.onnx")], "is a link"),
        ([MODEL, _info("weights", tarfile.DIRTYPE)], "is a folder"),
        ([MODEL, _info("tty", tarfile.CHRTYPE)], "is a special file"),
        ([MODEL, MODEL], "'model.onnx' appears twice"),
        ([MODEL, ("other.onnx", MODEL[1])], "exactly one .onnx file"),
        ([("settings.json", b"{}")], "exactly one .onnx file (found: none)"),
        ([MODEL, ("notes.txt", b"hi")], "unknown file(s) in the bundle: notes.txt"),
        ([MODEL, ("settings.json", b"[1]")], "settings.json must hold a JSON object"),
        ([MODEL, ("settings.json", b"{")], "settings.json is not valid JSON"),
        ([MODEL, ("reference.npy", b"x"), ("reference.npz", b"y")], "one reference sample"),
        ([], "the bundle is empty"),
    ],
    ids=[
        "traversal",
        "absolute",
        "subfolder",
        "symlink",
        "hardlink",
        "folder",
        "device",
        "duplicate",
        "two-models",
        "no-model",
        "unknown",
        "settings-list",
        "settings-bad",
        "two-references",
        "empty",
    ],
)
def test_unsafe_or_unknown_members_are_refused(
    tmp_path: Path, members: list, fragment: str
) -> None:
    bundle = bad.tar_gz(tmp_path / "b.tar.gz", members)
    with pytest.raises(UploadError) as caught:
        unpack(bundle, tmp_path)
    assert fragment in str(caught.value)
    # Nothing escaped the work folder.
    assert not (tmp_path / "evil.sh").exists()


def test_a_bundle_missing_the_models_external_data_is_refused(tmp_path: Path) -> None:
    model = bad.external_data_at(tmp_path / "m.onnx", "model.onnx.data")
    bundle = bad.tar_gz(tmp_path / "b.tar.gz", [("model.onnx", model.read_bytes())])
    with pytest.raises(UploadError, match=r"external data is missing from the bundle: \['model"):
        unpack(bundle, tmp_path)


def test_a_gzip_bomb_stops_at_the_bound(tmp_path: Path) -> None:
    bomb = bad.gzip_bomb(tmp_path / "bomb.tar.gz", unpacked=64 * MB)
    assert bomb.stat().st_size < MB  # small on disk, 64 MiB unpacked
    with pytest.raises(UploadError, match="unpacks to more than 1048576 bytes"):
        unpack(bomb, tmp_path, bound=MB)
    written = sum(f.stat().st_size for f in (tmp_path / "unpacked").iterdir())
    assert written <= MB


def test_the_bound_counts_every_member(tmp_path: Path) -> None:
    parts = [MODEL, ("reference.npy", bytes(600_000)), ("settings.json", b"{}")]
    bundle = bad.tar_gz(tmp_path / "b.tar.gz", parts)
    with pytest.raises(UploadError, match="unpacks to more than 600000 bytes"):
        unpack(bundle, tmp_path, bound=600_000)


def test_the_gate_reports_a_bad_bundle_as_its_upload_check(tmp_path: Path) -> None:
    bundle = bad.tar_gz(tmp_path / "b.tar.gz", [MODEL, ("../evil.sh", b"x")])
    report = validate_model(bundle)
    assert report.failed_check == "upload"
    assert "'../evil.sh' is not a plain file name" in report.check("upload").detail
    assert all(c.status == "skipped" for c in report.checks[1:])


def test_a_gzip_bomb_is_rejected_by_the_gate_at_its_size_bound(tmp_path: Path) -> None:
    from inferstack.release.validate import limits_for

    bomb = bad.gzip_bomb(tmp_path / "bomb.tar.gz", unpacked=8 * MB)
    report = validate_model(bomb, limits=limits_for("lambda", max_bytes=MB))
    assert report.failed_check == "upload"
    assert "unpacks to more than" in report.check("upload").detail


def test_a_file_that_is_not_a_tar_gz_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.tar.gz"
    fake.write_bytes(DEMO_MODEL.read_bytes())
    with pytest.raises(UploadError, match=r"'model.tar.gz' is not a readable \.tar\.gz"):
        unpack(fake, tmp_path)


def test_unpacking_needs_an_empty_folder(tmp_path: Path) -> None:
    bundle = build_bundle(DEMO_MODEL, tmp_path / "b.tar.gz")
    (tmp_path / "unpacked").mkdir()
    (tmp_path / "unpacked" / "model.onnx").write_bytes(b"old")
    with pytest.raises(UploadError, match="it is not empty"):
        unpack(bundle, tmp_path)


def test_load_reference_reads_npy_and_npz(tmp_path: Path) -> None:
    sample = load_reference(DEMO_DIR / "reference_sample.npy", ["features"])
    assert list(sample) == ["features"] and sample["features"].shape == (133, 13)
    np.savez(tmp_path / "r.npz", a=np.zeros(2), b=np.ones(3))
    assert {k: v.shape for k, v in load_reference(tmp_path / "r.npz").items()} == {
        "a": (2,),
        "b": (3,),
    }
    with pytest.raises(UploadError, match="the model has 2 inputs"):
        load_reference(DEMO_DIR / "reference_sample.npy", ["a", "b"])
    np.save(tmp_path / "p.npy", np.array([{"x": 1}], dtype=object))
    with pytest.raises(UploadError, match="unreadable"):
        load_reference(tmp_path / "p.npy")


def test_settings_travel_as_json(tmp_path: Path) -> None:
    bundle = build_bundle(DEMO_MODEL, tmp_path / "b.tar.gz", settings={"canary": {"weight": 0.1}})
    upload = unpack(bundle, tmp_path)
    assert upload.settings == {"canary": {"weight": 0.1}}
    assert json.loads((tmp_path / "unpacked" / "settings.json").read_text()) == upload.settings
