"""Verification records: one in-toto statement per verification, passing or failing.

Later steps (attestation, fine-tuning, the provenance graph) read these instead of
trusting that "verify" was run: each record names the artifact digest as its
subject and carries the signer, method, policy digest, time, result and reason.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import __version__
from integrity.errors import CairnError
from integrity.trust.hashing import sha256_file
from integrity.trust.policy import TrustPolicy
from integrity.trust.statements import statement
from integrity.trust.verifying import VerificationResult

VERIFICATION_PREDICATE_TYPE = "https://cairn.dev/attestations/verification/v1"


def _tool() -> dict[str, str]:
    return {"name": "cairn", "version": __version__}


def record_for_result(result: VerificationResult) -> dict[str, Any]:
    """The record of a passed verification."""
    return statement([{"name": result.artifact.name or str(result.artifact), "digest": {"sha256": result.digest}}],
                     VERIFICATION_PREDICATE_TYPE, {
            "result": "passed",
            "reason": result.reason,
            "artifact": {"path": str(result.artifact), "kind": result.kind},
            "method": result.evidence.method,
            "signer": result.evidence.as_dict(),
            "rule": result.rule,
            "statement": result.statement_kind,
            "bundle": {"path": str(result.bundle), "sha256": result.bundle_digest},
            "source": result.source,
            "policy": result.policy,
            "resources": (
                [{"name": r.name, "sha256": r.digest} for r in result.manifest.resources]
                if result.manifest is not None
                else []
            ),
            "verifiedAt": result.verified_at.isoformat(),
            "verifier": _tool(),
        })


def record_for_failure(
    artifact: str | Path,
    error: CairnError,
    *,
    source: str | None = None,
    policy: TrustPolicy | None = None,
    bundle: str | Path | None = None,
) -> dict[str, Any]:
    """The record of a failed verification; the subject digest is whatever the bytes hash to now."""
    path = Path(artifact)
    digest: str | None = None
    if path.is_file():
        try:
            digest = sha256_file(path)
        except CairnError:
            digest = None
    subject: dict[str, Any] = {"name": path.name or str(path), "digest": {"sha256": digest} if digest else {}}
    return statement([subject], VERIFICATION_PREDICATE_TYPE, {
            "result": "failed",
            "reason": error.reason,
            "error": {"type": type(error).__name__, "kind": error.kind, "diagnostics": error.diagnostics()},
            "artifact": {"path": str(path), "kind": "directory" if path.is_dir() else "file"},
            "bundle": {"path": str(bundle)} if bundle else None,
            "source": source,
            "policy": policy.describe() if policy else None,
            "verifiedAt": datetime.now(UTC).isoformat(),
            "verifier": _tool(),
        })


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True)
