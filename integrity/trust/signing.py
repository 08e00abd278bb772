"""Sign manifests: a DSSE envelope over an in-toto statement, inside a Sigstore bundle.

This is model-signing's format for all three methods, so a bundle written here
verifies with ``model_signing verify`` and vice versa:

* **key**: ECDSA (P-256/384/521) private key; the bundle carries the public key's hint.
* **certificate**: private key plus an X.509 certificate chain issued by the publisher's CA.
* **keyless**: a short-lived Sigstore certificate bound to an OIDC identity, logged in a
  transparency log (see :mod:`integrity.trust.keyless`).
"""

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from integrity.canonical import canonical_json
from integrity.errors import ArtifactReadError, UsageError
from integrity.trust.hashing import HashingConfig, Manifest, hash_artifact

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: Name model-signing gives a directory's signature; Cairn keeps it inside the directory.
DEFAULT_SIGNATURE_NAME = "model.sig"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def curve_hash(public_key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    """The hash that goes with a curve, as the Sigstore bundle specification pairs them."""
    size = public_key.curve.key_size
    if size == 256:
        return hashes.SHA256()
    if size == 384:
        return hashes.SHA384()
    if size == 521:
        return hashes.SHA512()
    raise UsageError(f"unsupported elliptic curve {public_key.curve.name}")


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Cairn's key identifier: ``sha256:`` + SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def oms_key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """model-signing's key hint: SHA-256 of the PEM-encoded public key."""
    return hashlib.sha256(public_key_pem(public_key)).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return "sha256:" + certificate.fingerprint(hashes.SHA256()).hex()


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """Load a PEM public key (or take the key out of a PEM certificate)."""
    data = _read(path)
    try:
        key: object = (
            x509.load_pem_x509_certificate(data).public_key()
            if b"BEGIN CERTIFICATE" in data
            else serialization.load_pem_public_key(data)
        )
    except ValueError as exc:
        raise UsageError(f"not a PEM public key: {exc}", artifact=path) from exc
    return _require_ec(key, path)


def load_private_key(path: str | Path, password: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot load private key: {exc}", artifact=path) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError("only elliptic-curve keys (P-256, P-384, P-521) are supported", artifact=path)
    _require_ec(key.public_key(), path)
    return key


def _require_ec(key: object, path: str | Path) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        raise UsageError("only elliptic-curve keys (P-256, P-384, P-521) are supported", artifact=path)
    return key


def _read(path: str | Path) -> bytes:
    from integrity.safeio import read_regular_file

    return read_regular_file(path, what="key or certificate file", max_bytes=1 << 20, error=ArtifactReadError)


def generate_key_pair(private_path: str | Path, public_path: str | Path) -> str:
    """Create an ECDSA P-256 key pair (private key mode 0600); returns the fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(private_path, private_pem, mode=0o600)
    atomic_write(public_path, public_key_pem(key.public_key()))
    return key_fingerprint(key.public_key())


def atomic_write(path: str | Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write a file so readers see either the old or the new content, never a mix."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Signer(Protocol):
    """Turns an in-toto statement into a Sigstore bundle (JSON text)."""

    method: str

    def sign_statement(self, statement: dict[str, Any]) -> str: ...

    def describe(self) -> dict[str, str]: ...


def _dsse_envelope(statement: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> tuple[dict[str, Any], bytes]:
    payload = canonical_json(statement)
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(curve_hash(key.public_key())))
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
    }
    return envelope, payload


@dataclass(frozen=True)
class SignResult:
    artifact: Path
    signature: Path
    manifest: Manifest
    signer: dict[str, str]


def default_signature_path(artifact: Path) -> Path:
    """``DIR/model.sig`` for a directory (as model-signing does), ``FILE.sig`` for a file."""
    if artifact.is_dir():
        return artifact / DEFAULT_SIGNATURE_NAME
    return artifact.with_name(artifact.name + ".sig")


def signature_ignore_entry(artifact: Path, signature: Path) -> str | None:
    """The relative name to leave out of a directory's manifest when its signature lives inside it."""
    if not artifact.is_dir():
        return None
    try:
        return signature.resolve().relative_to(artifact.resolve()).as_posix()
    except ValueError:
        return None


def sign_artifact(
    path: str | Path,
    signer: Signer,
    *,
    signature_path: str | Path | None = None,
    config: HashingConfig | None = None,
) -> SignResult:
    """Hash a file or directory, sign its manifest and write the bundle atomically."""
    artifact = Path(path)
    signature = Path(signature_path) if signature_path else default_signature_path(artifact)
    config = config or HashingConfig()
    inside = signature_ignore_entry(artifact, signature)
    if inside:
        config = config.ignoring(inside)
    manifest = hash_artifact(artifact, config)
    bundle = signer.sign_statement(manifest.to_statement())
    atomic_write(signature, bundle.encode())
    return SignResult(artifact, signature, manifest, signer.describe())
