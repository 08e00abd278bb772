"""Verify-then-store: the only way an artifact enters the trusted area.

``attest()`` verifies an artifact against its source's policy entry. On success the
exact bytes that were verified are copied into the trusted store (content-addressed,
write-once) together with the verification record; on any failure they go to
quarantine with the reason, and the trusted area is not touched.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity.errors import CairnError, VerificationError
from integrity.storage import ArtifactStore
from integrity.trust.policy import TrustPolicy
from integrity.trust.records import record_for_failure, record_for_result
from integrity.trust.verifying import VerificationResult, verify_source


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

    # Pin what goes into the store to what was verified, so a swap in between is caught.
    pinned_files = (
        dict(result.manifest.files)
        if result.kind == "directory" and result.manifest is not None and result.manifest.config.method == "files"
        else None
    )
    try:
        stored = store.put_trusted(
            artifact,
            expected_digest=result.digest if result.kind == "file" else None,
            expected_files=pinned_files,
            ignore_paths=result.manifest.config.ignore_paths if result.manifest is not None else (),
        )
        # Keep the publisher's signature beside the bytes, so the artifact can be re-verified later.
        stored_bundle = store.put_trusted(result.bundle, expected_digest=result.bundle_digest)
    except CairnError as error:
        # The bytes changed between verification and storing (or the store refused): not trusted.
        return _quarantine(artifact, source, store, error, policy, bundle)
    record = record_for_result(result)
    record["predicate"]["store"] = {
        "digest": stored.digest,
        "key": stored.key,
        "kind": stored.kind,
        "bundle": {"digest": stored_bundle.digest, "key": stored_bundle.key},
    }
    key = store.put_record("verifications", _record_name(source, result.digest), record)
    return Attestation(source, artifact, True, result.digest, result.reason, key, result=result)


def _record_name(source: str, digest: str | None) -> str:
    """Records are history: one per verification, never overwritten."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{source}-{(digest or 'unreadable')[:16]}-{stamp}-{uuid.uuid4().hex[:6]}"


def _quarantine(
    artifact: Path,
    source: str,
    store: ArtifactStore,
    error: CairnError,
    policy: TrustPolicy,
    bundle: str | Path | None,
) -> Attestation:
    """Keep the rejected bytes (when they can be read safely) and the reason; trusted is untouched."""
    entry = store.quarantine(
        artifact, error.summary(), source=source, details={"error": type(error).__name__, "kind": error.kind}
    )
    record = record_for_failure(artifact, error, source=source, policy=policy, bundle=bundle)
    record["predicate"]["quarantine"] = {"id": entry.id, "digest": entry.digest, "copy_error": entry.copy_error}
    key = store.put_record("verifications", _record_name(source, entry.digest), record)
    return Attestation(source, artifact, False, entry.digest, error.summary(), key, error=error)
