"""Keyless (Fulcio + Rekor) signing, end to end against a private Sigstore instance on loopback.

Every bundle made here is verified offline with sigstore-python's own ``Verifier`` against the
private instance's trusted root: certificate chain at the log's integrated time, embedded SCT,
Merkle inclusion proof, signed checkpoint, SET, DSSE signature and log-entry consistency.
"""

# The session fixture is imported, so every test that takes it "redefines" the import.
# ruff: noqa: F811

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from sigstore.errors import VerificationError as SigstoreVerificationError
from sigstore.models import Bundle, TrustedRoot
from sigstore.oidc import IdentityError
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity

import integrity.trust.keyless as keyless
from integrity.errors import UsageError
from integrity.trust.hashing import hash_artifact
from integrity.trust.keyless import DEFAULT_TRUST_CONFIG, ID_TOKEN_ENV, load_trust_config, sign_statement_keyless
from tests.support.private_sigstore import PrivateSigstore, make_ca, private_sigstore  # noqa: F401

REPO = Path(__file__).resolve().parents[3]
PRODUCTION_ROOT = REPO / "integrity" / "data" / "trust_roots" / "production_trusted_root.json"
EMAIL = "release-bot@cairn.example"
EMAIL_ISSUER = "https://accounts.cairn.example"
WORKFLOW = "https://github.com/acme/models/.github/workflows/release.yml@refs/heads/main"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
IN_TOTO = "application/vnd.in-toto+json"


@pytest.fixture
def statement(tmp_path: Path) -> dict[str, Any]:
    model = tmp_path / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "weights.bin").write_bytes(bytes(range(256)) * 300)
    (model / "config.json").write_text('{"hidden": 16}\n')
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    return hash_artifact(model).to_statement()


@pytest.fixture
def no_ambient(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token in the environment and no CI credentials, whatever machine runs the tests."""
    monkeypatch.delenv(ID_TOKEN_ENV, raising=False)
    monkeypatch.setattr(keyless, "detect_credential", lambda *a, **k: None)


def verify(bundle_json: str, root: Path, identity: str, issuer: str) -> tuple[str, bytes]:
    verifier = Verifier(trusted_root=TrustedRoot.from_file(str(root)))
    return verifier.verify_dsse(Bundle.from_json(bundle_json), Identity(identity=identity, issuer=issuer))


def sign(ps: PrivateSigstore, statement: dict[str, Any], identity: str = EMAIL, issuer: str = EMAIL_ISSUER) -> str:
    token = ps.mint_token(identity, issuer)
    return sign_statement_keyless(statement, trust_config=ps.trust_config_path, identity_token=token)


@pytest.fixture(scope="module")
def signed(private_sigstore: PrivateSigstore, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One statement signed by EMAIL, shared by the read-only negative tests."""
    model = tmp_path_factory.mktemp("signed-model")
    (model / "weights.bin").write_bytes(b"\x01" * 5000)
    stmt = hash_artifact(model).to_statement()
    return stmt, sign(private_sigstore, stmt)


# -- the happy path, fully checked -----------------------------------------------------------------


def test_keyless_bundle_verifies_offline_and_carries_the_statement(
    private_sigstore: PrivateSigstore, statement: dict[str, Any]
) -> None:
    bundle_json = sign(private_sigstore, statement)

    payload_type, payload = verify(bundle_json, private_sigstore.trusted_root_path, EMAIL, EMAIL_ISSUER)
    assert payload_type == IN_TOTO
    assert json.loads(payload) == statement

    data = json.loads(bundle_json)
    assert data["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert data["dsseEnvelope"]["payloadType"] == IN_TOTO
    [entry] = data["verificationMaterial"]["tlogEntries"]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert entry["inclusionPromise"]["signedEntryTimestamp"]
    proof = entry["inclusionProof"]
    assert int(proof["treeSize"]) > int(proof["logIndex"]) >= 6 and proof["hashes"]  # the log is pre-seeded
    # The log really recorded this envelope's payload.
    recorded = private_sigstore.entries[int(entry["logIndex"])]
    assert recorded["spec"]["payloadHash"]["value"] == hashlib.sha256(payload).hexdigest()

    cert = Bundle.from_json(bundle_json).signing_certificate
    assert cert.issuer == private_sigstore.intermediate_cert.subject
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name
    ) == [EMAIL]
    assert len(cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value) == 1
    assert private_sigstore.server_errors == []


def test_workflow_identity_is_a_uri_san(private_sigstore: PrivateSigstore, statement: dict[str, Any]) -> None:
    bundle_json = sign(private_sigstore, statement, WORKFLOW, GITHUB_ISSUER)
    _, payload = verify(bundle_json, private_sigstore.trusted_root_path, WORKFLOW, GITHUB_ISSUER)
    assert json.loads(payload) == statement
    cert = Bundle.from_json(bundle_json).signing_certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WORKFLOW]


