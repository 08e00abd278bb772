"""Signing method: a pinned ECDSA key (signer and verifier)."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from integrity.errors import (
    BundleFormatError,
    SignatureError,
    UntrustedSignerError,
)
from integrity.trust.bundles import _Bundle
from integrity.trust.methods.registry import register_method
from integrity.trust.policy import (
    PublicKey,
    SignerEvidence,
    SignerRule,
    approval_snippet,
)
from integrity.trust.signing import (
    BUNDLE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    _dsse_envelope,
    curve_hash,
    key_fingerprint,
    load_private_key,
    oms_key_hint,
    pae,
)


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


@dataclass
class KeySigner:
    """Sign with a private key; verifiers pin the matching public key by fingerprint."""

    private_key: ec.EllipticCurvePrivateKey
    method: str = "key"

    @classmethod
    def from_file(cls, path: str | Path, password: bytes | None = None) -> "KeySigner":
        return cls(load_private_key(path, password))

    def sign_statement(self, statement: dict[str, Any]) -> str:
        envelope, _ = _dsse_envelope(statement, self.private_key)
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "publicKey": {"hint": oms_key_hint(self.private_key.public_key())},
                "tlogEntries": [],
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle, indent=2)

    def describe(self) -> dict[str, str]:
        return {"method": self.method, "key_fingerprint": key_fingerprint(self.private_key.public_key())}


register_method("key", lambda r: _verify_key(r.bundle, r.rules, r.source))
