"""Trust policy: strict parsing, per-source rules, pinned digests and explicit approval."""

import hashlib
import textwrap
from pathlib import Path

import pytest

from integrity.errors import DigestMismatchError, PolicyError, UntrustedSignerError
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import AllOf, AnyOf, SignerEvidence, SigstoreIdentity, load_policy, parse_policy
from integrity.trust.signing import certificate_fingerprint, sign_artifact
from integrity.trust.verifying import verify_source
from tests.support.pki import TestPKI


def write_policy(folder: Path, body: str) -> Path:
    path = folder / "policy.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def keyed(tmp_path: Path, pki: TestPKI) -> dict:
    private, public, fingerprint = pki.key_pair()
    _ca_key, ca_cert, ca_pem = pki.ca()
    policy = write_policy(
        tmp_path,
        f"""\
        version: 7
        sources:
          breast-cancer:
            license: CC-BY-4.0
            origin: https://archive.ics.uci.edu/dataset/17
            signers:
              - key: {{fingerprint: "{fingerprint}", public_key: "{public}"}}
              - sigstore:
                  identity: https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1
                  issuer: https://token.actions.githubusercontent.com
              - certificate: {{ca: "{ca_pem}", identity: releases@vendor.example}}
          nobody-approved:
            signers: []
        """,
    )
    return {"policy": policy, "private": private, "public": public, "fingerprint": fingerprint, "ca": ca_cert}


def test_policy_loads_with_digest_and_version(keyed: dict) -> None:
    policy = load_policy(keyed["policy"])
    assert policy.version == 7
    assert policy.digest == "sha256:" + hashlib.sha256(keyed["policy"].read_bytes()).hexdigest()
    source = policy.source("breast-cancer")
    assert source.license == "CC-BY-4.0"
    assert [r.method for r in source.signers.rules] == ["key", "sigstore", "certificate"]
    assert source.rules_for("certificate")[0].ca_fingerprints == (certificate_fingerprint(keyed["ca"]),)


def test_verification_records_policy_digest(keyed: dict, model_dir: Path) -> None:
    sign_artifact(model_dir, KeySigner.from_file(keyed["private"]))
    policy = load_policy(keyed["policy"])
    result = verify_source(model_dir, policy, "breast-cancer")
    assert result.policy == {"path": str(keyed["policy"]), "version": 7, "digest": policy.digest}
    assert result.source == "breast-cancer"


def test_empty_signer_list_rejects_everything(keyed: dict, model_dir: Path) -> None:
    sign_artifact(model_dir, KeySigner.from_file(keyed["private"]))
    with pytest.raises(UntrustedSignerError, match="rejects everything"):
        verify_source(model_dir, load_policy(keyed["policy"]), "nobody-approved")


def test_rotated_key_names_the_source_and_how_to_approve(keyed: dict, model_dir: Path, pki: TestPKI) -> None:
    new_private, _, _ = pki.key_pair("rotated")
    sign_artifact(model_dir, KeySigner.from_file(new_private))
    with pytest.raises(UntrustedSignerError) as info:
        verify_source(model_dir, load_policy(keyed["policy"]), "breast-cancer")
    advice = info.value.diagnostics()
    assert "breast-cancer:" in advice and "bumps `version`" in advice


def test_unknown_source(keyed: dict) -> None:
    with pytest.raises(PolicyError, match="'digits' is not in the trust policy"):
        load_policy(keyed["policy"]).source("digits")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("version: 1\nsources: {}\nextra: 1\n", "unknown field.*extra"),
        ("version: 1\nsources:\n  s:\n    signers: []\n    licence: MIT\n", r"sources\.s: unknown field.*licence"),
        (
            "version: 1\nsources:\n  s:\n    signers:\n      - sigstore: {identity: a, issuer: b, typo: c}\n",
            r"signers\[0\]\.sigstore: unknown field.*typo",
        ),
        ("version: 1\nsources:\n  s:\n    signers:\n      - sigstore: {identity: a}\n", "missing required field 'issuer'"),
        ("version: 1\nsources:\n  s:\n    signers:\n      - pgp: {key: x}\n", "unknown signer kind 'pgp'"),
        ("sources: {}\n", "missing required field 'version'"),
        ("version: two\nsources: {}\n", "positive integer"),
        ("version: 1\nsources: [a]\n", "mapping"),
        ("version: 1\nsources:\n  s:\n    digests: [abc]\n", "not a sha256 digest"),
        ("version: [\n", "not valid YAML"),
        ("", "must be a mapping"),
    ],
)
def test_malformed_policies_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(write_policy(tmp_path, body))


def test_replaced_key_file_is_refused(keyed: dict, pki: TestPKI) -> None:
    _, other_public, _ = pki.key_pair("other")
    keyed["public"].write_bytes(other_public.read_bytes())
    with pytest.raises(PolicyError, match="not the pinned"):
        load_policy(keyed["policy"])


def test_pinned_digests(tmp_path: Path, pki: TestPKI) -> None:
    private, public, fingerprint = pki.key_pair()
    artifact = tmp_path / "data.csv"
    artifact.write_text("x,y\n1,2\n")
    sign_artifact(artifact, KeySigner.from_file(private))
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    signer = f'      - key: {{fingerprint: "{fingerprint}", public_key: "{public}"}}\n'
    good = write_policy(tmp_path, f"version: 1\nsources:\n  d:\n    digests: [\"sha256:{digest}\"]\n    signers:\n{signer}")
    assert verify_source(artifact, load_policy(good), "d").digest == digest
    bad = write_policy(tmp_path, f"version: 2\nsources:\n  d:\n    digests: [\"sha256:{'0' * 64}\"]\n    signers:\n{signer}")
    with pytest.raises(DigestMismatchError, match="pinned"):
        verify_source(artifact, load_policy(bad), "d")


def test_relative_paths_resolve_against_the_policy_folder(tmp_path: Path, pki: TestPKI) -> None:
    _, public, fingerprint = pki.key_pair()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "vendor.pub").write_bytes(public.read_bytes())
    policy = parse_policy(
        f'version: 1\nsources:\n  s:\n    signers:\n      - key: {{fingerprint: "{fingerprint}", public_key: keys/vendor.pub}}\n'.encode(),
        path=tmp_path / "policy.yaml",
    )
    assert policy.source("s").signers.rules[0].describe() == f"key {fingerprint}"


def test_composable_rules() -> None:
    github = SigstoreIdentity("id", "https://issuer")
    evidence = SignerEvidence(method="sigstore", identity="id", issuer="https://issuer")
    assert github.check(evidence).ok
    wrong = SignerEvidence(method="sigstore", identity="id", issuer="https://other")
    result = github.check(wrong)
    assert not result.ok and result.failure == "issuer" and "https://other" in result.reason
    assert not AnyOf(()).check(evidence).ok
    assert not AllOf(()).check(evidence).ok
    assert AllOf((github, github)).check(evidence).ok
    assert not AllOf((github, SigstoreIdentity("other", "https://issuer"))).check(evidence).ok
    with pytest.raises(PolicyError):
        SigstoreIdentity("id", "")