# -- verification rejects what it must ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [
        ("someone-else@cairn.example", EMAIL_ISSUER),
        (EMAIL, "https://other-issuer.example"),
        (EMAIL, GITHUB_ISSUER),
    ],
    ids=["wrong-identity", "wrong-issuer", "issuer-of-another-identity"],
)
def test_wrong_identity_or_issuer_fails(
    private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str], identity: str, issuer: str
) -> None:
    _, bundle_json = signed
    with pytest.raises(SigstoreVerificationError):
        verify(bundle_json, private_sigstore.trusted_root_path, identity, issuer)


def test_tampered_payload_fails(private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str]) -> None:
    stmt, bundle_json = signed
    forged = json.loads(json.dumps(stmt))
    forged["predicate"]["resources"][0]["digest"] = "0" * 64
    data = json.loads(bundle_json)
    data["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(forged, indent=2, sort_keys=True).encode()).decode()
    with pytest.raises(SigstoreVerificationError, match="DSSE"):
        verify(json.dumps(data), private_sigstore.trusted_root_path, EMAIL, EMAIL_ISSUER)


def test_tampered_log_entry_fails(private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str]) -> None:
    _, bundle_json = signed
    data = json.loads(bundle_json)
    entry = data["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)  # no longer matches the SET
    with pytest.raises(SigstoreVerificationError, match="SET"):
        verify(json.dumps(data), private_sigstore.trusted_root_path, EMAIL, EMAIL_ISSUER)


def test_private_bundle_fails_against_the_production_root(signed: tuple[dict[str, Any], str]) -> None:
    _, bundle_json = signed
    with pytest.raises(SigstoreVerificationError, match="chain"):
        verify(bundle_json, PRODUCTION_ROOT, EMAIL, EMAIL_ISSUER)


def test_bundle_fails_against_a_root_with_another_ca(
    private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    _, bundle_json = signed
    with pytest.raises(SigstoreVerificationError, match="chain"):
        verify(bundle_json, private_sigstore.untrusted_ca_root(tmp_path / "root.json"), EMAIL, EMAIL_ISSUER)


def test_verifier_checks_the_embedded_sct(
    private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    """Same CA and log, but the trusted root names another CT log key: the SCT must fail."""
    _, bundle_json = signed
    other_ct, _ = make_ca("unrelated-ct-key")
    root = private_sigstore.write_trusted_root(tmp_path / "root.json", ct_key=other_ct)
    with pytest.raises(SigstoreVerificationError, match="SCT"):
        verify(bundle_json, root, EMAIL, EMAIL_ISSUER)


def test_verifier_checks_the_log_key(
    private_sigstore: PrivateSigstore, signed: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    _, bundle_json = signed
    other_log, _ = make_ca("unrelated-log-key")
    root = private_sigstore.write_trusted_root(tmp_path / "root.json", rekor_key=other_log)
    with pytest.raises(SigstoreVerificationError, match="log entry"):
        verify(bundle_json, root, EMAIL, EMAIL_ISSUER)


# -- identity token discovery -------------------------------------------------------------------------


def test_no_token_anywhere_is_a_usage_error(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], no_ambient: None
) -> None:
    requests_before = len(private_sigstore.fulcio.requests)
    with pytest.raises(UsageError, match="OIDC identity token") as caught:
        sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path)
    assert ID_TOKEN_ENV in caught.value.diagnostics()
    assert len(private_sigstore.fulcio.requests) == requests_before  # nothing was sent anywhere


def test_token_from_environment(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], no_ambient: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ID_TOKEN_ENV, private_sigstore.mint_token("env-signer@cairn.example", EMAIL_ISSUER))
    bundle_json = sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path)
    _, payload = verify(bundle_json, private_sigstore.trusted_root_path, "env-signer@cairn.example", EMAIL_ISSUER)
    assert json.loads(payload) == statement


