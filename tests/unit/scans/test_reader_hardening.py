"""Issue 25, "Readers decode only what they document": image folders take PNG/JPEG by content with bounded
memory, dataset folders never follow links, every file of a drop is read or named in extra_files, and the
DICOM PHI check reads every file that is DICOM by content, whatever it is called."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from integrity.errors import ArtifactReadError, CairnError, UnsafePathError
from integrity.intake.catalog import CatalogError, parse_catalog
from integrity.scans.datasets import PHI_FIELDS, ValidationReport, validate_dataset
from integrity.scans.images import (
    ImageLimits,
    decode_image,
    image_header,
    read_files,
    read_images,
)

REPO = Path(__file__).resolve().parents[3]


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _grey(value: int, size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8))


def _png(value: int = 100, size: tuple[int, int] = (8, 8)) -> bytes:
    return _encoded(_grey(value, size), "PNG")


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _classes(root: Path, count: int = 3) -> Path:
    """A plain image folder: one sub-folder per class, PNG and JPEG."""
    files = {f"cat/{i}.png": _png(10 + i) for i in range(count)}
    files |= {f"dog/{i}.jpg": _encoded(_grey(200 + i), "JPEG") for i in range(count)}
    return _folder(root, files)


def _failed(report: ValidationReport) -> dict[str, str]:
    return {o.name: o.detail for o in report.outcomes if not o.passed and o.severity == "error"}


# -- image folders: PNG/JPEG by content ---------------------------------------------------------------------


def test_a_plain_png_and_jpeg_folder_still_reads(tmp_path: Path) -> None:
    images = read_images(read_files(_classes(tmp_path / "ok")), where=tmp_path / "ok")
    assert images.images.shape == (6, 1, 8, 8) and images.class_names == ("cat", "dog")
    assert set(images.read) == set(images.names) and images.layout == "files"
    assert int(images.images[0].max()) == 10


def _others() -> dict[str, bytes]:
    rgb = Image.new("RGB", (8, 8), (10, 20, 30))
    return {"EPS": _encoded(rgb, "EPS"), "BMP": _encoded(rgb, "BMP"), "TIFF": _encoded(rgb, "TIFF"),
            "PPM": _encoded(rgb, "PPM"), "GIF": _encoded(rgb, "GIF"), "WebP": _encoded(rgb, "WEBP")}


@pytest.mark.parametrize("kind", ["EPS", "BMP", "TIFF", "PPM", "GIF", "WebP"])
def test_other_formats_named_png_are_refused_naming_the_file(tmp_path: Path, kind: str) -> None:
    data = _others()[kind]
    root = _classes(tmp_path / "drop")
    (root / "cat" / "sneaky.png").write_bytes(data)
    with pytest.raises(ArtifactReadError, match=r"cat/sneaky\.png: .*not PNG or JPEG"):
        read_images(read_files(root), where=root)
    with pytest.raises(ArtifactReadError, match="not PNG or JPEG"):
        decode_image(data, "x.png")


def test_eps_named_png_never_reaches_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "gs-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks for gs again, on this PATH
    monkeypatch.setattr(EpsImagePlugin, "gs_windows_binary", None)
    root = _classes(tmp_path / "drop")
    (root / "dog" / "0.png").write_bytes(_others()["EPS"])
    (root / "dog" / "0.jpg").unlink()
    with pytest.raises(ArtifactReadError, match=r"dog/0\.png: PostScript/EPS content"):
        read_images(read_files(root), where=root)
    from integrity.cli.main import main

    assert main(["screen", str(root), "--json"]) == 2
    assert not marker.exists(), "Ghostscript was run on an EPS named .png"


def test_content_and_suffix_must_agree(tmp_path: Path) -> None:
    jpeg = _encoded(_grey(7), "JPEG")
    with pytest.raises(ArtifactReadError, match=r"x\.png: JPEG content under a \.png name"):
        decode_image(jpeg, "x.png")
    with pytest.raises(ArtifactReadError, match=r"PNG content under a \.jpg name"):
        decode_image(_png(), "x.jpg")
    assert decode_image(jpeg).shape == (8, 8)  # bytes without a name: by content alone


# -- decompression bombs and size limits, checked before decoding --------------------------------------------


def test_a_6000_by_6000_png_bomb_is_refused_undecoded() -> None:
    bomb = _png(0, (6000, 6000))
    assert len(bomb) < 100_000  # a tiny file
    with pytest.raises(ArtifactReadError, match=r"6000 x 6000 pixels.*refused undecoded"):
        image_header(bomb, "bomb.png")
    with pytest.raises(ArtifactReadError, match="refused undecoded"):
        decode_image(bomb, "bomb.png")


def test_twelve_rgb_bombs_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    """The attack of the issue: 12 tiny PNGs that decode to 1.3 GB. Measured in a fresh interpreter."""
    bomb = _encoded(Image.new("RGB", (6000, 6000)), "PNG")
    root = _folder(tmp_path / "bombs", {f"{c}/{i}.png": bomb for c in ("a", "b") for i in range(6)})
    probe = textwrap.dedent(f"""
        import resource
        from integrity.errors import ArtifactReadError
        from integrity.scans.images import read_files, read_images
        files = read_files({str(root)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_images(files, where="bombs")
        except ArtifactReadError as error:
            assert "refused undecoded" in str(error), error
        else:
            raise SystemExit("not refused")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) < 64 * 1024, f"peak grew by {run.stdout.split()[-1]} KiB"


def test_the_folder_total_is_checked_before_decoding(tmp_path: Path) -> None:
    files = {f"{c}/{i}.png": _png(i, (64, 64)) for c in ("a", "b") for i in range(10)}
    with pytest.raises(ArtifactReadError, match=r"20 images decode to 81920 bytes, over the 50000 byte limit"):
        read_images(files, where="small", limits=ImageLimits(max_total_bytes=50_000))
    assert read_images(files, where="small").images.shape == (20, 1, 64, 64)
    big = _png(0, (4096, 4096))  # at the per-image limit; 130 of them exceed the default dataset total (2 GiB)
    with pytest.raises(ArtifactReadError, match="over the 2147483648 byte limit"):
        read_images({f"{c}/{i}.png": big for c in ("a", "b") for i in range(65)}, where="many")


def test_the_dataset_total_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from integrity.errors import UsageError

    files = {f"{c}/{i}.png": _png(i, (64, 64)) for c in ("a", "b") for i in range(10)}
    monkeypatch.setenv("CAIRN_MAX_IMAGE_BYTES", "1048576")
    assert read_images(files, where="small").images.shape == (20, 1, 64, 64)
    files = {f"{c}/{i}.png": _png(i, (512, 512)) for c in ("a", "b") for i in range(5)}
    with pytest.raises(ArtifactReadError, match="over the 1048576 byte limit"):
        read_images(files, where="small")
    monkeypatch.setenv("CAIRN_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(UsageError, match="CAIRN_MAX_IMAGE_BYTES"):
        read_images(files, where="small")


def test_an_npz_that_inflates_past_the_limit_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=np.zeros((4000, 64, 64), np.uint8), labels=np.zeros(4000, np.int64))
    with pytest.raises(ArtifactReadError, match=r"inflate to .* over the 1000000 byte limit"):
        read_images({"d.npz": buffer.getvalue()}, where="npz", limits=ImageLimits(max_total_bytes=1_000_000))


# -- dataset folders never follow links --------------------------------------------------------------------


@pytest.mark.parametrize("link", ["file-inside", "file-outside", "dir-inside", "dir-outside"])
def test_symlinks_in_a_dataset_folder_are_refused(tmp_path: Path, link: str) -> None:
    root = _classes(tmp_path / "drop")
    outside = _classes(tmp_path / "elsewhere")
    target = {"file-inside": root / "cat" / "0.png", "file-outside": outside / "cat" / "0.png",
              "dir-inside": root / "cat", "dir-outside": outside / "cat"}[link]
    os.symlink(target, root / ("cat/linked.png" if link.startswith("file") else "linked"))
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_files(root)
    from integrity.cli.main import main

    assert main(["screen", str(root), "--json"]) == 1  # a refusal (hashing's unsafe-path rejection)


def test_a_fifo_in_a_dataset_folder_is_refused(tmp_path: Path) -> None:
    root = _classes(tmp_path / "drop")
    os.mkfifo(root / "cat" / "pipe.png")
    with pytest.raises(UnsafePathError, match="special file"):
        read_files(root)


# -- every file of a drop is read, or reviewed as extra ------------------------------------------------------


def test_an_unread_file_fails_the_drop_unless_extra_files_names_it(tmp_path: Path) -> None:
    root = _classes(tmp_path / "drop")
    (root / "NOTES.md").write_text("vendor notes\n")
    (root / "cat" / "hidden.bin").write_bytes(_png(3))  # an image the folder reader would never look at
    report = validate_dataset(root, format="image-folder")
    assert not report.passed and "every_file_read" in _failed(report)
    assert "'NOTES.md'" in report.reason and "'cat/hidden.bin'" in report.reason
    report = validate_dataset(root, format="image-folder", extra_files=["NOTES.md"])
    assert not report.passed and "cat/hidden.bin" in _failed(report)["every_file_read"]
    report = validate_dataset(root, format="image-folder", extra_files=["NOTES.md", "cat/*.bin"])
    assert report.passed, report.reason
    assert report.unread_files == ("NOTES.md", "cat/hidden.bin")
    assert report.as_dict()["unread_files"] == ["NOTES.md", "cat/hidden.bin"]
    assert report.statistics["unread_files"] == ["NOTES.md", "cat/hidden.bin"]


def test_the_drops_own_signature_is_not_an_unread_file(tmp_path: Path) -> None:
    root = _classes(tmp_path / "drop")
    (root / "model.sig").write_text("{}")
    assert not validate_dataset(root, format="image-folder").passed
    report = validate_dataset(root, format="image-folder", signature="model.sig")
    assert report.passed and report.unread_files == ()


def test_catalog_extra_files_are_parsed_and_recorded(tmp_path: Path) -> None:
    suite = tmp_path / "s.json"
    suite.write_text(json.dumps({"name": "s"}))
    entry = ("version: 1\npolicy: p.yaml\nsources:\n  shapes:\n    kind: {kind}\n    uri: drops/shapes\n"
             "    format: {fmt}\n    license: MIT\n    origin: x\n{suite}    extra_files: {extra}\n")
    text = entry.format(kind="dataset", fmt="image-folder", suite=f"    suite: {suite}\n", extra='[README.md, "docs/*"]')
    source = parse_catalog(text.encode(), root=tmp_path).source("shapes")
    assert source.extra_files == ("README.md", "docs/*")
    assert source.as_dict()["extra_files"] == ["README.md", "docs/*"]
    for extra in ("[../x]", "[/etc/passwd]", "[]", "README.md"):
        with pytest.raises(CatalogError, match="extra_files"):
            parse_catalog(entry.format(kind="dataset", fmt="image-folder", suite=f"    suite: {suite}\n",
                                       extra=extra).encode(), root=tmp_path)
    with pytest.raises(CatalogError, match="for datasets only"):
        parse_catalog(entry.format(kind="model", fmt="auto", suite="", extra="[x]").encode(), root=tmp_path)


# -- DICOM: PHI checked on every DICOM file, by content ------------------------------------------------------


@pytest.mark.parametrize("name", ["CT.DCM", "CT.dicom", "CT", "sub/IM0001"])
def test_phi_dicom_under_any_name_is_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "drop"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_testdata_file("CT_small.dcm"), root / name)
    assert pydicom.dcmread(root / name).PatientName  # real PHI in the header
    report = validate_dataset(root, format="dicom")
    assert not report.passed and "phi:PatientName" in _failed(report)
    assert report.statistics["files"] == 1
    flagged = validate_dataset(root, format="dicom", phi="flag")
    assert flagged.passed and "flagged" in flagged.reason


