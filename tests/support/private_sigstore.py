"""A private Sigstore instance on loopback HTTP, for end-to-end keyless signing tests.

Nothing here is trusted outside a test. It runs in-process (one thread per HTTP server, on
free ports of 127.0.0.1) and speaks the APIs sigstore-python 4.5.1 uses when signing:

* an **OIDC issuer** (:meth:`PrivateSigstore.mint_token`): ES256 JWTs with audience
  ``sigstore``; any ``iss`` is accepted, but only tokens signed with this instance's key.
* **Fulcio** (``POST /api/v2/signingCert``): checks the token's signature, audience and
  lifetime and the CSR's proof of possession, then issues a 10-minute code-signing leaf for
  the token's identity (SAN email from a verified ``email`` claim, else SAN URI from ``sub``)
  with the OIDC issuer in extensions 1.3.6.1.4.1.57264.1.1 (raw) and .1.8 (DER UTF8String),
  chained root -> intermediate -> leaf (ECDSA P-256), carrying an **embedded SCT**: an RFC 6962
  precertificate SCT (issuer key hash + TBS without the SCT list) signed by the CT log key.
* **Rekor v1** (``POST /api/v1/log/entries``, ``dsse`` and ``hashedrekord`` 0.0.1): checks the
  signature against the certificate, appends the canonical body to an RFC 6962 Merkle tree
  (pre-seeded so proofs are not trivial) and answers with an inclusion proof, a signed
  checkpoint (signed-note format) and a signed entry timestamp (SET).

Rekor v1 rather than v2: a v1 entry carries an integrated time bound by the SET, which gives
sigstore's verifier its trusted signing time without a timestamp authority (v2 needs a TSA).

``trusted_root.json`` and ``client_trust_config.json`` (trusted root + signing config pointing
at the loopback URLs) are written to the instance's directory, so sigstore's offline
``Verifier(trusted_root=...)`` and Cairn's ``sign_statement_keyless(trust_config=...)`` work
against it with no network beyond loopback and no TUF.

Negative tests: :meth:`PrivateSigstore.fault` makes a service misbehave for a ``with`` block,
:attr:`PrivateSigstore.log_time_offset` skews the log's clock, :meth:`mint_token` makes expired
or forged tokens, :meth:`write_trusted_root` writes roots that trust another CA or other log
keys, and ``PrivateSigstore(dir, expired_ca=True)`` is an instance whose intermediate CA had
already expired when it issued the leaf.
"""

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
import pytest
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

OIDC_AUDIENCE = "sigstore"
DEFAULT_ISSUER = "https://oidc.cairn.invalid"
DEFAULT_IDENTITY = "signer@cairn.invalid"
#: Fulcio's OIDC issuer extensions: v1 holds the raw string, v2 a DER UTF8String.
OIDC_ISSUER_V1_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
CERT_LIFETIME = dt.timedelta(minutes=10)
#: What :meth:`PrivateSigstore.fault` accepts.
FAULTS = frozenset(
    {
        "sct-untrusted-key",  # Fulcio embeds an SCT signed by a key that is not the CT log's
        "inclusion-proof-wrong",  # Rekor returns an inclusion proof with a corrupted hash
        "checkpoint-untrusted-key",  # Rekor signs the checkpoint with a key not in the trusted root
        "set-untrusted-key",  # Rekor signs the SET with a key not in the trusted root
        "fulcio-unavailable",  # Fulcio answers 503
        "rekor-unavailable",  # Rekor answers 503
    }
)


class ServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- small encoders -------------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    """RFC 6962 key ID (SHA-256 of the DER SubjectPublicKeyInfo), as Sigstore uses for logs."""
    return hashlib.sha256(_spki_der(key)).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# -- RFC 6962 Merkle tree -------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over already-hashed leaves."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]): sibling hashes from the leaf's level upwards."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), merkle_root(leaves[:k])]


# -- HTTP plumbing --------------------------------------------------------------------------------

Route = Callable[[bytes, dict[str, str]], tuple[int, Any]]


