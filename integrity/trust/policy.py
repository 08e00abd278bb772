"""Per-source trust policy: who may sign what, plus pinned digests, license and origin.

The policy file is YAML, strictly parsed (an unknown field is an error, never
ignored) and versioned; its SHA-256 is recorded with every verification so an
auditor can tell exactly which rules a decision was made under.

Signer rules are small composable objects in the style of sigstore-python
(:class:`SigstoreIdentity`, :class:`PublicKey`, :class:`CertificateIdentity`,
:class:`AnyOf`, :class:`AllOf`); each ``check()`` returns a :class:`PolicyResult`
with a reason. An empty rule set rejects everything.

Example::

    version: 3
    sources:
      breast-cancer:
        license: CC-BY-4.0
        origin: https://archive.ics.uci.edu/dataset/17
        signers:
          - key: {fingerprint: "sha256:1f2e...", public_key: keys/uci.pub}
          - sigstore:
              identity: https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1
              issuer: https://token.actions.githubusercontent.com
              trusted_root: production
          - certificate: {ca: cas/vendor-root.pem, identity: releases@vendor.example}
        digests: ["sha256:..."]
"""

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from integrity.errors import PolicyError
from integrity.safeio import MAX_CONFIG_BYTES, parse_yaml, read_regular_file
from integrity.settings import package_data

Method = Literal["sigstore", "key", "certificate"]
BUILTIN_TRUSTED_ROOTS = ("production", "staging")


def builtin_trusted_root(name: str) -> Path:
    """Path of a trusted root pinned in this package (never fetched through TUF)."""
    if name not in BUILTIN_TRUSTED_ROOTS:
        raise PolicyError(f"unknown built-in trusted root {name!r} (choose from {BUILTIN_TRUSTED_ROOTS})")
    return package_data("trust_roots", f"{name}_trusted_root.json")


