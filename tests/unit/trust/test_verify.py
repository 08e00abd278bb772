"""Signing and verification with pinned keys and certificate chains, and every bad input."""

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from integrity.errors import (
    ArtifactReadError,
    BundleFormatError,
    CertificateExpiredError,
    DigestMismatchError,
    EmptyArtifactError,
    IdentityMismatchError,
    ManifestMismatchError,
    SignatureError,
    SubjectMismatchError,
    UnsafePathError,
    UnsignedArtifactError,
    UntrustedCAError,
    UntrustedSignerError,
)
from integrity.trust.hashing import HashingConfig
from integrity.trust.methods.certificate import CertificateSigner
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import AnyOf, CertificateIdentity, PublicKey
from integrity.trust.signing import certificate_fingerprint, key_fingerprint, load_public_key, sign_artifact
from integrity.trust.verifying import verify_artifact
from tests.support.pki import NOW, TestPKI


def key_rule(public: Path) -> PublicKey:
    key = load_public_key(public)
    return PublicKey(key_fingerprint(key), key)


def ca_rule(ca_cert, identity: str) -> CertificateIdentity:
    return CertificateIdentity(identity, (ca_cert,), (certificate_fingerprint(ca_cert),))


@pytest.fixture
def signed_dir(model_dir: Path, pki: TestPKI) -> tuple[Path, PublicKey, Path]:
    private, public, _ = pki.key_pair()
    sign_artifact(model_dir, KeySigner.from_file(private))
    return model_dir, key_rule(public), private


# -- happy paths ------------------------------------------------------------------------------------


def test_key_signed_directory_verifies(signed_dir) -> None:
    root, rule, _ = signed_dir
    result = verify_artifact(root, rule)
    assert result.kind == "directory"
    assert result.evidence.key_fingerprint == rule.fingerprint
    assert sorted(result.manifest.files) == ["config.json", "tokenizer/vocab.txt", "weights.bin"]
    assert "model.sig" not in result.manifest.files  # the signature inside the directory is left out


