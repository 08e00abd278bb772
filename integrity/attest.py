"""Verify-then-store: the only way an artifact enters the trusted area.

``attest()`` verifies an artifact against its source's policy entry. On success the
exact bytes that were verified are copied into the trusted store (content-addressed,
write-once) together with the verification record; on any failure they go to
quarantine with the reason, and the trusted area is not touched.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity.errors import CairnError, VerificationError
from integrity.policy import TrustPolicy
from integrity.records import record_for_failure, record_for_result
from integrity.store import ArtifactStore
from integrity.verifying import VerificationResult, verify_source


@dataclass(frozen=True)
class Attestation:
    """What happened to one artifact: attested (with its store address) or quarantined (with why)."""

    source: str
    artifact: Path
    attested: bool
    digest: str | None
    reason: str
    record_key: str
    error: CairnError | None = None
    result: VerificationResult | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": "attested" if self.attested else "quarantined",
            "digest": self.digest,
            "reason": self.reason,
            "record": self.record_key,
        }


def attest(
    path: str | Path,
    policy: TrustPolicy,
    source: str,
    store: ArtifactStore,
    *,
    bundle: str | Path | None = None,
    trusted_root: str | Path | None = None,
) -> Attestation:
    """Verify ``path`` for ``source`` and record the outcome in ``store`` (never raises on rejection)."""
    artifact = Path(path)
    try:
        result = verify_source(artifact, policy, source, bundle=bundle, trusted_root=trusted_root)
    except VerificationError as error:
        return _quarantine(artifact, source, store, error, policy, bundle)
    except CairnError as error:
        # Input and policy errors still leave a trace; the artifact is not trusted either way.
        return _quarantine(artifact, source, store, error, policy, bundle)

    try:
        stored_digest = store.put_trusted(artifact, expected_digest=result.digest if artifact.is_file() else None)
    except CairnError as error:
        # The bytes changed between verification and storing (or the store refused): not trusted.
        return _quarantine(artifact, source, store, error, policy, bundle)
    record = record_for_result(result)
    record["predicate"]["store"] = {"digest": stored_digest}
    key = store.put_record("verifications", f"{source}-{result.digest}", record)
    return Attestation(source, artifact, True, result.digest, result.reason, key, result=result)


def _quarantine(
    artifact: Path,
    source: str,
    store: ArtifactStore,
    error: CairnError,
    policy: TrustPolicy,
    bundle: str | Path | None,
) -> Attestation:
    record = record_for_failure(artifact, error, source=source, policy=policy, bundle=bundle)
    digest: str | None = None
    if artifact.exists():
        try:
            entry = store.quarantine(
                artifact, error.summary(), source=source, details={"error": type(error).__name__, "kind": error.kind}
            )
            digest = entry.digest
        except CairnError:
            digest = None  # unreadable or unsafe content cannot even be copied; the record says why
    key = store.put_record("verifications", f"{source}-rejected-{digest or 'unreadable'}", record)
    return Attestation(source, artifact, False, digest, error.summary(), key, error=error)