@dataclass(frozen=True)
class SignerEvidence:
    """What the cryptography established about who signed, before any policy is applied."""

    method: Method
    identity: str | None = None
    issuer: str | None = None
    key_fingerprint: str | None = None
    ca_fingerprints: tuple[str, ...] = ()
    certificate: x509.Certificate | None = field(default=None, repr=False, compare=False)
    trusted_root: str | None = None
    signed_at: datetime | None = None
    time_source: str | None = None

    def describe(self) -> str:
        if self.method == "key":
            return f"key {self.key_fingerprint}"
        if self.method == "certificate":
            return f"certificate for {self.identity!r} issued by CA {', '.join(self.ca_fingerprints)}"
        return f"Sigstore identity {self.identity!r} from issuer {self.issuer!r}"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": self.method}
        for name in ("identity", "issuer", "key_fingerprint", "trusted_root", "time_source"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.ca_fingerprints:
            data["ca_fingerprints"] = list(self.ca_fingerprints)
        if self.signed_at is not None:
            data["signed_at"] = self.signed_at.isoformat()
        return data


@dataclass(frozen=True)
class PolicyResult:
    """Outcome of a rule: ``ok`` plus a reason a person can read."""

    ok: bool
    reason: str
    #: "identity", "issuer", "signer" (unknown key/CA) or "" when ok.
    failure: str = ""
    #: When ok: the policy rule the signer matched, in words (``signers[N] key sha256:...``).
    rule: str = ""

    def __bool__(self) -> bool:
        return self.ok


class SignerRule(ABC):
    """A rule about who may sign: each kind of signer says whether evidence matches it, and how to name it."""

    method: Method

    @abstractmethod
    def check(self, evidence: SignerEvidence) -> PolicyResult:
        """Whether ``evidence`` (a verified signature's signer) is this rule's signer, and why not."""

    @abstractmethod
    def describe(self) -> str:
        """The signer in words, for diagnostics and the policy's YAML suggestions."""


@dataclass(frozen=True)
class SigstoreIdentity(SignerRule):
    """A Sigstore keyless signer: certificate identity AND OIDC issuer, both required."""

    identity: str
    issuer: str
    trusted_root: str = "production"
    method: Method = "sigstore"

    def __post_init__(self) -> None:
        if not self.identity or not self.issuer:
            raise PolicyError("a Sigstore signer needs both an identity and an issuer")

    def check(self, evidence: SignerEvidence) -> PolicyResult:
        if evidence.method != "sigstore":
            return PolicyResult(False, f"expected a Sigstore signature, got {evidence.method}", "signer")
        if evidence.identity != self.identity:
            return PolicyResult(
                False, f"identity {evidence.identity!r} is not the expected {self.identity!r}", "identity"
            )
        if evidence.issuer != self.issuer:
            return PolicyResult(False, f"issuer {evidence.issuer!r} is not the expected {self.issuer!r}", "issuer")
        return PolicyResult(True, f"signed by {self.identity} ({self.issuer})")

    def describe(self) -> str:
        return f"sigstore identity={self.identity} issuer={self.issuer}"


@dataclass(frozen=True)
class PublicKey(SignerRule):
    """A pinned public key, named by its fingerprint."""

    fingerprint: str
    key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    method: Method = "key"

    def check(self, evidence: SignerEvidence) -> PolicyResult:
        if evidence.method != "key":
            return PolicyResult(False, f"expected a key signature, got {evidence.method}", "signer")
        if evidence.key_fingerprint != self.fingerprint:
            return PolicyResult(False, f"key {evidence.key_fingerprint} is not {self.fingerprint}", "signer")
        return PolicyResult(True, f"signed by pinned key {self.fingerprint}")

    def describe(self) -> str:
        return f"key {self.fingerprint}"


@dataclass(frozen=True)
class CertificateIdentity(SignerRule):
    """A certificate issued by a pinned CA for a given identity (SAN)."""

    identity: str
    cas: tuple[x509.Certificate, ...] = field(repr=False, compare=False)
    ca_fingerprints: tuple[str, ...] = ()
    tsa_certs: tuple[x509.Certificate, ...] = field(default=(), repr=False, compare=False)
    method: Method = "certificate"

    def check(self, evidence: SignerEvidence) -> PolicyResult:
        if evidence.method != "certificate":
            return PolicyResult(False, f"expected a certificate signature, got {evidence.method}", "signer")
        if not set(evidence.ca_fingerprints) & set(self.ca_fingerprints):
            return PolicyResult(False, "certificate does not chain to this rule's CA", "signer")
        if evidence.identity != self.identity:
            return PolicyResult(
                False, f"identity {evidence.identity!r} is not the expected {self.identity!r}", "identity"
            )
        return PolicyResult(True, f"certificate for {self.identity} from a pinned CA")

    def describe(self) -> str:
        return f"certificate identity={self.identity} ca={','.join(self.ca_fingerprints)}"


@dataclass(frozen=True)
class AnyOf(SignerRule):
    """Passes when at least one child passes; an empty AnyOf rejects everything."""

    rules: tuple[SignerRule, ...]

    def check(self, evidence: SignerEvidence) -> PolicyResult:
        if not self.rules:
            return PolicyResult(False, "the policy allows no signers (an empty policy rejects everything)", "signer")
        results = [rule.check(evidence) for rule in self.rules]
        for index, (rule, result) in enumerate(zip(self.rules, results, strict=True)):
            if result.ok:
                return PolicyResult(True, result.reason, "", result.rule or f"signers[{index}] {rule.describe()}")
        relevant = [r for r in results if r.failure in ("identity", "issuer")]
        best = relevant[0] if relevant else results[0]
        return PolicyResult(False, "; ".join(r.reason for r in results), best.failure)

    def describe(self) -> str:
        return "any of: " + "; ".join(r.describe() for r in self.rules)


@dataclass(frozen=True)
class AllOf(SignerRule):
    """Passes when every child passes; an empty AllOf rejects everything."""

    rules: tuple[SignerRule, ...]

    def check(self, evidence: SignerEvidence) -> PolicyResult:
        if not self.rules:
            return PolicyResult(False, "the policy allows no signers (an empty policy rejects everything)", "signer")
        for rule in self.rules:
            result = rule.check(evidence)
            if not result.ok:
                return result
        return PolicyResult(True, "all rules passed")

    def describe(self) -> str:
        return "all of: " + "; ".join(r.describe() for r in self.rules)


@dataclass(frozen=True)
class SourcePolicy:
    """Everything the policy says about one source."""

    name: str
    signers: AnyOf
    digests: tuple[str, ...] = ()
    license: str | None = None
    origin: str | None = None
    #: A reviewed decision: this model may be trained on although no backdoor scan applies to it.
    allow_unscanned: bool = False

    def rules_for(self, method: Method) -> list[SignerRule]:
        return [rule for rule in self.signers.rules if rule.method == method]


@dataclass(frozen=True)
class TrustPolicy:
    version: int
    sources: dict[str, SourcePolicy]
    path: Path | None
    digest: str  # sha256:<hex> of the policy file's bytes

    def source(self, name: str) -> SourcePolicy:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise PolicyError(
                f"source {name!r} is not in the trust policy (known sources: {known})",
                artifact=self.path,
                advice="Add an entry for the source to the policy, reviewed like any code change.",
            ) from None

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "version": self.version, "digest": self.digest}