def test_explicit_token_wins_over_environment_and_ambient(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ID_TOKEN_ENV, private_sigstore.mint_token("env-signer@cairn.example", EMAIL_ISSUER))
    monkeypatch.setattr(keyless, "detect_credential", lambda *a, **k: pytest.fail("ambient lookup not expected"))
    bundle_json = sign(private_sigstore, statement, "explicit@cairn.example")
    verify(bundle_json, private_sigstore.trusted_root_path, "explicit@cairn.example", EMAIL_ISSUER)
    with pytest.raises(SigstoreVerificationError):
        verify(bundle_json, private_sigstore.trusted_root_path, "env-signer@cairn.example", EMAIL_ISSUER)


def test_ambient_ci_credentials(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], no_ambient: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = private_sigstore.mint_token(WORKFLOW, GITHUB_ISSUER)
    monkeypatch.setattr(keyless, "detect_credential", lambda *a, **k: token)
    bundle_json = sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path)
    verify(bundle_json, private_sigstore.trusted_root_path, WORKFLOW, GITHUB_ISSUER)


def test_ambient_detection_error_is_a_usage_error(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], no_ambient: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise IdentityError("GitHub: missing id-token permission")

    monkeypatch.setattr(keyless, "detect_credential", broken)
    with pytest.raises(UsageError, match="ambient OIDC credential detection failed: GitHub"):
        sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path)


def test_expired_or_malformed_token_is_refused_before_contacting_fulcio(
    private_sigstore: PrivateSigstore, statement: dict[str, Any]
) -> None:
    before = len(private_sigstore.fulcio.requests)
    for token in (private_sigstore.mint_token(EMAIL, EMAIL_ISSUER, expired=True), "not-a-jwt"):
        with pytest.raises(UsageError, match="identity token argument is not usable"):
            sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path, identity_token=token)
    with pytest.raises(UsageError, match="empty"):
        sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path, identity_token="  ")
    assert len(private_sigstore.fulcio.requests) == before


def test_token_fulcio_does_not_trust_is_refused(private_sigstore: PrivateSigstore, statement: dict[str, Any]) -> None:
    forged = private_sigstore.mint_token(EMAIL, EMAIL_ISSUER, forged=True)
    with pytest.raises(UsageError, match=r"Fulcio at http://127\.0\.0\.1:\d+ did not issue .*401") as caught:
        sign_statement_keyless(statement, trust_config=private_sigstore.trust_config_path, identity_token=forged)
    assert EMAIL in str(caught.value)
    assert "identity token rejected" in str(caught.value)  # Fulcio's own explanation is kept


# -- service failures: fail closed, say which service ------------------------------------------------


def test_sct_from_an_untrusted_ct_key_is_refused_at_signing(
    private_sigstore: PrivateSigstore, statement: dict[str, Any]
) -> None:
    entries = len(private_sigstore.entries)
    with private_sigstore.fault("sct-untrusted-key"), pytest.raises(UsageError, match=r"Fulcio.*SCT"):
        sign(private_sigstore, statement)
    assert len(private_sigstore.entries) == entries  # never reached the log


@pytest.mark.parametrize("fault", ["inclusion-proof-wrong", "checkpoint-untrusted-key", "set-untrusted-key"])
def test_bad_log_proofs_are_refused_at_signing(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], fault: str
) -> None:
    with private_sigstore.fault(fault), pytest.raises(UsageError, match="does not verify against") as caught:
        sign(private_sigstore, statement)
    assert "invalid log entry" in caught.value.reason


def test_log_time_outside_certificate_validity_is_refused(
    private_sigstore: PrivateSigstore, statement: dict[str, Any]
) -> None:
    import datetime as dt

    private_sigstore.log_time_offset = dt.timedelta(hours=1)  # the 10-minute certificate has expired by then
    try:
        with pytest.raises(UsageError, match="does not verify against"):
            sign(private_sigstore, statement)
    finally:
        private_sigstore.log_time_offset = dt.timedelta(0)


def test_expired_ca_is_refused(tmp_path: Path, statement: dict[str, Any]) -> None:
    with PrivateSigstore(tmp_path / "expired", expired_ca=True) as expired:
        with pytest.raises(UsageError, match=r"does not verify against.*chain"):
            sign(expired, statement)
        assert expired.entries  # it was logged: only the verification of the chain caught it