def test_key_signed_file_verifies_with_its_sha256(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    target = tmp_path / "data.csv"
    target.write_text("a,b\n1,2\n")
    result = sign_artifact(target, KeySigner.from_file(private))
    assert result.signature == tmp_path / "data.csv.sig"
    verified = verify_artifact(target, key_rule(public))
    import hashlib

    assert verified.digest == hashlib.sha256(target.read_bytes()).hexdigest()


def test_sharded_signature_verifies(model_dir: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    sign_artifact(model_dir, KeySigner.from_file(private), config=HashingConfig().use_shards(10_000))
    result = verify_artifact(model_dir, key_rule(public))
    assert result.manifest.config.method == "shards"


def test_certificate_chain_with_intermediate_verifies(model_dir: Path, pki: TestPKI) -> None:
    ca_key, ca_cert, _ = pki.ca()
    int_key, int_cert = pki.intermediate(ca_key, ca_cert)
    issued = pki.leaf(int_key, int_cert, "releases@vendor.example", chain=(int_cert,))
    sign_artifact(model_dir, CertificateSigner.from_files(issued.key, issued.certificate, issued.chain))
    result = verify_artifact(model_dir, ca_rule(ca_cert, "releases@vendor.example"))
    assert result.evidence.identity == "releases@vendor.example"
    assert result.evidence.time_source == "verification-time"


def test_any_of_accepts_either_signer(signed_dir, pki: TestPKI) -> None:
    root, rule, _ = signed_dir
    _, other_public, _ = pki.key_pair("other")
    assert verify_artifact(root, AnyOf((key_rule(other_public), rule))).evidence.key_fingerprint == rule.fingerprint


# -- bad input: each gives its own error -----------------------------------------------------------


def test_changed_byte_in_file(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    target = tmp_path / "w.bin"
    target.write_bytes(b"\x00" * 1000)
    sign_artifact(target, KeySigner.from_file(private))
    data = bytearray(target.read_bytes())
    data[500] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="differs from the signed"):
        verify_artifact(target, key_rule(public))


def test_changed_byte_in_directory(signed_dir) -> None:
    root, rule, _ = signed_dir
    data = bytearray((root / "weights.bin").read_bytes())
    data[1234] ^= 0xFF
    (root / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ManifestMismatchError, match=r"changed: weights\.bin") as info:
        verify_artifact(root, rule)
    assert info.value.changed == ["weights.bin"]


def test_added_file(signed_dir) -> None:
    root, rule, _ = signed_dir
    (root / "extra.py").write_text("import os\n")
    with pytest.raises(ManifestMismatchError, match=r"added: extra\.py"):
        verify_artifact(root, rule)


def test_removed_file(signed_dir) -> None:
    root, rule, _ = signed_dir
    (root / "config.json").unlink()
    with pytest.raises(ManifestMismatchError, match=r"removed: config\.json"):
        verify_artifact(root, rule)


def test_renamed_file(signed_dir) -> None:
    root, rule, _ = signed_dir
    (root / "config.json").rename(root / "config2.json")
    with pytest.raises(ManifestMismatchError, match=r"renamed: config\.json -> config2\.json"):
        verify_artifact(root, rule)


def test_rotated_key_is_an_untrusted_signer_with_approval_advice(signed_dir, pki: TestPKI) -> None:
    root, _, _ = signed_dir
    _, new_public, _ = pki.key_pair("rotated")
    with pytest.raises(UntrustedSignerError, match="key the policy does not list") as info:
        verify_artifact(root, key_rule(new_public))
    assert "approve" in info.value.diagnostics() and "fingerprint" in info.value.diagnostics()


def test_wrong_certificate_identity(model_dir: Path, pki: TestPKI) -> None:
    ca_key, ca_cert, _ = pki.ca()
    issued = pki.leaf(ca_key, ca_cert, "intern@vendor.example")
    sign_artifact(model_dir, CertificateSigner.from_files(issued.key, issued.certificate))
    with pytest.raises(IdentityMismatchError, match=r"intern@vendor\.example"):
        verify_artifact(model_dir, ca_rule(ca_cert, "releases@vendor.example"))


def test_untrusted_ca(model_dir: Path, pki: TestPKI) -> None:
    rogue_key, rogue_cert, _ = pki.ca("Rogue CA")
    _, pinned_cert, _ = pki.ca("Pinned CA")
    issued = pki.leaf(rogue_key, rogue_cert, "releases@vendor.example")
    sign_artifact(model_dir, CertificateSigner.from_files(issued.key, issued.certificate))
    with pytest.raises(UntrustedCAError, match="does not chain to a CA pinned"):
        verify_artifact(model_dir, ca_rule(pinned_cert, "releases@vendor.example"))


def test_expired_certificate(model_dir: Path, pki: TestPKI) -> None:
    ca_key, ca_cert, _ = pki.ca()
    issued = pki.leaf(
        ca_key, ca_cert, "releases@vendor.example",
        not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=1),
    )
    sign_artifact(model_dir, CertificateSigner.from_files(issued.key, issued.certificate))
    with pytest.raises(CertificateExpiredError, match="valid only from"):
        verify_artifact(model_dir, ca_rule(ca_cert, "releases@vendor.example"))


def test_bundle_for_another_artifact(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    (tmp_path / "a.bin").write_bytes(b"a" * 100)
    (tmp_path / "b.bin").write_bytes(b"b" * 100)
    sign_artifact(tmp_path / "a.bin", KeySigner.from_file(private))
    with pytest.raises(SubjectMismatchError, match=r"made for 'a\.bin'"):
        verify_artifact(tmp_path / "b.bin", key_rule(public), bundle=tmp_path / "a.bin.sig")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="truncated"),
        pytest.param(lambda text: "", id="empty"),
        pytest.param(lambda text: "[1, 2]", id="not-an-object"),
        pytest.param(lambda text: text.replace("application/vnd.dev.sigstore.bundle", "x"), id="media-type"),
        pytest.param(lambda text: json.dumps({**json.loads(text), "dsseEnvelope": {"payload": "!!"}}), id="dsse"),
    ],
)
def test_malformed_or_truncated_bundle(signed_dir, mangle) -> None:
    root, rule, _ = signed_dir
    bundle = root / "model.sig"
    bundle.write_text(mangle(bundle.read_text()))
    with pytest.raises(BundleFormatError):
        verify_artifact(root, rule)


