"""The release bundle: written atomically with every signature, re-verified file by file."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from integrity.errors import CairnError, RevokedError, UntrustedSignerError
from integrity.release.bundle import (
    ReleaseExistsError,
    ReleaseGateError,
    audit_bundle,
    next_sequence,
    verify_bundle,
    write_bundle,
)
from integrity.release.index import INDEX_NAME as INDEX
from integrity.release.index import INDEX_SIGNATURE_NAME as INDEX_SIGNATURE
from integrity.release.index import ReleaseBundleError, ReleaseFileError, ReleaseIndexError
from integrity.release.revocation import RevocationList, revoke
from integrity.storage import open_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import PublicKey, load_policy
from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key
from tests.support.private_sigstore import PrivateSigstore, private_sigstore  # noqa: F401

MODEL = "digits-classifier"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("release-home")
    keys = home / "keys"
    keys.mkdir()
    fingerprint = generate_key_pair(keys / "release.key", keys / "release.pub")
    generate_key_pair(keys / "other.key", keys / "other.pub")
    policy = {"version": 1, "sources": {MODEL: {"signers": [
        {"key": {"fingerprint": fingerprint, "public_key": str(keys / "release.pub")}}]}}}
    (home / "release-policy.yaml").write_text(yaml.safe_dump(policy))
    public = load_public_key(keys / "release.pub")
    return {
        "home": home,
        "signer": KeySigner.from_file(keys / "release.key"),
        "other": KeySigner.from_file(keys / "other.key"),
        "policy": load_policy(home / "release-policy.yaml"),
        "rule": PublicKey(key_fingerprint(public), public),
        "public": keys / "release.pub",
    }


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    (folder / "config.json").write_text(json.dumps({"architecture": "tiny", "classes": [0, 1]}))
    return folder


INPUT = {"name": "digits", "kind": "dataset", "digest": "sha256:" + "ab" * 32, "verification_record": "records/x.json"}


def _write(identity: dict, releases: Path, *, version: str = "1.0.0", signer=None, **extra) -> Path:
    kwargs = {
        "model": MODEL,
        "version": version,
        "model_dir": _model(releases.parent / f"model-src-{version}-{len(list(releases.parent.iterdir()))}"),
        "provenance": {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                       "predicate": {"buildDefinition": {"resolvedDependencies": [
                           {"name": "digits", "digest": {"sha256": "ab" * 32}}]}}},
        "bom": {"bomFormat": "CycloneDX", "specVersion": "1.6"},
        "lineage": {"nodes": [{"id": "release"}], "edges": []},
        "lineage_svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>\n",
        "signer": signer or identity["signer"],
        "inputs": [INPUT],
        "policy_digest": "sha256:" + "cd" * 32,
        "catalog_digest": "sha256:" + "ef" * 32,
        "gates": {"release_gate": {"passed": True, "clean_accuracy": 0.97}},
    }
    kwargs.update(extra)
    return write_bundle(releases, **kwargs)


@pytest.fixture
def release(identity: dict, tmp_path: Path) -> Path:
    return _write(identity, tmp_path / "releases")


def test_written_bundle_has_the_documented_layout_and_verifies(identity: dict, release: Path) -> None:
    assert release.name == f"{MODEL}-1.0.0"
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert files == sorted([
        "release.json", "release.json.sig", "model/model.safetensors", "model/config.json", "model/model.sig",
        "provenance.intoto.json", "provenance.intoto.json.sig", "bom.cdx.json", "bom.cdx.json.sig",
        "lineage.json", "lineage.json.sig", "lineage.svg", "lineage.svg.sig"])
    index = json.loads((release / INDEX).read_text())
    assert set(index["files"]) == set(files) - {INDEX, INDEX_SIGNATURE}
    assert index["sequence"] == 1 and index["signer"]["method"] == "key"
    report = verify_bundle(release, identity["policy"], MODEL)
    assert report.model_digest == index["model_digest"]
    assert report.signer["key_fingerprint"] == identity["rule"].fingerprint
    assert report.inputs == [INPUT]
    # The provenance subject was filled with the released files.
    subject = json.loads((release / "provenance.intoto.json").read_text())["subject"]
    assert {s["name"] for s in subject} == {"model/model.safetensors", "model/config.json"}
    assert not [p for p in release.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_each_file_verifies_on_its_own_with_the_model_signing_cli_and_cairn(identity: dict, release: Path) -> None:
    ok = subprocess.run([str(BIN / "model_signing"), "verify", "key", "--signature", str(release / "model/model.sig"),
                         "--public_key", str(identity["public"]), str(release / "model")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name in ("bom.cdx.json", "release.json", "lineage.svg"):
        out = subprocess.run([str(BIN / "cairn"), "verify", str(release / name), "--key", str(identity["public"])],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [
    "release.json", "release.json.sig", "model/model.safetensors", "model/config.json", "model/model.sig",
    "provenance.intoto.json", "provenance.intoto.json.sig", "bom.cdx.json", "bom.cdx.json.sig",
    "lineage.json", "lineage.json.sig", "lineage.svg", "lineage.svg.sig"])
def test_one_changed_byte_in_any_file_is_caught_and_named(identity: dict, release: Path, name: str) -> None:
    _flip(release / name)
    with pytest.raises(CairnError) as caught:
        verify_bundle(release, identity["policy"], MODEL)
    assert caught.value.exit_code == 1
    assert name in caught.value.summary()
    audit = audit_bundle(release, identity["policy"])
    assert not audit.ok
    assert any(name in f.file or name in f.detail for f in audit.failures)


def test_unlisted_and_missing_files_are_refused(identity: dict, release: Path) -> None:
    (release / "model" / "extra.bin").write_bytes(b"payload")
    with pytest.raises(ReleaseFileError, match=r"extra.bin.*not listed"):
        verify_bundle(release, identity["policy"], MODEL)
    (release / "model" / "extra.bin").unlink()
    (release / "lineage.svg").unlink()
    with pytest.raises(ReleaseFileError, match=r"lineage.svg: listed in release.json but missing"):
        verify_bundle(release, identity["policy"], MODEL)


def test_a_release_signed_by_another_identity_is_refused(identity: dict, tmp_path: Path) -> None:
    foreign = _write(identity, tmp_path / "releases", signer=identity["other"])
    with pytest.raises(UntrustedSignerError):
        verify_bundle(foreign, identity["policy"], MODEL)


def test_a_release_of_another_model_is_refused(identity: dict, release: Path) -> None:
    with pytest.raises(CairnError, match="not in the trust policy"):
        verify_bundle(release, identity["policy"], "other-model")


def test_revoked_release_input_or_signer_is_refused(identity: dict, release: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    assert verify_bundle(release, identity["policy"], MODEL,
                         revocations=RevocationList.load(store, identity["rule"])).revocations_checked >= 5
    revoke(store, identity["signer"], "artifact", INPUT["digest"], "the digits drop was poisoned")
    with pytest.raises(RevokedError, match="poisoned"):
        verify_bundle(release, identity["policy"], MODEL, revocations=RevocationList.load(store, identity["rule"]))
    store2 = open_store(tmp_path / "store2")
    revoke(store2, identity["signer"], "release", f"{MODEL}@1.0.0", "withdrawn")
    with pytest.raises(RevokedError, match="withdrawn"):
        verify_bundle(release, identity["policy"], MODEL, revocations=RevocationList.load(store2, identity["rule"]))


def test_sequence_increases_and_replays_are_refused(identity: dict, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    first = _write(identity, releases, version="1.0.0")
    second = _write(identity, releases, version="1.0.1")
    assert next_sequence(releases, MODEL) == 3
    assert verify_bundle(second, identity["policy"], MODEL, min_sequence=2).sequence == 2
    with pytest.raises(ReleaseIndexError, match="replayed"):
        verify_bundle(first, identity["policy"], MODEL, min_sequence=2)


def test_releases_are_never_overwritten_and_failed_gates_are_not_written(identity: dict, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    _write(identity, releases)
    with pytest.raises(ReleaseExistsError):
        _write(identity, releases)
    with pytest.raises(ReleaseGateError, match=r"clean accuracy 0.4 below 0.9"):
        _write(identity, releases, version="2.0.0",
               gates={"release_gate": {"passed": False, "reason": "clean accuracy 0.4 below 0.9"}})
    assert not (releases / f"{MODEL}-2.0.0").exists()


def test_a_failed_write_leaves_nothing_behind(identity: dict, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    source = _model(tmp_path / "incomplete")
    (source / "config.json").unlink()
    with pytest.raises(CairnError, match=r"config.json"):
        _write(identity, releases, model_dir=source)
    assert list(releases.iterdir()) == []


def test_index_claiming_a_failed_gate_is_refused_even_if_signed(identity: dict, release: Path) -> None:
    from integrity.trust.signing import sign_artifact

    index = json.loads((release / INDEX).read_text())
    index["gates"]["release_gate"]["passed"] = False
    (release / INDEX).write_text(json.dumps(index, indent=2))
    sign_artifact(release / INDEX, identity["signer"])
    with pytest.raises(ReleaseIndexError, match="did not pass"):
        verify_bundle(release, identity["policy"], MODEL)


def test_missing_release_is_a_clear_error(identity: dict, tmp_path: Path) -> None:
    with pytest.raises(CairnError, match="no release directory"):
        verify_bundle(tmp_path / "nothing", identity["policy"], MODEL)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert issubclass(ReleaseFileError, ReleaseBundleError)


def test_a_release_signed_keyless_in_ci_verifies_against_the_workflow_identity(
    identity: dict, tmp_path: Path, private_sigstore: PrivateSigstore  # noqa: F811
) -> None:
    """CI signs releases keyless: every file of the bundle carries a Fulcio certificate for the workflow
    and a transparency-log entry; the release policy pins that identity and issuer (and the trusted root)."""
    from integrity.trust.methods.sigstore import KeylessSigner
    from integrity.trust.policy import AnyOf, SigstoreIdentity, SourcePolicy, TrustPolicy

    workflow = "https://github.com/acme/models/.github/workflows/release.yml@refs/tags/v1.0.0"
    issuer = "https://token.actions.githubusercontent.com"
    token = private_sigstore.mint_token(workflow, issuer)
    signer = KeylessSigner(trust_config=private_sigstore.trust_config_path, identity_token=token)
    release = _write(identity, tmp_path / "releases", signer=signer)
    root = str(private_sigstore.trusted_root_path)

    def policy(allowed: str) -> TrustPolicy:
        rule = SigstoreIdentity(identity=allowed, issuer=issuer, trusted_root=root)
        return TrustPolicy(1, {MODEL: SourcePolicy(MODEL, AnyOf((rule,)))}, None, "sha256:" + "00" * 32)

    report = verify_bundle(release, policy(workflow), MODEL)
    assert report.signer["method"] == "sigstore" and report.signer["identity"] == workflow
    with pytest.raises(CairnError, match=r"not allowed|does not allow|not in the policy") as caught:
        verify_bundle(release, policy(workflow.replace("v1.0.0", "v9.9.9")), MODEL)  # another workflow run
    assert caught.value.exit_code == 1 and workflow in caught.value.reason
