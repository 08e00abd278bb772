"""Publishing and pulling releases: local and S3 (moto on loopback) stores, idempotent publishes,
Object Lock retention, pull tickets, the rollback record, revocations and the incident-response query."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrity.distribution import (
    IncompleteReleaseError,
    PublishConflictError,
    PullState,
    ReleaseNotFoundError,
    Retention,
    RollbackError,
    StoreSource,
    TicketSource,
    list_publications,
    presign,
    publish,
    pull,
    read_retention,
    releases_consuming,
)
from integrity.distribution.ledgered import revoke_and_log
from integrity.errors import DigestMismatchError, RevokedError, UsageError
from integrity.ledger import Ledger
from integrity.ledger.transparency import open_ledger
from integrity.release.index import ReleaseFileError
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import load_policy
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

MODEL = "digits-classifier"


@pytest.fixture
def release_env(tmp_path: Path):
    private, public = make_release_key(tmp_path / "keys")
    policy_path = write_release_policy(tmp_path / "release-policy.yaml", MODEL, public)
    return {"private": private, "public": public, "policy_path": policy_path, "policy": load_policy(policy_path),
            "home": tmp_path / "home"}


def _bundle(tmp_path: Path, env, version: str = "1.0.0", sequence: int = 1, **kw) -> Path:
    return write_test_bundle(tmp_path / f"bundle-{version}-{sequence}", env["private"], model=MODEL,
                             version=version, sequence=sequence, **kw)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_publish_then_pull_from_a_local_store(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    bundle = _bundle(tmp_path, release_env)
    ledger = open_ledger(store, home=release_env["home"])
    first = publish(store, bundle, release_env["policy"], ledger=ledger)
    assert first.created and first.objects_new == first.objects and first.ledger_index == 0
    again = publish(store, bundle, release_env["policy"], ledger=ledger)  # idempotent
    assert not again.created and again.objects_new == 0 and again.ledger_index == 0
    assert [p.version for p in list_publications(store, MODEL)] == ["1.0.0"]

    state = PullState(tmp_path / "state.json")
    dest = tmp_path / "pulled"
    result = pull(StoreSource(store), MODEL, None, dest, release_env["policy"], state=state,
                  ledger=Ledger(store, public_key=release_env["home"] / "keys" / "ledger.pub"), progress=False)
    assert result.reference == f"{MODEL}@1.0.0" and result.ledger_checked
    assert _tree(dest) == _tree(bundle)
    assert not [p for p in tmp_path.iterdir() if ".cairn-pull" in p.name]
    with pytest.raises(UsageError, match="not empty"):
        pull(StoreSource(store), MODEL, "1.0.0", dest, release_env["policy"], progress=False)


def test_publish_refuses_a_bundle_that_does_not_verify(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    bundle = _bundle(tmp_path, release_env)
    (bundle / "bom.cdx.json").write_text('{"bomFormat": "CycloneDX", "components": ["added"]}')
    with pytest.raises(ReleaseFileError, match="differs from the signed"):
        publish(store, bundle, release_env["policy"])
    assert list_publications(store) == []


def test_versions_and_sequences_cannot_be_taken_twice(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    publish(store, _bundle(tmp_path, release_env, "1.0.0", 1), release_env["policy"])
    other = write_test_bundle(tmp_path / "other", release_env["private"], model=MODEL, version="1.0.0", sequence=2,
                              weights_size=1000)
    with pytest.raises(PublishConflictError, match="already published with another index"):
        publish(store, other, release_env["policy"])
    clash = write_test_bundle(tmp_path / "clash", release_env["private"], model=MODEL, version="1.1.0", sequence=1)
    with pytest.raises(PublishConflictError, match=r"sequence 1 .* already belongs to version 1\.0\.0"):
        publish(store, clash, release_env["policy"])


def test_s3_publish_with_object_lock_and_pull(tmp_path: Path, release_env, s3_bucket: S3Bucket) -> None:  # noqa: F811
    name = s3_bucket.name + "-locked"
    s3_bucket.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    store = open_store(f"s3://{name}/cairn")
    result = publish(store, _bundle(tmp_path, release_env), release_env["policy"],
                     retention=Retention("GOVERNANCE", 30))
    # Every object of the release, the sequence claim and the publication record are locked.
    assert len(result.retention) == result.objects + 2
    held = read_retention(store, f"releases/{MODEL}/versions/1.0.0.json")
    assert held is not None and held["mode"] == "GOVERNANCE"
    head = s3_bucket.client.head_object(Bucket=name, Key=f"cairn/releases/{MODEL}/versions/1.0.0.json")
    with pytest.raises(Exception, match="AccessDenied"):
        s3_bucket.client.delete_object(Bucket=name, Key=f"cairn/releases/{MODEL}/versions/1.0.0.json",
                                       VersionId=head["VersionId"])
    dest = tmp_path / "pulled"
    pulled = pull(StoreSource(store), MODEL, "1.0.0", dest, release_env["policy"], progress=False)
    assert pulled.files == len(json.loads((dest / "release.json").read_text())["files"])


def test_unlocked_bucket_gets_no_retention(tmp_path: Path, release_env, s3_bucket: S3Bucket) -> None:  # noqa: F811
    store = open_store(f"{s3_bucket.url}/plain")
    result = publish(store, _bundle(tmp_path, release_env), release_env["policy"])
    assert result.retention == {} and read_retention(store, f"releases/{MODEL}/versions/1.0.0.json") is None


def test_pull_ticket_needs_no_credentials(tmp_path: Path, release_env, s3_bucket: S3Bucket) -> None:  # noqa: F811
    store = open_store(f"{s3_bucket.url}/rel")
    bundle = _bundle(tmp_path, release_env)
    publish(store, bundle, release_env["policy"])
    ticket = tmp_path / "ticket.json"
    issued = presign(store, MODEL, None, release_env["policy"], expires_in=600)
    assert all("X-Amz-Algorithm=AWS4-HMAC-SHA256" in url for url in issued["objects"].values())
    ticket.write_text(json.dumps(issued))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAIRN_S3"))}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    run = subprocess.run([sys.executable, "-m", "integrity.cli", "pull", "--ticket", str(ticket), "--dest",
                          str(tmp_path / "out"), "--key", str(release_env["public"]), "--state",
                          str(tmp_path / "state.json"), "--no-progress"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert _tree(tmp_path / "out") == _tree(bundle)
    # Same verification as a credentialed pull: a tampered object is refused through the ticket too.
    blob = json.loads((bundle / "release.json").read_text())["files"]["model/model.safetensors"]["sha256"]
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"rel/trusted/sha256/{blob[:2]}/{blob}", Body=b"evil")
    with pytest.raises(DigestMismatchError):
        pull(TicketSource.load(ticket), MODEL, None, tmp_path / "out2", release_env["policy"], progress=False)
    assert not (tmp_path / "out2").exists()


def test_rollback_record_refuses_older_and_replaced_indexes(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    publish(store, _bundle(tmp_path, release_env, "1.0.0", 1), release_env["policy"])
    publish(store, _bundle(tmp_path, release_env, "1.1.0", 2), release_env["policy"])
    state = PullState(tmp_path / "state.json")
    pull(StoreSource(store), MODEL, None, tmp_path / "a", release_env["policy"], state=state, progress=False)
    # The newest publication disappears (deleted, or a stale mirror): "latest" is now 1.0.0.
    (tmp_path / "store" / "releases" / MODEL / "versions" / "1.1.0.json").unlink()
    with pytest.raises(RollbackError, match="already saw sequence 2"):
        pull(StoreSource(store), MODEL, None, tmp_path / "b", release_env["policy"], state=state, progress=False)
    assert not (tmp_path / "b").exists()
    # Asking for the older version explicitly is allowed.
    pull(StoreSource(store), MODEL, "1.0.0", tmp_path / "c", release_env["policy"], state=state, progress=False)


def test_missing_release_and_bad_references(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    with pytest.raises(ReleaseNotFoundError):
        pull(StoreSource(store), MODEL, None, tmp_path / "x", release_env["policy"], progress=False)
    with pytest.raises(ReleaseNotFoundError):
        pull(StoreSource(store), MODEL, "9.9.9", tmp_path / "x", release_env["policy"], progress=False)
    with pytest.raises(UsageError):
        pull(StoreSource(store), "../etc", None, tmp_path / "x", release_env["policy"], progress=False)
    assert not (tmp_path / "x").exists()


def test_revocations_stop_pulls_and_the_query_finds_consumers(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    signer = KeySigner.from_file(release_env["private"])
    data_input = {"name": "breast-cancer", "kind": "dataset", "digest": "sha256:" + "ab" * 32,
                  "verification_record": "records/verifications/bc.json"}
    publish(store, _bundle(tmp_path, release_env, "1.0.0", 1, inputs=[data_input]), release_env["policy"])
    publish(store, _bundle(tmp_path, release_env, "1.1.0", 2), release_env["policy"])
    store.put_record("verifications", "bc", {"predicate": {"signer": {"key_fingerprint": "sha256:" + "cd" * 32},
                                                           "policy": {"digest": "sha256:" + "ef" * 32}}})
    consumers = releases_consuming(store, "source", "breast-cancer", release_policy=release_env["policy"])
    assert [c.reference for c in consumers] == [f"{MODEL}@1.0.0"]
    assert [c.reference for c in releases_consuming(store, "signer", "sha256:" + "cd" * 32)] == [f"{MODEL}@1.0.0"]
    assert [c.reference for c in releases_consuming(store, "policy", "ef" * 32)] == [f"{MODEL}@1.0.0"]
    assert [c.reference for c in releases_consuming(store, "artifact", "sha256:" + "ab" * 32)] == [f"{MODEL}@1.0.0"]

    ledger = open_ledger(store, home=release_env["home"])
    revoke_and_log(store, signer, "source", "breast-cancer", "the vendor's drop was poisoned", ledger=ledger)
    with pytest.raises(RevokedError, match="poisoned"):
        pull(StoreSource(store), MODEL, "1.0.0", tmp_path / "p", release_env["policy"], progress=False)
    pull(StoreSource(store), MODEL, "1.1.0", tmp_path / "q", release_env["policy"], progress=False)
    revoke_and_log(store, signer, "release", f"{MODEL}@1.1.0", "gate threshold was misconfigured", ledger=ledger)
    with pytest.raises(RevokedError, match="misconfigured"):
        pull(StoreSource(store), MODEL, None, tmp_path / "r", release_env["policy"], progress=False)
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()
    kinds = [e["kind"] for e in ledger.entries()]
    assert kinds == ["revocation", "revocation"]
    assert ledger.verify().size == 2


def test_missing_object_is_an_incomplete_release(tmp_path: Path, release_env) -> None:
    store = open_store(tmp_path / "store")
    bundle = _bundle(tmp_path, release_env)
    publish(store, bundle, release_env["policy"])
    digest = json.loads((bundle / "release.json").read_text())["files"]["lineage.svg"]["sha256"]
    (tmp_path / "store" / "trusted" / "sha256" / digest[:2] / digest).unlink()
    with pytest.raises(IncompleteReleaseError, match=digest):
        pull(StoreSource(store), MODEL, None, tmp_path / "p", release_env["policy"], progress=False)
    assert not (tmp_path / "p").exists()


def test_tree_heads_can_be_witnessed_by_rekor(tmp_path: Path, release_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optional Rekor upload: each new signed tree head becomes a hashedrekord entry (private Rekor on loopback)."""
    import datetime as dt
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from integrity.trust.signing import load_private_key
    from tests.support.private_sigstore import PrivateSigstore

    store = open_store(tmp_path / "store")
    ledger = open_ledger(store, home=release_env["home"])
    key = load_private_key(ledger.private_key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn ledger")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    (tmp_path / "ledger.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with PrivateSigstore(tmp_path / "sigstore") as sigstore:
        monkeypatch.setenv("CAIRN_REKOR_URL", sigstore.rekor_url)
        monkeypatch.setenv("CAIRN_LEDGER_CERT", str(tmp_path / "ledger.crt"))
        publish(store, _bundle(tmp_path, release_env), release_env["policy"], ledger=ledger)
        receipt = json.loads((tmp_path / "store" / "ledger" / "rekor" / "000000000001.json").read_text())
        head = ledger.heads()[-1]
        assert receipt["head"]["root"] == head.root and receipt["logIndex"] in sigstore.entries
        logged = sigstore.entries[receipt["logIndex"]]["spec"]["data"]["hash"]["value"]
        assert logged == hashlib.sha256(head.signed_part()).hexdigest()
