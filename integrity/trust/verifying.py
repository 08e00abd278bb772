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

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    BundleFormatError,
    DigestMismatchError,
    IdentityMismatchError,
    ManifestMismatchError,
    SubjectMismatchError,
    UntrustedSignerError,
)
from integrity.trust.bundles import _Bundle, _parse_bundle, _read_bundle
from integrity.trust.hashing import OMS_PREDICATE_TYPE, Manifest, hash_artifact, sha256_file
from integrity.trust.manifests import compare_manifests
from integrity.trust.methods.certificate import _verify_certificate
from integrity.trust.methods.key import _verify_key
from integrity.trust.methods.sigstore import _verify_sigstore
from integrity.trust.policy import (
    AnyOf,
    SignerEvidence,
    SignerRule,
    SourcePolicy,
    TrustPolicy,
    approval_snippet,
)
from integrity.trust.signing import (
    default_signature_path,
    signature_ignore_entry,
)


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
    #: The policy rule the signer matched (``signers[N] ...`` of the source's entry).
    rule: str = ""

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
            "rule": self.rule,
            "verified_at": self.verified_at.isoformat(),
        }


# -- bundle parsing -----------------------------------------------------------------------------


# -- certificate helpers -----------------------------------------------------------------------


# -- method: Sigstore keyless --------------------------------------------------------------------


# -- method: pinned key ----------------------------------------------------------------------------


# -- method: certificate chain -------------------------------------------------------------------


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
    from integrity.trust.methods import VerifyRequest, verifier_for

    request = VerifyRequest(parsed, artifact, rules, now, source or "<source>", trusted_root)
    evidence, payload = verifier_for(parsed.method)(request)

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
        rule=decision.rule,
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
