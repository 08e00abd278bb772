"""Signing method: Sigstore keyless (Fulcio certificate, Rekor entry), verified offline with a pinned trusted root."""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from integrity.errors import (
    BundleFormatError,
    CairnError,
    CertificateError,
    DigestMismatchError,
    SignatureError,
    SubjectMismatchError,
    UsageError,
)
from integrity.trust.bundles import _Bundle, certificate_identity, certificate_oidc_issuer
from integrity.trust.hashing import (
    sha256_file,
)
from integrity.trust.methods.registry import VerifyRequest, register_method
from integrity.trust.policy import (
    SignerEvidence,
    SignerRule,
    SigstoreIdentity,
    builtin_trusted_root,
)
from integrity.trust.signing import (
    IN_TOTO_PAYLOAD_TYPE,
)


class _IdentityCheckedByCairn:
    """A sigstore verification policy that defers the identity check to Cairn's policy.

    It is only ever used inside :func:`verify_artifact`, which applies the caller's
    signer rules (identity AND issuer) immediately after sigstore's checks pass.
    """

    def verify(self, cert: x509.Certificate) -> None:
        return None


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


@dataclass
class KeylessSigner:
    """Sigstore keyless signing with an ambient or given OIDC identity token."""

    trust_config: Path | None = None
    identity_token: str | None = None
    method: str = "sigstore"

    def sign_statement(self, statement: dict[str, Any]) -> str:
        from integrity.trust.keyless import sign_statement_keyless

        bundle: str = sign_statement_keyless(
            statement, trust_config=self.trust_config, identity_token=self.identity_token
        )
        return bundle

    def describe(self) -> dict[str, str]:
        return {"method": self.method}


def _sigstore_verifier(request: VerifyRequest) -> tuple[Any, Any]:
    evidence, _kind, payload = _verify_sigstore(request.bundle, request.artifact, request.rules, request.trusted_root)
    return evidence, payload


register_method("sigstore", _sigstore_verifier)
