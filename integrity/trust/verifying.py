"""Verify a file or directory against its signature bundle and a signer policy.

The order is fixed and fail-closed:

1. read and parse the bundle (malformed -> :class:`BundleFormatError`);
2. check the cryptography for the bundle's method (Sigstore keyless against a pinned
   trusted root, a pinned public key, or a certificate chain to a pinned CA at a
   trusted time) and establish *who* signed (:class:`SignerEvidence`);
3. apply the policy to that evidence (wrong identity, issuer, unknown signer);
4. re-hash the artifact and compare it with what was signed, then with pinned digests.

Any exception that escapes a step is a rejection; nothing here writes anything.
"""

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    BundleFormatError,
    CairnError,
    CertificateError,
    CertificateExpiredError,
    DigestMismatchError,
    IdentityMismatchError,
    ManifestMismatchError,
    SignatureError,
    SubjectMismatchError,
    UnsignedArtifactError,
    UntrustedCAError,
    UntrustedSignerError,
    UsageError,
)
from integrity.trust.hashing import (
    OMS_PREDICATE_TYPE,
    Manifest,
    compare_manifests,
    hash_artifact,
    sha256_file,
)
from integrity.trust.policy import (
    AnyOf,
    CertificateIdentity,
    PublicKey,
    SignerEvidence,
    SignerRule,
    SigstoreIdentity,
    SourcePolicy,
    TrustPolicy,
    approval_snippet,
    builtin_trusted_root,
)
from integrity.trust.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    curve_hash,
    default_signature_path,
    oms_key_hint,
    pae,
    signature_ignore_entry,
)

MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SIGSTORE_OTHERNAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


@dataclass(frozen=True)
class VerificationResult:
    """A passed verification: what was checked, who signed it, under which rules."""

    artifact: Path
    kind: str  # "file" or "directory"
    digest: str  # sha256 of the file, or the manifest root digest of a directory
    evidence: SignerEvidence
    bundle: Path
    bundle_digest: str
    statement_kind: str  # "model-signing", "in-toto" or "message-signature"
    manifest: Manifest | None = None
    source: str | None = None
    policy: dict[str, Any] | None = None
    reason: str = ""
    verified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "verified",
            "artifact": str(self.artifact),
            "kind": self.kind,
            "digest": {"sha256": self.digest},
            "signer": self.evidence.as_dict(),
            "bundle": {"path": str(self.bundle), "sha256": self.bundle_digest},
            "statement": self.statement_kind,
            "files": len(self.manifest.files) if self.manifest else 1,
            "source": self.source,
            "policy": self.policy,
            "reason": self.reason,
            "verified_at": self.verified_at.isoformat(),
        }


# -- bundle parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bundle:
    path: Path
    text: str
    data: dict[str, Any]
    digest: str

    @property
    def material(self) -> dict[str, Any]:
        value = self.data.get("verificationMaterial")
        if not isinstance(value, dict):
            raise BundleFormatError("bundle has no verificationMaterial", artifact=self.path)
        return value

    @property
    def method(self) -> str:
        material = self.material
        if material.get("tlogEntries"):
            return "sigstore"
        if "publicKey" in material:
            return "key"
        if "x509CertificateChain" in material or "certificate" in material:
            return "certificate"
        raise BundleFormatError("bundle names no key, certificate or transparency-log entry", artifact=self.path)

    def dsse(self) -> tuple[str, bytes, bytes]:
        """(payload type, payload, signature) of the bundle's DSSE envelope."""
        envelope = self.data.get("dsseEnvelope")
        if not isinstance(envelope, dict):
            raise BundleFormatError("bundle has no DSSE envelope", artifact=self.path)
        try:
            payload = base64.b64decode(envelope["payload"], validate=True)
            signatures = envelope["signatures"]
            if not isinstance(signatures, list) or len(signatures) != 1:
                raise BundleFormatError("DSSE envelope must carry exactly one signature", artifact=self.path)
            signature = base64.b64decode(signatures[0]["sig"], validate=True)
            payload_type = envelope["payloadType"]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BundleFormatError(f"DSSE envelope is malformed ({exc!r})", artifact=self.path) from exc
        if not isinstance(payload_type, str):
            raise BundleFormatError("DSSE payloadType is not a string", artifact=self.path)
        return payload_type, payload, signature

    def certificates(self) -> list[x509.Certificate]:
        material = self.material
        try:
            if "x509CertificateChain" in material:
                raw = [c["rawBytes"] for c in material["x509CertificateChain"]["certificates"]]
            else:
                raw = [material["certificate"]["rawBytes"]]
            certs = [x509.load_der_x509_certificate(base64.b64decode(r, validate=True)) for r in raw]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise BundleFormatError(f"bundle certificates are malformed ({exc!r})", artifact=self.path) from exc
        if not certs:
            raise BundleFormatError("bundle certificate chain is empty", artifact=self.path)
        return certs