class _Service:
    """One loopback HTTP server on a free port, dispatching POST paths to callables."""

    def __init__(self, name: str, routes: dict[str, Route]) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                route = routes.get(urlparse(self.path).path.rstrip("/"))
                if route is None:
                    self._reply(404, {"code": 404, "message": f"{name}: no such endpoint {self.path}"})
                    return
                try:
                    status, answer = route(body, {k.lower(): v for k, v in self.headers.items()})
                except ServiceError as exc:
                    status, answer = exc.status, {"code": exc.status, "message": exc.message}
                except Exception as exc:  # a bug in the fake: report it rather than hang the client
                    service.errors.append(exc)
                    status, answer = 500, {"code": 500, "message": f"{name}: {exc!r}"}
                self._reply(status, answer)

            def _reply(self, status: int, answer: Any) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                service.requests.append(format % args)

        self.requests: list[str] = []
        self.errors: list[Exception] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"private-{name}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# -- the instance ---------------------------------------------------------------------------------


class PrivateSigstore:
    """OIDC issuer + Fulcio + CT log + Rekor v1, with their trusted root and trust config."""

    def __init__(self, directory: Path, *, expired_ca: bool = False, seed_entries: int = 6) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.faults: set[str] = set()
        #: Added to the log's clock (its integrated time); a signing certificate lives 10 minutes.
        self.log_time_offset = dt.timedelta(0)
        self.lock = threading.Lock()
        self.created = _now() - dt.timedelta(days=1)

        self.oidc_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.rogue_key = ec.generate_private_key(ec.SECP256R1())  # for faults: trusted by nobody
        self.root_key, self.root_cert = make_ca("cairn-test-fulcio-root")
        if expired_ca:
            validity = (self.created - dt.timedelta(days=2), _now() - dt.timedelta(hours=1))
        else:
            validity = (self.created, _now() + dt.timedelta(days=365))
        self.intermediate_key, self.intermediate_cert = make_ca(
            "cairn-test-fulcio-intermediate", issuer=(self.root_key, self.root_cert), validity=validity
        )

        self.tree_id = uuid.uuid4().int % 10**18
        self.origin = f"cairn-private-rekor - {self.tree_id}"
        self.leaves: list[bytes] = [leaf_hash(os.urandom(48)) for _ in range(seed_entries)]
        #: Canonical bodies of the entries this log recorded, by log index.
        self.entries: dict[int, dict[str, Any]] = {}

        self.fulcio = _Service("fulcio", {"/api/v2/signingCert": self._signing_cert})
        self.rekor = _Service("rekor", {"/api/v1/log/entries": self._create_entry})
        self.fulcio_url = self.fulcio.url
        self.rekor_url = self.rekor.url
        self.ct_url = "http://127.0.0.1:9/ct"  # never contacted: SCTs are embedded
        self.oidc_url = "http://127.0.0.1:9/oidc"  # never contacted: tokens are minted in-process

        self.trusted_root_path = self.write_trusted_root(self.directory / "trusted_root.json")
        self.trust_config_path = self.write_trust_config(self.directory / "client_trust_config.json")

    # -- context management ----------------------------------------------------------------------

    def __enter__(self) -> "PrivateSigstore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.fulcio.close()
        self.rekor.close()

    @contextlib.contextmanager
    def fault(self, *names: str) -> Iterator[None]:
        """Make the services misbehave (see :data:`FAULTS`) inside a ``with`` block."""
        unknown = set(names) - FAULTS
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(FAULTS)}")
        before = set(self.faults)
        self.faults.update(names)
        try:
            yield
        finally:
            self.faults = before

    @property
    def server_errors(self) -> list[Exception]:
        """Unexpected exceptions inside the fake services (a test should see none)."""
        return [*self.fulcio.errors, *self.rekor.errors]

    # -- OIDC ------------------------------------------------------------------------------------

    def mint_token(
        self,
        identity: str = DEFAULT_IDENTITY,
        issuer: str = DEFAULT_ISSUER,
        *,
        lifetime: int = 600,
        expired: bool = False,
        audience: str = OIDC_AUDIENCE,
        forged: bool = False,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """An OIDC ID token for ``identity`` from ``issuer``.

        An identity with ``@`` and no URI scheme becomes a verified ``email`` claim (SAN email);
        anything else is the ``sub`` claim and must be a URI (SAN URI), as for CI workloads.
        ``forged`` signs with a key this Fulcio does not trust.
        """
        now = int(time.time())
        issued, expires = (now - 3600, now - 1800) if expired else (now - 1, now + lifetime)
        claims: dict[str, Any] = {"iss": issuer, "aud": audience, "iat": issued, "nbf": issued, "exp": expires}
        if "@" in identity and "://" not in identity:
            claims.update(sub=f"user-{hashlib.sha256(identity.encode()).hexdigest()[:16]}", email=identity)
            claims["email_verified"] = True
        else:
            claims["sub"] = identity
        claims.update(extra_claims or {})
        key = self.rogue_key if forged else self.oidc_key
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "cairn-test"})

    # -- files -----------------------------------------------------------------------------------

    def trusted_root(
        self,
        *,
        ca_chain: list[x509.Certificate] | None = None,
        ct_key: ec.EllipticCurvePrivateKey | None = None,
        rekor_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """The trusted root as a dict; override parts to make roots that trust something else."""
        chain = ca_chain if ca_chain is not None else [self.intermediate_cert, self.root_cert]

        def log(url: str, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
            public = key.public_key()
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki_der(public)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": _rfc3339(self.created)},
                },
                "logId": {"keyId": _b64(key_id(public))},
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_url, rekor_key or self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "cairn-test", "commonName": "cairn-test-fulcio"},
                    "uri": self.fulcio_url,
                    "certChain": {
                        "certificates": [{"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))} for c in chain]
                    },
                    "validFor": {"start": _rfc3339(self.created)},
                }
            ],
            "ctlogs": [log(self.ct_url, ct_key or self.ct_key)],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path, **overrides: Any) -> Path:
        """Write a trusted root (see :meth:`trusted_root` for the overrides)."""
        path.write_text(json.dumps(self.trusted_root(**overrides), indent=2))
        return path

    def untrusted_ca_root(self, path: Path | None = None) -> Path:
        """A trusted root with this instance's logs but a different, never-used Fulcio CA."""
        _, other_root = make_ca("cairn-test-other-root")
        return self.write_trusted_root(path or self.directory / "trusted_root.other-ca.json", ca_chain=[other_root])

    def signing_config(self, *, fulcio_url: str | None = None, rekor_url: str | None = None) -> dict[str, Any]:
        def service(url: str) -> dict[str, Any]:
            return {
                "url": url,
                "majorApiVersion": 1,
                "validFor": {"start": _rfc3339(self.created)},
                "operator": "cairn-test",
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service(fulcio_url or self.fulcio_url)],
            "oidcUrls": [service(self.oidc_url)],
            "rekorTlogUrls": [service(rekor_url or self.rekor_url)],
            "tsaUrls": [],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        }

    def write_trust_config(
        self,
        path: Path,
        *,
        fulcio_url: str | None = None,
        rekor_url: str | None = None,
        trusted_root: dict[str, Any] | None = None,
    ) -> Path:
        """Write a client trust config; point a service elsewhere to test failures."""
        config = {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": trusted_root or self.trusted_root(),
            "signingConfig": self.signing_config(fulcio_url=fulcio_url, rekor_url=rekor_url),
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    # -- Fulcio ----------------------------------------------------------------------------------

    def _signing_cert(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        if "fulcio-unavailable" in self.faults:
            raise ServiceError(503, "fulcio: service unavailable (fault injected)")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise ServiceError(401, "fulcio: missing bearer token")
        try:
            claims = jwt.decode(
                auth.removeprefix("Bearer "),
                self.oidc_key.public_key(),
                algorithms=["ES256"],
                audience=OIDC_AUDIENCE,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise ServiceError(401, f"fulcio: identity token rejected: {exc}") from exc
        issuer = str(claims["iss"])
        san: x509.GeneralName
        if "email" in claims:
            if claims.get("email_verified") is not True:
                raise ServiceError(400, "fulcio: email is not verified")
            san = x509.RFC822Name(str(claims["email"]))
        else:
            subject = str(claims["sub"])
            parsed = urlparse(subject)
            if not (parsed.scheme and parsed.netloc):
                raise ServiceError(400, f"fulcio: subject {subject!r} is neither a verified email nor a URI")
            san = x509.UniformResourceIdentifier(subject)

        try:
            request = json.loads(body)
            csr = x509.load_pem_x509_csr(base64.b64decode(request["certificateSigningRequest"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceError(400, f"fulcio: malformed certificate request: {exc}") from exc
        if not csr.is_signature_valid:
            raise ServiceError(400, "fulcio: CSR signature does not verify (no proof of possession)")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ServiceError(400, "fulcio: only ECDSA keys are supported")

        leaf = self.issue_leaf(public_key, san, issuer)
        chain = [_pem(leaf), _pem(self.intermediate_cert), _pem(self.root_cert)]
        return 201, {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}}

    def issue_leaf(self, public_key: ec.EllipticCurvePublicKey, san: x509.GeneralName, issuer: str) -> x509.Certificate:
        """A Fulcio-style code-signing certificate with an embedded precertificate SCT."""
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + CERT_LIFETIME)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1_OID, issuer.encode()), critical=False)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2_OID, _der(0x0C, issuer.encode())), critical=False)
        )
        # The precertificate: everything but the SCT list. The CT log signs its TBS, bound to the
        # issuer's key hash (RFC 6962 section 3.2); the SCT list is then added as the last extension,
        # so the final certificate's "TBS without SCTs" is exactly what the log signed.
        precert = builder.sign(self.intermediate_key, hashes.SHA256())
        tbs = precert.tbs_certificate_bytes
        timestamp_ms = int(time.time()) * 1000  # whole seconds: exact through datetime round trips
        issuer_key_hash = key_id(self.intermediate_key.public_key())
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp_ms, 1)  # v1, certificate_timestamp, time, precert_entry
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)  # no CT extensions
        )
        ct_signer = self.rogue_key if "sct-untrusted-key" in self.faults else self.ct_key
        signature = ct_signer.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            struct.pack("!B32sQH", 0, key_id(self.ct_key.public_key()), timestamp_ms, 0)
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        leaf = builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, _der(0x04, sct_list)),
            critical=False,
        ).sign(self.intermediate_key, hashes.SHA256())
        assert leaf.tbs_precertificate_bytes == tbs, "SCT would not cover the final certificate"
        return leaf

    # -- Rekor v1 --------------------------------------------------------------------------------

    def _create_entry(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        if "rekor-unavailable" in self.faults:
            raise ServiceError(503, "rekor: service unavailable (fault injected)")
        try:
            proposed = json.loads(body)
            kind = proposed["kind"]
            spec = proposed["spec"]
            if kind == "dsse":
                canonical = self._dsse_body(spec)
            elif kind == "hashedrekord":
                canonical = self._hashedrekord_body(spec)
            else:
                raise ServiceError(400, f"rekor: unsupported entry kind {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceError(400, f"rekor: malformed entry: {exc!r}") from exc
        encoded = rfc8785.dumps(canonical)

        with self.lock:
            index = len(self.leaves)
            self.leaves.append(leaf_hash(encoded))
            leaves = list(self.leaves)
            self.entries[index] = canonical
        root = merkle_root(leaves)
        proof = inclusion_proof(index, leaves)
        if "inclusion-proof-wrong" in self.faults:
            proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        integrated_time = int(time.time() + self.log_time_offset.total_seconds())
        log_id = key_id(self.rekor_key.public_key()).hex()
        body_b64 = _b64(encoded)

        set_payload = rfc8785.dumps(
            {"body": body_b64, "integratedTime": integrated_time, "logID": log_id, "logIndex": index}
        )
        set_key = self.rogue_key if "set-untrusted-key" in self.faults else self.rekor_key
        entry = {
            "body": body_b64,
            "integratedTime": integrated_time,
            "logID": log_id,
            "logIndex": index,
            "verification": {
                "inclusionProof": {
                    "checkpoint": self._checkpoint(len(leaves), root),
                    "hashes": [h.hex() for h in proof],
                    "logIndex": index,
                    "rootHash": root.hex(),
                    "treeSize": len(leaves),
                },
                "signedEntryTimestamp": _b64(set_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))),
            },
        }
        return 201, {leaf_hash(encoded).hex(): entry}

    def _checkpoint(self, size: int, root: bytes) -> str:
        """A signed note: ``origin / size / base64 root``, then ``— name base64(keyhint||sig)``."""
        note = f"{self.origin}\n{size}\n{_b64(root)}\n"
        key = self.rogue_key if "checkpoint-untrusted-key" in self.faults else self.rekor_key
        signature = key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        hint = key_id(self.rekor_key.public_key())[:4]
        return f"{note}\n\u2014 cairn-private-rekor {_b64(hint + signature)}\n"

    @staticmethod
    def _certificate(verifier_b64: str) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(base64.b64decode(verifier_b64))
        except ValueError as exc:
            raise ServiceError(400, f"rekor: verifier is not a PEM certificate: {exc}") from exc

    def _dsse_body(self, spec: dict[str, Any]) -> dict[str, Any]:
        content = spec["proposedContent"]
        envelope_json: str = content["envelope"]
        envelope = json.loads(envelope_json)
        payload = base64.b64decode(envelope["payload"])
        payload_type: str = envelope["payloadType"]
        verifier = content["verifiers"][0]
        public_key = self._certificate(verifier).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        pae = b"DSSEv1 %d %s %d %s" % (len(payload_type.encode()), payload_type.encode(), len(payload), payload)
        signatures = []
        for sig in envelope["signatures"]:
            try:
                public_key.verify(base64.b64decode(sig["sig"]), pae, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature as exc:
                raise ServiceError(400, "rekor: DSSE signature does not verify with the given certificate") from exc
            signatures.append({"signature": sig["sig"], "verifier": verifier})
        return {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope_json.encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": sorted(signatures, key=lambda s: s["signature"]),
            },
        }

    def _hashedrekord_body(self, spec: dict[str, Any]) -> dict[str, Any]:
        digest = bytes.fromhex(spec["data"]["hash"]["value"])
        signature = base64.b64decode(spec["signature"]["content"])
        public_key = self._certificate(spec["signature"]["publicKey"]["content"]).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        try:
            prehashed = Prehashed({32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(digest)])
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
        except InvalidSignature as exc:
            raise ServiceError(400, "rekor: signature does not verify with the given certificate") from exc
        return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": spec}