def test_a_dicom_drop_with_a_file_that_is_not_dicom_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    root.mkdir()
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for field in PHI_FIELDS:
        if field in dataset:
            setattr(dataset, field, "")
    dataset.save_as(root / "clean.dcm")
    assert validate_dataset(root, format="dicom").passed
    (root / "scan.dcm").write_bytes(b"\0" * 128 + b"DICX" + b"not dicom")  # a .dcm name without DICOM content
    report = validate_dataset(root, format="dicom")
    assert not report.passed and "scan.dcm" in _failed(report)["every_file_read"]
    assert validate_dataset(root, format="dicom", extra_files=["scan.dcm"]).unread_files == ("scan.dcm",)


def test_a_deflated_dicom_is_refused_never_inflated(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    root.mkdir()
    shutil.copyfile(get_testdata_file("image_dfl.dcm"), root / "IM0001")  # zlib-deflated: a bomb vector
    report = validate_dataset(root, format="dicom")
    assert not report.passed and "deflated" in _failed(report)["dicom_parse(IM0001)"]


# -- the attacker's own cases ------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_truncated_empty_and_degenerate_images_are_refused() -> None:
    data = _png(5, (64, 64))
    for broken in (data[:-20], data[:40], data[:8], b""):  # cut in the pixels, in IHDR, after the magic; empty
        with pytest.raises(ArtifactReadError):
            decode_image(broken, "x.png")
    with pytest.raises(ArtifactReadError, match="5000 x 4000 pixels"):
        decode_image(_png(0, (5000, 4000)), "wide.png")
    assert decode_image(_png(0, (1_000_000, 1))).shape == (1, 1_000_000)  # 1 Mpx: within the pixel budget


def test_animated_png_and_huge_text_chunks_are_refused() -> None:
    frames = [_grey(0), _grey(255)]
    apng = _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(ArtifactReadError, match="animated or multi-picture PNG"):
        decode_image(apng, "anim.png")
    plain = _png(1)
    text = _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"A" * (64 << 20), 9))  # 64 MiB of text in ~64 KiB
    with pytest.raises(ArtifactReadError, match="not a readable PNG"):
        decode_image(plain[:33] + text + plain[33:], "text.png")


