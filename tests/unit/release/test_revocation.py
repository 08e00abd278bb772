"""Signed revocations: stored once per subject, verified on load, tampering stops the read."""

import json
from pathlib import Path

import pytest

from integrity.errors import RevokedError, UsageError
from integrity.release.revocation import RevocationList, RevocationListError, revoke
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import PublicKey
from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key


@pytest.fixture
def authority(tmp_path: Path) -> tuple[KeySigner, PublicKey]:
    generate_key_pair(tmp_path / "release.key", tmp_path / "release.pub")
    public = load_public_key(tmp_path / "release.pub")
    return KeySigner.from_file(tmp_path / "release.key"), PublicKey(key_fingerprint(public), public)


def test_revocations_round_trip_and_are_idempotent(tmp_path: Path, authority) -> None:
    signer, rule = authority
    store = open_store(tmp_path / "store")
    first = revoke(store, signer, "release", "classifier@1.0.0", "trained on a poisoned drop")
    again = revoke(store, signer, "release", "classifier@1.0.0", "another reason")
    assert again.reason == first.reason  # the first revocation stands
    revoke(store, signer, "policy", "sha256:" + "ab" * 32, "policy v3 approved a compromised key")
    revocations = RevocationList.load(store, rule)
    assert len(revocations) == 2
    with pytest.raises(RevokedError, match="poisoned drop"):
        revocations.check("release", "classifier@1.0.0")
    revocations.check("release", "classifier@1.0.1")  # not revoked: no error


def test_unsigned_or_foreign_revocations_stop_the_read(tmp_path: Path, authority) -> None:
    signer, rule = authority
    store = open_store(tmp_path / "store")
    revoke(store, signer, "source", "digits", "publisher compromised")
    generate_key_pair(tmp_path / "other.key", tmp_path / "other.pub")
    revoke(store, KeySigner.from_file(tmp_path / "other.key"), "source", "breast-cancer", "forged")
    with pytest.raises(RevocationListError, match="does not verify"):
        RevocationList.load(store, rule)


def test_edited_revocation_is_detected(tmp_path: Path, authority) -> None:
    signer, rule = authority
    store = open_store(tmp_path / "store")
    revocation = revoke(store, signer, "source", "digits", "publisher compromised")
    path = tmp_path / "store" / revocation.record_key
    bundle = json.loads(path.read_text())
    bundle["dsseEnvelope"]["payload"] = bundle["dsseEnvelope"]["payload"][:-8] + "AAAAAAA="
    path.write_text(json.dumps(bundle))
    with pytest.raises(RevocationListError):
        RevocationList.load(store, rule)


@pytest.mark.parametrize(("kind", "subject"), [("model", "x"), ("release", "no-version"), ("policy", "v3"), ("source", " ")])
def test_bad_subjects_are_usage_errors(tmp_path: Path, authority, kind: str, subject: str) -> None:
    with pytest.raises(UsageError):
        revoke(open_store(tmp_path / "store"), authority[0], kind, subject, "reason")
