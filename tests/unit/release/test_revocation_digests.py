"""A revocation by digest is validated and normalised, so it always matches what readers compare.

Before, ``SHA256:AB..``, ``sha256:zz``, a 16-hex prefix or a digest with a space were signed, logged
and announced ("audits now fail") and then never matched anything.
"""

from pathlib import Path

import pytest

from integrity.errors import RevokedError, UsageError
from integrity.release.revocation import RevocationList, revocation_subject, revoke
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import PublicKey
from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key

DIGEST = "ab" * 32


@pytest.fixture
def authority(tmp_path: Path) -> tuple[KeySigner, PublicKey]:
    generate_key_pair(tmp_path / "release.key", tmp_path / "release.pub")
    public = load_public_key(tmp_path / "release.pub")
    return KeySigner.from_file(tmp_path / "release.key"), PublicKey(key_fingerprint(public), public)


@pytest.mark.parametrize("kind", ["artifact", "policy"])
@pytest.mark.parametrize("subject", [
    "sha256:zz", f"sha256:{DIGEST[:16]}", f" sha256:{DIGEST}", f"sha256:{DIGEST}\n", f"sha256: {DIGEST}",
    DIGEST, f"sha512:{DIGEST}", f"sha256:{DIGEST}00", f"sha256:{DIGEST[:-1]}g", "sha256:" + "é" * 64,
])
def test_digests_that_could_never_match_are_refused_before_signing(tmp_path: Path, authority, kind: str,
                                                                    subject: str) -> None:
    store = open_store(tmp_path / "store")
    with pytest.raises(UsageError, match="64 hex digits"):
        revoke(store, authority[0], kind, subject, "reason")
    assert not (tmp_path / "store" / "records" / "revocations").exists()


def test_an_upper_case_digest_is_stored_lower_case_and_matches(tmp_path: Path, authority) -> None:
    signer, rule = authority
    store = open_store(tmp_path / "store")
    stored = revoke(store, signer, "artifact", f"SHA256:{DIGEST.upper()}", "tampered upstream")
    assert stored.subject == f"sha256:{DIGEST}"
    again = revoke(store, signer, "artifact", f"sha256:{DIGEST}", "same bytes")  # idempotent across cases
    assert again.record_key == stored.record_key
    revocations = RevocationList.load(store, rule)
    with pytest.raises(RevokedError, match="tampered upstream"):
        revocations.check("artifact", f"sha256:{DIGEST}")
    with pytest.raises(RevokedError):
        revocations.check("artifact", f"sha256:{DIGEST.upper()}")


def test_signer_fingerprints_are_digests_too_but_identities_are_kept() -> None:
    assert revocation_subject("signer", f"SHA256:{DIGEST.upper()}") == ("signer", f"sha256:{DIGEST}")
    assert revocation_subject("signer", "releases@vendor.example") == ("signer", "releases@vendor.example")
    with pytest.raises(UsageError):
        revocation_subject("signer", "sha256:abc")
    with pytest.raises(UsageError, match="white space"):
        revocation_subject("source", "digits ")