def test_payload_swapped_in_bundle_breaks_signature(signed_dir) -> None:
    root, rule, _ = signed_dir
    bundle = root / "model.sig"
    data = json.loads(bundle.read_text())
    payload = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"]))
    payload["subject"][0]["name"] = "evil"
    data["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    bundle.write_text(json.dumps(data))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_artifact(root, rule)


def test_unsigned_artifact(model_dir: Path, pki: TestPKI) -> None:
    _, public, _ = pki.key_pair()
    with pytest.raises(UnsignedArtifactError, match="no signature bundle"):
        verify_artifact(model_dir, key_rule(public))


def test_symlink_out_of_tree(signed_dir, tmp_path: Path) -> None:
    root, rule, _ = signed_dir
    (tmp_path / "outside.txt").write_text("secret")
    (root / "innocent.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(UnsafePathError, match="points outside the artifact"):
        verify_artifact(root, rule)


def test_dotdot_name_in_signed_manifest(tmp_path: Path, pki: TestPKI) -> None:
    """A publisher (or attacker) signs a manifest naming ../ paths: refused before any file is read."""
    import hashlib

    private, public, _ = pki.key_pair()
    root = tmp_path / "m"
    root.mkdir()
    (root / "w").write_text("x")
    digest = hashlib.sha256(b"x").hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": hashlib.sha256(bytes.fromhex(digest)).hexdigest()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": "../w", "algorithm": "sha256", "digest": digest}],
        },
    }
    (root / "model.sig").write_text(KeySigner.from_file(private).sign_statement(statement))
    with pytest.raises(UnsafePathError, match=r"'\.\./w'"):
        verify_artifact(root, key_rule(public))


def test_empty_directory(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    root = tmp_path / "m"
    root.mkdir()
    (root / "w").write_text("x")
    sign_artifact(root, KeySigner.from_file(private))
    (root / "w").unlink()
    with pytest.raises(EmptyArtifactError):
        verify_artifact(root, key_rule(public))


def test_missing_artifact(tmp_path: Path, pki: TestPKI) -> None:
    _, public, _ = pki.key_pair()
    with pytest.raises(ArtifactReadError):
        verify_artifact(tmp_path / "nothing", key_rule(public))


def test_pinned_digest_mismatch(tmp_path: Path, pki: TestPKI) -> None:
    private, public, _ = pki.key_pair()
    target = tmp_path / "w.bin"
    target.write_bytes(b"v2")
    sign_artifact(target, KeySigner.from_file(private))
    with pytest.raises(DigestMismatchError, match="pinned in the policy"):
        verify_artifact(target, key_rule(public), pinned_digests=("0" * 64,))


def test_empty_rule_set_rejects_everything(signed_dir) -> None:
    root, _, _ = signed_dir
    with pytest.raises(UntrustedSignerError, match="empty policy rejects everything"):
        verify_artifact(root, AnyOf(()))


def test_copy_of_signed_directory_elsewhere_still_verifies(signed_dir, tmp_path: Path) -> None:
    root, rule, _ = signed_dir
    copy = tmp_path / "elsewhere" / "renamed-model"
    shutil.copytree(root, copy)
    assert verify_artifact(copy, rule).kind == "directory"
