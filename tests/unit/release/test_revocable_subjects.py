"""Revoking a release covers the same subjects whichever path asks: the bundle audit and the pull.

Both paths call :meth:`integrity.release.index.ReleaseIndex.subjects`, the one list. For every
subject of a real bundle (its release, signer, policy, model digest, every file, each input's
source, signed and used digest, with and without the ``sha256:`` prefix in the index) a revocation
of just that subject must make both ``verify_bundle`` and the pull-side check refuse the release.
"""

import hashlib
from pathlib import Path

import pytest

from integrity.errors import CairnError
from integrity.release.bundle import verify_bundle
from integrity.release.index import ReleaseIndex, check_revocations, verify_index_signature
from integrity.release.revocation import RevocationList, revoke
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import load_policy
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

MODEL = "digits-classifier"
USED = hashlib.sha256(b"screened digits").hexdigest()  # written without the prefix, as older indexes did


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("subjects")
    private, public = make_release_key(root / "keys")
    write_release_policy(root / "policy.yaml", MODEL, public)
    inputs = [{"name": "digits/screened", "source": "digits", "kind": "dataset",
               "digest": "sha256:" + hashlib.sha256(b"digits").hexdigest(), "used_digest": USED,
               "policy_digest": "sha256:" + "1" * 64, "verification_record": "records/verifications/digits.json"}]
    return write_test_bundle(root / "bundle", private, model=MODEL, inputs=inputs, weights_size=2048), root


def test_the_one_list_names_every_revocable_part(bundle: tuple[Path, Path]) -> None:
    path, root = bundle
    _, evidence = verify_index_signature(path, load_policy(root / "policy.yaml"), MODEL)
    subjects = ReleaseIndex.read(path, complete=True).subjects([evidence])
    assert ("release", f"{MODEL}@1.0.0") in subjects and ("source", "digits") in subjects
    assert ("artifact", f"sha256:{USED}") in subjects  # the prefix is added
    assert ("policy", "sha256:" + "1" * 64) in subjects and ("policy", "sha256:" + "0" * 64) in subjects
    assert any(kind == "signer" for kind, _ in subjects)
    files = ReleaseIndex.read(path).files
    assert all(("artifact", f"sha256:{f.sha256}") in subjects for f in files)


def test_revoking_any_one_subject_stops_both_the_audit_and_the_pull(bundle: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    path, root = bundle
    policy = load_policy(root / "policy.yaml")
    signer = KeySigner.from_file(root / "keys" / "release.key")
    index, evidence = verify_index_signature(path, policy, MODEL)
    subjects = index.subjects([evidence])
    assert len(subjects) >= 10
    for number, (kind, subject) in enumerate(subjects):
        store = open_store(tmp_path / f"store-{number}")
        revoke(store, signer, kind, subject, f"test: {kind} {subject}")
        revocations = RevocationList.load(store, policy.source(MODEL).signers)
        with pytest.raises(CairnError):
            verify_bundle(path, policy, MODEL, revocations=revocations)
        with pytest.raises(CairnError):
            check_revocations(revocations, index, evidence)