def _read_bundle(path: Path) -> _Bundle:
    if not path.exists() and not path.is_symlink():
        raise UnsignedArtifactError(f"no signature bundle at {path}", artifact=path)
    raw = safeio.read_regular_file(path, what="signature bundle", max_bytes=MAX_BUNDLE_BYTES + 1,
                                   error=ArtifactReadError)
    return _parse_bundle(raw, path)


def _parse_bundle(raw: bytes, path: Path) -> _Bundle:
    import hashlib

    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleFormatError(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes", artifact=path)
    if not raw.strip():
        raise BundleFormatError("bundle is empty", artifact=path)
    try:
        text = raw.decode("utf-8")
        data = safeio.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleFormatError(f"bundle is not valid JSON (truncated or corrupted?): {exc}", artifact=path) from exc
    if not isinstance(data, dict):
        raise BundleFormatError("bundle is not a JSON object", artifact=path)
    media = data.get("mediaType", "")
    if not isinstance(media, str) or not media.startswith("application/vnd.dev.sigstore.bundle"):
        raise BundleFormatError(f"not a Sigstore bundle (mediaType {media!r})", artifact=path)
    return _Bundle(path, text, data, hashlib.sha256(raw).hexdigest())


# -- certificate helpers -----------------------------------------------------------------------


def _der_utf8(value: bytes) -> str:
    """Decode a DER UTF8String (tag 0x0c) or return raw UTF-8 for v1 extensions."""
    if len(value) >= 2 and value[0] == 0x0C:
        length = value[1]
        offset = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(value[2 : 2 + count], "big")
            offset = 2 + count
        return value[offset : offset + length].decode("utf-8")
    return value.decode("utf-8")


def certificate_identity(certificate: x509.Certificate) -> str | None:
    """The signer identity in a certificate: its first email, URI or Sigstore otherName SAN."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for kind in (x509.RFC822Name, x509.UniformResourceIdentifier):
        values = san.get_values_for_type(kind)
        if values:
            return str(values[0])
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == _SIGSTORE_OTHERNAME:
            return _der_utf8(other.value)
    return None


def certificate_oidc_issuer(certificate: x509.Certificate) -> str | None:
    for oid in (_OIDC_ISSUER_V2, _OIDC_ISSUER_V1):
        try:
            ext = certificate.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        try:
            return _der_utf8(raw) if oid == _OIDC_ISSUER_V2 else raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


class _IdentityCheckedByCairn:
    """A sigstore verification policy that defers the identity check to Cairn's policy.

    It is only ever used inside :func:`verify_artifact`, which applies the caller's
    signer rules (identity AND issuer) immediately after sigstore's checks pass.
    """

    def verify(self, cert: x509.Certificate) -> None:
        return None


# -- method: Sigstore keyless --------------------------------------------------------------------


def _sigstore_roots(rules: list[SignerRule], trusted_root: str | Path | None) -> list[str]:
    if trusted_root is not None:
        return [str(trusted_root)]
    roots = [r.trusted_root for r in rules if isinstance(r, SigstoreIdentity)]
    return list(dict.fromkeys(roots)) or ["production"]


def _root_path(root: str) -> Path:
    if root in ("production", "staging"):
        return builtin_trusted_root(root)
    return Path(root)


def _verify_sigstore(
    bundle: _Bundle, artifact: Path, rules: list[SignerRule], trusted_root: str | Path | None
) -> tuple[SignerEvidence, str, bytes | None]:
    """Returns (evidence, statement kind, DSSE payload or None for a message signature)."""
    from sigstore.errors import Error as SigstoreBaseError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        parsed = Bundle.from_json(bundle.text)
    except Exception as exc:  # sigstore raises several types for malformed input
        raise BundleFormatError(f"not a valid Sigstore bundle: {exc}", artifact=bundle.path) from exc
    certificate = parsed.signing_certificate
    last_error: Exception | None = None
    for root in _sigstore_roots(rules, trusted_root):
        try:
            verifier = Verifier(trusted_root=TrustedRoot.from_file(str(_root_path(root))))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load trusted root {root}: {exc}", artifact=root) from exc
        # Identity and issuer are enforced by Cairn's own policy right after, with clearer
        # errors; everything cryptographic (chain, SCT, log inclusion, signature) happens here.
        no_identity_check = _IdentityCheckedByCairn()
        try:
            if parsed._dsse_envelope is not None:
                payload_type, payload = verifier.verify_dsse(parsed, no_identity_check)
                if payload_type != IN_TOTO_PAYLOAD_TYPE:
                    raise BundleFormatError(f"unexpected DSSE payload type {payload_type!r}", artifact=bundle.path)
                kind = "dsse"
                result_payload: bytes | None = payload
            else:
                if artifact.is_dir():
                    raise SubjectMismatchError(
                        "a message-signature bundle signs one file, not a directory", artifact=artifact
                    )
                hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256_file(artifact)))
                _check_message_digest(bundle, artifact, hashed.digest)
                verifier.verify_artifact(hashed, parsed, no_identity_check)
                kind = "message-signature"
                result_payload = None
        except CairnError:
            raise
        except SigstoreBaseError as exc:
            last_error = exc
            continue
        evidence = SignerEvidence(
            method="sigstore",
            identity=certificate_identity(certificate),
            issuer=certificate_oidc_issuer(certificate),
            certificate=certificate,
            trusted_root=root,
            signed_at=datetime.fromtimestamp(parsed.log_entry._inner.integrated_time, UTC)
            if parsed.log_entry._inner.integrated_time
            else None,
            time_source="transparency-log",
        )
        return evidence, kind, result_payload
    message = str(last_error)
    lowered = message.lower()
    if "chain" in lowered or "certificate" in lowered or "sct" in lowered:
        raise CertificateError(
            f"Sigstore certificate did not verify against the pinned trusted root(s): {message}",
            artifact=bundle.path,
        )
    raise SignatureError(f"Sigstore verification failed: {message}", artifact=bundle.path)


def _check_message_digest(bundle: _Bundle, artifact: Path, digest: bytes) -> None:
    signature = bundle.data.get("messageSignature")
    if not isinstance(signature, dict):
        raise BundleFormatError("bundle has neither a DSSE envelope nor a message signature", artifact=bundle.path)
    recorded = signature.get("messageDigest", {}).get("digest")
    if recorded:
        try:
            signed = base64.b64decode(recorded, validate=True)
        except binascii.Error as exc:
            raise BundleFormatError("message digest is not base64", artifact=bundle.path) from exc
        if signed != digest:
            raise DigestMismatchError(
                f"file sha256 {digest.hex()} differs from the signed sha256 {signed.hex()}", artifact=artifact
            )


# -- method: pinned key ----------------------------------------------------------------------------


def _verify_key(bundle: _Bundle, rules: list[SignerRule], source: str) -> tuple[SignerEvidence, bytes]:
    payload_type, payload, signature = bundle.dsse()
    key_material = bundle.material.get("publicKey")
    hint = key_material.get("hint", "") if isinstance(key_material, dict) else ""
    keys = [rule for rule in rules if isinstance(rule, PublicKey)]
    candidates = [rule for rule in keys if not hint or oms_key_hint(rule.key) == hint]
    if not candidates:
        evidence = SignerEvidence(method="key", key_fingerprint=None)
        pinned = ", ".join(rule.fingerprint for rule in keys) or "none"
        raise UntrustedSignerError(
            f"signed by a key the policy does not list (bundle key hint {hint or 'absent'}; pinned keys: {pinned})",
            artifact=bundle.path,
            advice=(
                "If the publisher rotated its key, obtain the new public key through a trusted channel, "
                "check its fingerprint (`cairn key fingerprint KEY.pub`) with the publisher, and approve "
                "it with a reviewed policy change that bumps `version`:\n" + approval_snippet(source, evidence)
            ),
        )
    for rule in candidates:
        try:
            rule.key.verify(signature, pae(payload_type, payload), ec.ECDSA(curve_hash(rule.key)))
        except InvalidSignature:
            continue
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise BundleFormatError(f"unexpected DSSE payload type {payload_type!r}", artifact=bundle.path)
        return SignerEvidence(method="key", key_fingerprint=rule.fingerprint, time_source="none"), payload
    raise SignatureError(
        "the signature does not verify with the pinned key (the bundle or its payload was altered)",
        artifact=bundle.path,
    )


# -- method: certificate chain -------------------------------------------------------------------


def _verify_chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], cas: tuple[x509.Certificate, ...], at: datetime
) -> None:
    from OpenSSL import crypto

    store = crypto.X509Store()
    for ca in cas:
        store.add_cert(crypto.X509.from_cryptography(ca))
    store.set_time(at.replace(tzinfo=None))
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in intermediates],
    )
    context.verify_certificate()


def _can_sign(certificate: x509.Certificate) -> bool:
    try:
        if certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in usages
    except x509.ExtensionNotFound:
        return False


def _verify_certificate(
    bundle: _Bundle, rules: list[SignerRule], now: datetime, source: str
) -> tuple[SignerEvidence, bytes]:
    from OpenSSL import crypto

    payload_type, payload, signature = bundle.dsse()
    leaf, *intermediates = bundle.certificates()
    identity = certificate_identity(leaf)
    ca_rules = [rule for rule in rules if isinstance(rule, CertificateIdentity)]
    if not ca_rules:
        evidence = SignerEvidence(method="certificate", identity=identity)
        raise UntrustedSignerError(
            f"signed with a certificate for {identity!r}, but the policy pins no certificate authority",
            artifact=bundle.path,
            advice="Approve the publisher's CA with a reviewed policy change:\n" + approval_snippet(source, evidence),
        )
    # A trusted signing time needs a timestamp from a pinned authority; without one the
    # certificate must be valid now, so an expired certificate is always rejected.
    signing_time, time_source = now, "verification-time"
    chain_errors: list[str] = []
    matched: CertificateIdentity | None = None
    for rule in ca_rules:
        stamped = _trusted_timestamp(bundle, signature, rule)
        at = stamped or now
        try:
            _verify_chain(leaf, intermediates, rule.cas, at)
        except crypto.X509StoreContextError as exc:
            chain_errors.append(str(exc))
            continue
        matched, signing_time = rule, at
        time_source = "rfc3161" if stamped else "verification-time"
        break
    if matched is None:
        expired = leaf.not_valid_after_utc < now or leaf.not_valid_before_utc > now
        detail = "; ".join(dict.fromkeys(chain_errors))
        if expired and any("expired" in e or "not yet valid" in e for e in chain_errors):
            raise CertificateExpiredError(
                f"certificate for {identity!r} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at the signing time checked "
                f"({now:%Y-%m-%d %H:%M} UTC, no trusted timestamp in the bundle)",
                artifact=bundle.path,
            )
        raise UntrustedCAError(
            f"certificate for {identity!r} (issuer {leaf.issuer.rfc4514_string()}) does not chain to a CA "
            f"pinned in the policy: {detail}",
            artifact=bundle.path,
        )
    if not _can_sign(leaf):
        raise CertificateError("the certificate is not allowed to sign (key usage)", artifact=bundle.path)
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError("only elliptic-curve certificates are supported", artifact=bundle.path)
    try:
        public_key.verify(signature, pae(payload_type, payload), ec.ECDSA(curve_hash(public_key)))
    except InvalidSignature as exc:
        raise SignatureError(
            "the signature does not verify with the certificate's key (the bundle or its payload was altered)",
            artifact=bundle.path,
        ) from exc
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise BundleFormatError(f"unexpected DSSE payload type {payload_type!r}", artifact=bundle.path)
    evidence = SignerEvidence(
        method="certificate",
        identity=identity,
        ca_fingerprints=matched.ca_fingerprints,
        certificate=leaf,
        signed_at=signing_time,
        time_source=time_source,
    )
    return evidence, payload


def _trusted_timestamp(bundle: _Bundle, signature: bytes, rule: CertificateIdentity) -> datetime | None:
    """The time from an RFC 3161 timestamp over the signature, if a TSA pinned by ``rule`` signed it."""
    stamps = bundle.material.get("timestampVerificationData", {}) or {}
    entries = stamps.get("rfc3161Timestamps", []) if isinstance(stamps, dict) else []
    if not entries or not rule.tsa_certs:
        return None
    from rfc3161_client import VerifierBuilder, decode_timestamp_response

    for entry in entries:
        try:
            response = decode_timestamp_response(base64.b64decode(entry["signedTimestamp"], validate=True))
            builder = VerifierBuilder()
            for cert in rule.tsa_certs:
                builder = builder.add_root_certificate(cert)
            builder.build().verify_message(response, signature)
            return response.tst_info.gen_time.replace(tzinfo=UTC)
        except Exception as exc:  # an unverifiable timestamp is not a trusted time
            raise CertificateError(f"RFC 3161 timestamp does not verify: {exc}", artifact=bundle.path) from exc
    return None


# -- content ------------------------------------------------------------------------------------------


#: Statements Cairn itself signs about artifacts (records, revocations): never an artifact's signature.
CAIRN_RECORD_PREFIX = "https://cairn.dev/attestations/"


def _check_content(
    artifact: Path, bundle: _Bundle, payload: bytes
) -> tuple[str, str, Manifest | None]:
    """Compare the artifact with the signed statement; returns (statement kind, digest, manifest)."""
    try:
        statement = safeio.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"signed payload is not JSON: {exc}", artifact=bundle.path) from exc
    if not isinstance(statement, dict):
        raise BundleFormatError("signed payload is not a JSON object", artifact=bundle.path)
    predicate_type = statement.get("predicateType")
    if isinstance(predicate_type, str) and predicate_type.startswith(CAIRN_RECORD_PREFIX):
        raise BundleFormatError(
            f"the bundle holds a Cairn record ({predicate_type}), not a publisher's signature of an artifact: a "
            "revocation or attestation cannot stand in for a signature", artifact=bundle.path)
    if predicate_type == OMS_PREDICATE_TYPE:
        expected = Manifest.from_statement(statement, artifact=str(bundle.path))
        config = expected.config
        inside = signature_ignore_entry(artifact, bundle.path)
        if inside and inside not in config.ignore_paths:
            config = config.ignoring(inside)
        actual = hash_artifact(artifact, config, model_name=expected.model_name)
        try:
            compare_manifests(expected, actual, artifact=str(artifact))
        except ManifestMismatchError as exc:
            if artifact.is_file():
                if expected.model_name != artifact.name:
                    raise SubjectMismatchError(
                        f"the bundle was made for {expected.model_name!r}, whose content differs from this file",
                        artifact=artifact,
                    ) from exc
                raise DigestMismatchError(
                    f"file sha256 {actual.resources[0].digest} differs from the signed "
                    f"{', '.join(r.digest for r in expected.resources)}",
                    artifact=artifact,
                ) from exc
            raise
        digest = actual.resources[0].digest if artifact.is_file() and len(actual.resources) == 1 else actual.root_digest
        return "model-signing", digest, actual
    if artifact.is_dir():
        raise SubjectMismatchError(
            f"the bundle holds a {statement.get('predicateType')!r} statement, not a directory signature",
            artifact=artifact,
        )
    digest = sha256_file(artifact)
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise BundleFormatError("in-toto statement has no subject list", artifact=bundle.path)
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and str(digests.get("sha256", "")).lower() == digest:
            return "in-toto", digest, None
    names = [s.get("name") for s in subjects if isinstance(s, dict)]
    raise SubjectMismatchError(
        f"no subject of the signed statement has this file's sha256 {digest} (subjects: {names})",
        artifact=artifact,
    )


# -- public entry points ----------------------------------------------------------------------------


def verify_artifact(
    path: str | Path,
    signers: SignerRule,
    *,
    bundle: str | Path | None = None,
    pinned_digests: tuple[str, ...] = (),
    trusted_root: str | Path | None = None,
    source: str | None = None,
    policy: TrustPolicy | None = None,
) -> VerificationResult:
    """Verify ``path`` against ``bundle`` (default: beside or inside it) and the signer rules.

    Raises a :class:`integrity.errors.CairnError` subclass on any failure; returns a
    :class:`VerificationResult` only when every check passed.
    """
    artifact = Path(path)
    if not artifact.exists() and not artifact.is_symlink():
        raise ArtifactReadError("no such file or directory", artifact=artifact)
    bundle_path = Path(bundle) if bundle else default_signature_path(artifact)
    parsed = _read_bundle(bundle_path)
    rules = list(signers.rules) if isinstance(signers, AnyOf) else [signers]
    if not rules:
        raise UntrustedSignerError(
            "the policy allows no signers for this artifact (an empty policy rejects everything)",
            artifact=artifact,
            advice="Add the publisher's signer to the policy in a reviewed change.",
        )
    now = datetime.now(UTC)
    method = parsed.method
    if method == "sigstore":
        evidence, _kind, payload = _verify_sigstore(parsed, artifact, rules, trusted_root)
    elif method == "key":
        evidence, payload = _verify_key(parsed, rules, source or "<source>")
    else:
        evidence, payload = _verify_certificate(parsed, rules, now, source or "<source>")

    decision = signers.check(evidence)
    if not decision.ok:
        if decision.failure in ("identity", "issuer"):
            raise IdentityMismatchError(
                f"signed by {evidence.describe()}, which the policy does not allow: {decision.reason}",
                artifact=artifact,
                advice=(
                    "If this signer is legitimate, approve it with a reviewed policy change that bumps "
                    "`version`:\n" + approval_snippet(source or "<source>", evidence)
                ),
            )
        raise UntrustedSignerError(
            f"signed by {evidence.describe()}, which is not in the policy: {decision.reason}",
            artifact=artifact,
            advice="Approve it with a reviewed policy change:\n" + approval_snippet(source or "<source>", evidence),
        )

    if payload is None:
        statement_kind, digest, manifest = "message-signature", sha256_file(artifact), None
    else:
        statement_kind, digest, manifest = _check_content(artifact, parsed, payload)
    if pinned_digests and digest not in pinned_digests:
        raise DigestMismatchError(
            f"sha256 {digest} is not one of the digests pinned in the policy ({', '.join(pinned_digests)})",
            artifact=artifact,
            advice="The publisher signed new content. Review it, then pin its digest in a policy change.",
        )
    return VerificationResult(
        artifact=artifact,
        kind="directory" if artifact.is_dir() else "file",
        digest=digest,
        evidence=evidence,
        bundle=bundle_path,
        bundle_digest=parsed.digest,
        statement_kind=statement_kind,
        manifest=manifest,
        source=source,
        policy=policy.describe() if policy else None,
        reason=decision.reason,
        verified_at=now,
    )


def verify_source(
    path: str | Path,
    policy: TrustPolicy,
    source: str,
    *,
    bundle: str | Path | None = None,
    trusted_root: str | Path | None = None,
) -> VerificationResult:
    """Verify an artifact against its source's entry in a trust policy."""
    entry: SourcePolicy = policy.source(source)
    return verify_artifact(
        path,
        entry.signers,
        bundle=bundle,
        pinned_digests=entry.digests,
        trusted_root=trusted_root,
        source=source,
        policy=policy,
    )


@dataclass(frozen=True)
class SignedStatement:
    """A DSSE-signed in-toto statement whose signature and signer passed the rules."""

    statement: dict[str, Any]
    evidence: SignerEvidence
    bundle_digest: str


def verify_statement(
    bundle: bytes | str | Path,
    signers: SignerRule,
    *,
    predicate_type: str | None = None,
    trusted_root: str | Path | None = None,
    where: str | Path = "<statement>",
) -> SignedStatement:
    """Verify a bundle that signs a statement rather than an artifact (records, revocations).

    ``bundle`` is the bundle's bytes or text, or a path to it. The cryptography and the signer
    rules are applied exactly as for artifacts; a wrong ``predicate_type`` is a rejection.
    """
    if isinstance(bundle, Path):
        parsed = _read_bundle(bundle)
        where = bundle
    else:
        raw = bundle.encode() if isinstance(bundle, str) else bundle
        parsed = _parse_bundle(raw, Path(str(where)))
    rules = list(signers.rules) if isinstance(signers, AnyOf) else [signers]
    if not rules:
        raise UntrustedSignerError("no signers are allowed for this statement (an empty rule set rejects everything)",
                                   artifact=where)
    method = parsed.method
    if method == "sigstore":
        if parsed.data.get("dsseEnvelope") is None:
            raise BundleFormatError("a statement bundle must carry a DSSE envelope", artifact=where)
        evidence, _kind, payload = _verify_sigstore(parsed, Path(str(where)), rules, trusted_root)
    elif method == "key":
        evidence, payload = _verify_key(parsed, rules, str(where))
    else:
        evidence, payload = _verify_certificate(parsed, rules, datetime.now(UTC), str(where))
    decision = signers.check(evidence)
    if not decision.ok:
        raise UntrustedSignerError(f"signed by {evidence.describe()}, which is not allowed: {decision.reason}",
                                   artifact=where)
    try:
        statement = safeio.loads(payload or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"signed payload is not JSON: {exc}", artifact=where) from exc
    if not isinstance(statement, dict):
        raise BundleFormatError("signed payload is not a JSON object", artifact=where)
    if predicate_type is not None and statement.get("predicateType") != predicate_type:
        raise SubjectMismatchError(
            f"expected a {predicate_type!r} statement, found {statement.get('predicateType')!r}", artifact=where)
    return SignedStatement(statement, evidence, parsed.digest)