def make_ca(
    common_name: str,
    *,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    validity: tuple[dt.datetime, dt.datetime] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 CA certificate (self-signed root, or an intermediate under ``issuer``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cairn-test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    not_before, not_after = validity or (_now() - dt.timedelta(days=1), _now() + dt.timedelta(days=3650))
    signer_key, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0 if issuer else 1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())


# -- pytest ---------------------------------------------------------------------------------------

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@contextlib.contextmanager
def _loopback_bypasses_proxies() -> Iterator[None]:
    """requests honours proxy variables even for 127.0.0.1 unless NO_PROXY says otherwise."""
    if not any(os.environ.get(v) for v in _PROXY_VARS):
        yield
        return
    saved = {v: os.environ.get(v) for v in ("NO_PROXY", "no_proxy")}
    for var in saved:
        os.environ[var] = ",".join(filter(None, [saved[var], "127.0.0.1", "localhost"]))
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@pytest.fixture(scope="session")
def private_sigstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSigstore]:
    """A running private Sigstore instance for the whole session (see the module docstring).

    Useful members: ``trust_config_path``, ``trusted_root_path``, ``mint_token(identity, issuer)``,
    ``fault(...)``, ``log_time_offset``, ``untrusted_ca_root()``, ``write_trusted_root(...)``,
    ``write_trust_config(...)``, ``entries``; ``PrivateSigstore(dir, expired_ca=True)`` for an
    instance whose CA had expired.
    """
    with _loopback_bypasses_proxies(), PrivateSigstore(tmp_path_factory.mktemp("private-sigstore")) as instance:
        yield instance