# -- loading --------------------------------------------------------------------------------

_TOP_FIELDS = {"version", "sources", "description"}
_SOURCE_FIELDS = {"signers", "digests", "license", "origin", "description", "allow_unscanned"}
_SIGNER_KINDS = {"sigstore", "key", "certificate"}
_SIGSTORE_FIELDS = {"identity", "issuer", "trusted_root"}
_KEY_FIELDS = {"fingerprint", "public_key"}
_CERT_FIELDS = {"ca", "identity", "tsa"}


def _fields(
    where: str, value: Any, allowed: set[str], required: Sequence[str], artifact: Path | None
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a mapping", artifact=artifact)
    unknown = sorted(str(key) for key in set(value) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
            artifact=artifact,
        )
    for name in required:
        if value.get(name) in (None, ""):
            raise PolicyError(f"{where}: missing required field {name!r}", artifact=artifact)
    return value


def _relative(base: Path | None, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() or base is None else base / path


def _load_certs(where: str, ref: str, base: Path | None, artifact: Path | None) -> tuple[x509.Certificate, ...]:
    path = _relative(base, ref)
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise PolicyError(f"{where}: cannot read {path}: {exc.strerror}", artifact=artifact) from exc
    except ValueError as exc:
        raise PolicyError(f"{where}: {path} holds no PEM certificate ({exc})", artifact=artifact) from exc
    return tuple(certs)


def _parse_signer(where: str, entry: Any, base: Path | None, artifact: Path | None) -> SignerRule:
    from integrity.trust.signing import certificate_fingerprint, key_fingerprint, load_public_key

    if not isinstance(entry, dict) or len(entry) != 1:
        raise PolicyError(
            f"{where} must have exactly one of: {', '.join(sorted(_SIGNER_KINDS))}", artifact=artifact
        )
    kind, body = next(iter(entry.items()))
    if kind not in _SIGNER_KINDS:
        raise PolicyError(
            f"{where}: unknown signer kind {kind!r} (allowed: {', '.join(sorted(_SIGNER_KINDS))})",
            artifact=artifact,
        )
    where = f"{where}.{kind}"
    if kind == "sigstore":
        body = _fields(where, body, _SIGSTORE_FIELDS, ("identity", "issuer"), artifact)
        root = str(body.get("trusted_root", "production"))
        if root not in BUILTIN_TRUSTED_ROOTS:
            root = str(_relative(base, root))
            if not Path(root).is_file():
                raise PolicyError(f"{where}: trusted root {root} does not exist", artifact=artifact)
        return SigstoreIdentity(str(body["identity"]), str(body["issuer"]), root)
    if kind == "key":
        body = _fields(where, body, _KEY_FIELDS, ("fingerprint", "public_key"), artifact)
        key_path = _relative(base, str(body["public_key"]))
        try:
            key = load_public_key(key_path)
        except Exception as exc:
            raise PolicyError(f"{where}: cannot load public key {key_path}: {exc}", artifact=artifact) from exc
        actual = key_fingerprint(key)
        if actual != body["fingerprint"]:
            raise PolicyError(
                f"{where}: public key {key_path} has fingerprint {actual}, not the pinned {body['fingerprint']}",
                artifact=artifact,
                advice="The key file was replaced. Restore the reviewed key or re-approve the new one.",
            )
        return PublicKey(actual, key)
    body = _fields(where, body, _CERT_FIELDS, ("ca", "identity"), artifact)
    cas = _load_certs(f"{where}.ca", str(body["ca"]), base, artifact)
    tsa: tuple[x509.Certificate, ...] = ()
    if body.get("tsa"):
        tsa = _load_certs(f"{where}.tsa", str(body["tsa"]), base, artifact)
    return CertificateIdentity(
        str(body["identity"]), cas, tuple(certificate_fingerprint(c) for c in cas), tsa
    )


def _parse_policy(text: bytes, *, path: Path | None = None) -> TrustPolicy:
    """Parse policy bytes strictly; relative paths resolve against the policy's folder."""
    digest = "sha256:" + hashlib.sha256(text).hexdigest()
    data = parse_yaml(text, artifact=path, error=PolicyError)
    data = _fields("policy", data, _TOP_FIELDS, ("version", "sources"), path)
    version = data["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PolicyError("version must be a positive integer, bumped on every change", artifact=path)
    if not isinstance(data["sources"], dict):
        raise PolicyError("sources must be a mapping of source name to entry", artifact=path)
    base = path.parent if path else None
    sources: dict[str, SourcePolicy] = {}
    for name, entry in data["sources"].items():
        where = f"sources.{name}"
        entry = _fields(where, entry, _SOURCE_FIELDS, (), path)
        signers_raw = entry.get("signers", [])
        if not isinstance(signers_raw, list):
            raise PolicyError(f"{where}.signers must be a list", artifact=path)
        rules = tuple(
            _parse_signer(f"{where}.signers[{i}]", signer, base, path) for i, signer in enumerate(signers_raw)
        )
        digests_raw = entry.get("digests", [])
        if not isinstance(digests_raw, list):
            raise PolicyError(f"{where}.digests must be a list", artifact=path)
        digests = []
        for value in digests_raw:
            text_value = str(value)
            hexpart = text_value.removeprefix("sha256:")
            if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
                raise PolicyError(f"{where}.digests: {text_value!r} is not a sha256 digest", artifact=path)
            digests.append(hexpart.lower())
        allow_unscanned = entry.get("allow_unscanned", False)
        if not isinstance(allow_unscanned, bool):
            raise PolicyError(f"{where}.allow_unscanned must be true or false", artifact=path)
        sources[str(name)] = SourcePolicy(
            str(name),
            AnyOf(rules),
            tuple(digests),
            entry.get("license"),
            entry.get("origin"),
            allow_unscanned,
        )
    return TrustPolicy(version, sources, path, digest)

def parse_policy(text: bytes, *, path: Path | None = None) -> TrustPolicy:
    """Strict parse; on failure the error also lists every schema problem of the file (docs/schemas)."""
    try:
        return _parse_policy(text, path=path)
    except PolicyError as error:
        from integrity.schemas import add_problems

        try:
            document = parse_yaml(text)
        except Exception:
            raise error from None
        add_problems(error, "trust-policy", document)
        raise


def load_policy(path: str | Path) -> TrustPolicy:
    policy_path = Path(path)
    text = read_regular_file(policy_path, what="trust policy", max_bytes=MAX_CONFIG_BYTES, error=PolicyError)
    return parse_policy(text, path=policy_path)


def approval_snippet(source: str, evidence: SignerEvidence) -> str:
    """The YAML a reviewer would add to approve a signer; printed, never applied automatically."""
    if evidence.method == "key":
        return (
            f"sources:\n  {source}:\n    signers:\n      - key:\n"
            f"          fingerprint: \"{evidence.key_fingerprint or '<sha256:fingerprint of the new key>'}\"\n"
            "          public_key: keys/<new-key>.pub   # obtained from the publisher out of band\n"
        )
    if evidence.method == "certificate":
        return (
            f"sources:\n  {source}:\n    signers:\n      - certificate:\n"
            "          ca: cas/<publisher-ca>.pem\n"
            f"          identity: \"{evidence.identity}\"\n"
        )
    return (
        f"sources:\n  {source}:\n    signers:\n      - sigstore:\n"
        f"          identity: \"{evidence.identity}\"\n"
        f"          issuer: \"{evidence.issuer}\"\n"
    )
