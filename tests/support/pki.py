"""A throwaway X.509 PKI and key pairs for tests (nothing here is trusted outside a test)."""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integrity.trust.signing import generate_key_pair

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    key: Path
    certificate: Path
    chain: list[Path]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _write_cert(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


class TestPKI:
    """Makes CAs, intermediates and leaf certificates on demand under ``root``."""

    __test__ = False  # not a test class

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def _next(self, stem: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:03d}-{stem}"

    def key_pair(self, name: str = "publisher") -> tuple[Path, Path, str]:
        base = self._next(name)
        fingerprint = generate_key_pair(base.with_suffix(".key"), base.with_suffix(".pub"))
        return base.with_suffix(".key"), base.with_suffix(".pub"), fingerprint

    def ca(self, name: str = "Test Root CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=365))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert, _write_cert(self._next("ca.pem"), cert)

    def intermediate(
        self, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str = "Test Intermediate"
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        self,
        issuer_key: ec.EllipticCurvePrivateKey,
        issuer_cert: x509.Certificate,
        identity: str,
        *,
        chain: tuple[x509.Certificate, ...] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName = (
            x509.RFC822Name(identity) if "@" in identity and "://" not in identity
            else x509.UniformResourceIdentifier(identity)
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(identity))
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - dt.timedelta(days=1))
            .not_valid_after(not_after or NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
            .sign(issuer_key, hashes.SHA256())
        )
        base = self._next("leaf")
        chain_paths = [_write_cert(base.with_suffix(".chain.pem"), *chain)] if chain else []
        return Issued(
            _write_key(base.with_suffix(".key"), key), _write_cert(base.with_suffix(".pem"), cert), chain_paths
        )
