"""Ledger entries about releases: log publications and revocations; check a pulled index against the log."""

import hashlib
from pathlib import Path
from typing import Any

from integrity.errors import CairnError, VerificationError
from integrity.ledger import Ledger
from integrity.ledger.transparency import append_entry, open_ledger
from integrity.storage import ArtifactStore


class UnloggedReleaseError(VerificationError):
    """A release that the transparency ledger does not know was published."""

    kind = "release-unlogged"
    advice = ("Every publication is logged; a release missing from the ledger was written around Cairn. "
              "Do not use it until the release manager confirms it.")


def log_release(ledger: Ledger, store: ArtifactStore, index: Any, publication_key: str, signature_sha256: str) -> int:
    """Log a publication once (a re-run of the same publish finds the entry and returns its index)."""
    for entry in ledger.entries():
        data = entry.get("data") or {}
        if entry.get("kind") == "release" and data.get("model") == index.model and \
                data.get("version") == index.version and data.get("index_sha256") == index.sha256:
            return int(entry["index"])
    return append_entry(ledger, "release", {
        "model": index.model, "version": index.version, "sequence": index.sequence,
        "index_sha256": index.sha256, "signature_sha256": signature_sha256,
        "publication": publication_key, "files": len(index.files), "bytes": index.total_bytes,
    })


def log_revocation(ledger: Ledger, store: ArtifactStore, revocation: Any) -> int:
    """Log a revocation (its record's key and digest, kind, subject and reason) once."""
    raw = store.read_key(revocation.record_key)
    digest = hashlib.sha256(raw).hexdigest()
    for entry in ledger.entries():
        data = entry.get("data") or {}
        if entry.get("kind") == "revocation" and data.get("record") == revocation.record_key \
                and data.get("sha256") == digest:
            return int(entry["index"])
    return append_entry(ledger, "revocation", {
        "record": revocation.record_key, "sha256": digest, "revoked": revocation.kind,
        "subject": revocation.subject, "reason": revocation.reason, "revokedAt": revocation.revoked_at,
    })


def revoke_and_log(store: ArtifactStore, signer: Any, kind: str, subject: str, reason: str, *,
                   home: Path | None = None, ledger: Ledger | None = None) -> tuple[Any, int]:
    """Sign and store a revocation (:func:`integrity.release.revocation.revoke`), then log it."""
    from integrity.release.revocation import revoke

    revocation = revoke(store, signer, kind, subject, reason)
    return revocation, log_revocation(ledger or open_ledger(store, home=home), store, revocation)


def release_entries(ledger: Ledger, model: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The ledger's publication entries of one model (data only), in log order (the first ``limit`` entries)."""
    return [dict(e.get("data") or {}) for e in ledger.entries()[:limit]
            if e.get("kind") == "release" and (e.get("data") or {}).get("model") == model]


def check_release_in_ledger(ledger: Ledger, index: Any, *, latest: bool) -> None:
    """The verified ledger must hold this exact index for the version, and none newer for a latest pull."""
    report = ledger.verify()
    entries = release_entries(ledger, index.model, limit=report.signed_size)
    logged = [e for e in entries if e.get("version") == index.version]
    if not logged:
        raise UnloggedReleaseError(f"{index.reference} is not in the transparency ledger", artifact=index.reference)
    if all(e.get("index_sha256") != index.sha256 for e in logged):
        raise _rollback(f"the ledger logged index sha256:{logged[0].get('index_sha256')} for {index.reference}, "
                        f"the store served sha256:{index.sha256}", index.reference)
    if latest:
        newest = max(entries, key=lambda e: int(e.get("sequence", 0)))
        if int(newest.get("sequence", 0)) > index.sequence:
            raise _rollback(f"the ledger shows {index.model}@{newest.get('version')} (sequence "
                            f"{newest.get('sequence')}) published, but the store's newest is {index.reference} "
                            f"(sequence {index.sequence}): a newer release is hidden", index.reference)


def _rollback(reason: str, artifact: str) -> CairnError:
    from integrity.distribution.errors import RollbackError

    return RollbackError(reason, artifact=artifact)
