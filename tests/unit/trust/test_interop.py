"""Both directions with the OpenSSF model_signing CLI: its signatures verify in Cairn and Cairn's in it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pki import TestPKI

BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


def cairn(*args: str) -> subprocess.CompletedProcess[str]:
    return run(BIN / "cairn", *args)


def model_signing(*args: str) -> subprocess.CompletedProcess[str]:
    return run(BIN / "model_signing", *args)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_model_signing_key_signature_verifies_in_cairn(model_dir: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    signed = model_signing("sign", "key", model_dir, "--private_key", private, "--signature", model_dir / "model.sig")
    assert signed.returncode == 0, signed.stderr
    ok = cairn("verify", model_dir, "--key", public)
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout
    flip_byte(model_dir / "weights.bin")
    bad = cairn("verify", model_dir, "--key", public)
    assert bad.returncode == 1
    assert "weights.bin" in bad.stderr


def test_cairn_key_signature_verifies_in_model_signing(model_dir: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    signed = cairn("sign", model_dir, "--key", private)
    assert signed.returncode == 0, signed.stderr
    ok = model_signing("verify", "key", model_dir, "--signature", model_dir / "model.sig", "--public_key", public)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (model_dir / "config.json").write_text("{}")
    bad = model_signing("verify", "key", model_dir, "--signature", model_dir / "model.sig", "--public_key", public)
    assert bad.returncode != 0


def test_certificate_method_both_directions(model_dir: Path, tmp_path: Path, pki: TestPKI) -> None:
    ca_key, ca_cert, ca_pem = pki.ca()
    issued = pki.leaf(ca_key, ca_cert, "releases@vendor.example")
    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)

    theirs = model_signing(
        "sign", "certificate", model_dir, "--private_key", issued.key,
        "--signing_certificate", issued.certificate, "--certificate_chain", ca_pem,
        "--signature", model_dir / "model.sig",
    )
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    ok = cairn("verify", model_dir, "--ca", ca_pem, "--identity", "releases@vendor.example")
    assert ok.returncode == 0, ok.stderr

    ours = cairn("sign", other, "--key", issued.key, "--certificate", issued.certificate)
    assert ours.returncode == 0, ours.stderr
    ok = model_signing(
        "verify", "certificate", other, "--signature", other / "model.sig", "--certificate_chain", ca_pem
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_sharded_cairn_signature_verifies_with_model_signing_library(model_dir: Path, pki: TestPKI) -> None:
    """model_signing's CLI always re-hashes per file; its library reads the serialization from the bundle."""
    from model_signing import verifying

    private, public, _ = pki.key_pair()
    assert cairn("sign", model_dir, "--key", private, "--shard-size", "16384").returncode == 0
    verifying.Config().use_elliptic_key_verifier(public_key=public).verify(model_dir, model_dir / "model.sig")
    flip_byte(model_dir / "weights.bin")
    with pytest.raises(ValueError):
        verifying.Config().use_elliptic_key_verifier(public_key=public).verify(model_dir, model_dir / "model.sig")


def test_single_file_both_directions(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert cairn("sign", target, "--key", private).returncode == 0
    ok = model_signing("verify", "key", target, "--signature", f"{target}.sig", "--public_key", public)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sig2 = tmp_path / "theirs.sig"
    assert model_signing("sign", "key", target, "--private_key", private, "--signature", sig2).returncode == 0
    assert cairn("verify", target, "--signature", sig2, "--key", public).returncode == 0
