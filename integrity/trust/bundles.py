"""Signature bundles as Cairn reads them (Sigstore, key and certificate forms) and certificate helpers."""

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    BundleFormatError,
    UnsignedArtifactError,
)

MAX_BUNDLE_BYTES = 16 * 1024 * 1024


_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")


_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


_SIGSTORE_OTHERNAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


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
