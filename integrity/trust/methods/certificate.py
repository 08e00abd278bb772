"""Signing method: an X.509 certificate chained to a CA the policy pins (signer and verifier)."""

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from integrity.errors import (
    BundleFormatError,
    CertificateError,
    CertificateExpiredError,
    SignatureError,
    UntrustedCAError,
    UntrustedSignerError,
    UsageError,
)
from integrity.trust.bundles import _Bundle, certificate_identity
from integrity.trust.methods.registry import register_method
from integrity.trust.policy import (
    CertificateIdentity,
    SignerEvidence,
    SignerRule,
    approval_snippet,
)
from integrity.trust.signing import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    _dsse_envelope,
    _read,
    certificate_fingerprint,
    curve_hash,
    load_private_key,
    pae,
)


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


@dataclass
class CertificateSigner:
    """Sign with a private key whose certificate chains to the publisher's CA."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    method: str = "certificate"

    @classmethod
    def from_files(
        cls, key: str | Path, certificate: str | Path, chain: list[str | Path] | None = None
    ) -> "CertificateSigner":
        private_key = load_private_key(key)
        try:
            cert = x509.load_pem_x509_certificate(_read(certificate))
            intermediates = [c for p in chain or [] for c in x509.load_pem_x509_certificates(_read(p))]
        except ValueError as exc:
            raise UsageError(f"cannot load certificate: {exc}", artifact=certificate) from exc
        if cert.public_key() != private_key.public_key():
            raise UsageError("the certificate does not match the private key", artifact=certificate)
        return cls(private_key, cert, intermediates)

    def sign_statement(self, statement: dict[str, Any]) -> str:
        envelope, _ = _dsse_envelope(statement, self.private_key)
        certificates = [self.certificate, *self.chain]
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "x509CertificateChain": {
                    "certificates": [
                        {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}
                        for c in certificates
                    ]
                },
                "tlogEntries": [],
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle, indent=2)

    def describe(self) -> dict[str, str]:
        return {"method": self.method, "certificate_fingerprint": certificate_fingerprint(self.certificate)}


register_method("certificate", lambda r: _verify_certificate(r.bundle, r.rules, r.now, r.source))