def test_labels_csv_cannot_reach_outside_the_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "drop", {"a.png": _png(1), "b.png": _png(2)})
    _folder(tmp_path, {"x.png": _png(3)})
    for target in ("../x.png", str(tmp_path / "x.png")):
        (root / "labels.csv").write_text(f"file,label\na.png,0\nb.png,1\n{target},1\n")
        with pytest.raises(ArtifactReadError, match="listed but absent"):
            read_images(read_files(root), where=root)


def test_names_that_differ_only_in_unicode_normalisation_are_refused(tmp_path: Path) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    files = {f"{nfc}/0.png": _png(1), f"{nfc}/1.png": _png(2), f"{nfd}/0.png": _png(3)}
    with pytest.raises(ArtifactReadError, match="Unicode normalisation"):
        read_images(files, where="unicode")


def test_fuzzed_bytes_raise_only_cairn_errors() -> None:
    rng = np.random.default_rng(0)
    seeds = [_png(9, (16, 16)), _encoded(_grey(9, (16, 16)), "JPEG"), _encoded(Image.new("RGBA", (5, 7)), "PNG")]
    for _ in range(300):
        data = bytearray(seeds[int(rng.integers(len(seeds)))])
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(8, len(data)))] = int(rng.integers(256))
        try:
            decode_image(bytes(data))
            read_images({"a/x.png": bytes(data), "b/y.png": bytes(data)}, where="fuzz")
        except CairnError:
            pass