def test_unavailable_services_are_named(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], tmp_path: Path
) -> None:
    with private_sigstore.fault("rekor-unavailable"), pytest.raises(UsageError, match="transparency log at http"):
        sign(private_sigstore, statement)
    with private_sigstore.fault("fulcio-unavailable"), pytest.raises(UsageError, match="Fulcio at http"):
        sign(private_sigstore, statement)
    unreachable = private_sigstore.write_trust_config(tmp_path / "tc.json", fulcio_url="http://127.0.0.1:9")
    token = private_sigstore.mint_token(EMAIL, EMAIL_ISSUER)
    with pytest.raises(UsageError, match=r"Fulcio at http://127\.0\.0\.1:9 .*(Connection|refused)"):
        sign_statement_keyless(statement, trust_config=unreachable, identity_token=token)


def test_signing_services_and_trusted_root_must_match(
    private_sigstore: PrivateSigstore, statement: dict[str, Any], tmp_path: Path
) -> None:
    """A trust config whose trusted root is another instance's: never write an unverifiable bundle."""
    _, other_root = make_ca("cairn-test-other-root")
    mismatched = private_sigstore.write_trust_config(
        tmp_path / "tc.json", trusted_root=private_sigstore.trusted_root(ca_chain=[other_root])
    )
    token = private_sigstore.mint_token(EMAIL, EMAIL_ISSUER)
    with pytest.raises(UsageError, match="does not verify against the trust config's own trusted root"):
        sign_statement_keyless(statement, trust_config=mismatched, identity_token=token)


# -- configuration --------------------------------------------------------------------------------------


def test_default_trust_config_is_the_shipped_production_config() -> None:
    assert DEFAULT_TRUST_CONFIG.is_file()
    config = load_trust_config()  # a local file: no TUF, no network
    assert config.signing_config.get_fulcio().url == "https://fulcio.sigstore.dev"
    assert json.loads(DEFAULT_TRUST_CONFIG.read_text())["trustedRoot"] == json.loads(PRODUCTION_ROOT.read_text())


@pytest.mark.parametrize("content", [None, "{}", "not json", '{"mediaType": "x"}'])
def test_unusable_trust_config_is_a_usage_error(tmp_path: Path, statement: dict[str, Any], content: str | None) -> None:
    path = tmp_path / "tc.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match="trust config") as caught:
        sign_statement_keyless(statement, trust_config=path, identity_token="unused")
    assert caught.value.artifact == str(path)


def test_invalid_statement_is_a_usage_error(private_sigstore: PrivateSigstore) -> None:
    token = private_sigstore.mint_token(EMAIL, EMAIL_ISSUER)
    with pytest.raises(UsageError, match="in-toto"):
        sign_statement_keyless(
            {"hello": "world"}, trust_config=private_sigstore.trust_config_path, identity_token=token
        )


# -- through Cairn's own signing and verification --------------------------------------------------------


def test_sign_artifact_and_verify_artifact_with_a_keyless_signer(
    private_sigstore: PrivateSigstore, tmp_path: Path
) -> None:
    from integrity.errors import CertificateError, IdentityMismatchError
    from integrity.trust.methods.sigstore import KeylessSigner
    from integrity.trust.policy import SigstoreIdentity
    from integrity.trust.signing import sign_artifact
    from integrity.trust.verifying import verify_artifact

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x07" * 10_000)
    (model / "config.json").write_text("{}\n")
    token = private_sigstore.mint_token(WORKFLOW, GITHUB_ISSUER)
    result = sign_artifact(model, KeylessSigner(trust_config=private_sigstore.trust_config_path, identity_token=token))

    root = str(private_sigstore.trusted_root_path)
    verified = verify_artifact(model, SigstoreIdentity(identity=WORKFLOW, issuer=GITHUB_ISSUER, trusted_root=root))
    assert verified.evidence.identity == WORKFLOW
    assert verified.evidence.issuer == GITHUB_ISSUER
    assert verified.digest == result.manifest.root_digest

    with pytest.raises(IdentityMismatchError):
        verify_artifact(model, SigstoreIdentity(identity=WORKFLOW, issuer=EMAIL_ISSUER, trusted_root=root))
    with pytest.raises(CertificateError):
        verify_artifact(model, SigstoreIdentity(identity=WORKFLOW, issuer=GITHUB_ISSUER, trusted_root="production"))
