"""Incident queries: which published releases consumed a revoked input."""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.distribution.publication import Publication, list_publications, publication_key
from integrity.distribution.sources import StoreSource, _fetch_small
from integrity.errors import (
    CairnError,
    UsageError,
)
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    ReleaseIndex,
    read_index,
    verify_index_signature,
)
from integrity.storage import (
    ArtifactStore,
)
from integrity.trust.policy import TrustPolicy


@dataclass(frozen=True)
class ConsumingRelease:
    """A published release that used a revoked (or suspect) input, and how."""

    model: str
    version: str
    sequence: int
    matches: tuple[str, ...]

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"release": self.reference, "sequence": self.sequence, "matches": list(self.matches)}


def _published_index(store: ArtifactStore, publication: Publication, policy: TrustPolicy | None) -> ReleaseIndex:
    with tempfile.TemporaryDirectory(prefix="cairn-audit-") as scratch:
        folder = Path(scratch)
        source = StoreSource(store)
        _fetch_small(source, publication.index_sha256, publication.index_size, folder / INDEX_NAME)
        if policy is None:
            return read_index(folder)
        _fetch_small(source, publication.signature_sha256, publication.signature_size, folder / INDEX_SIGNATURE_NAME)
        index, _ = verify_index_signature(folder, policy, publication.model)
        return index


def _record_signers(store: ArtifactStore, key: str) -> tuple[set[str], set[str]]:
    """Signer subjects and policy digests named by an input's verification record (empty if unreadable)."""
    try:
        record = safeio.loads(store.read_key(key))
    except (CairnError, ValueError):
        return set(), set()
    predicate = record.get("predicate") if isinstance(record, dict) else None
    if not isinstance(predicate, dict):
        return set(), set()
    signer = predicate.get("signer") or {}
    signers = {str(signer[k]) for k in ("key_fingerprint", "identity") if isinstance(signer, dict) and signer.get(k)}
    if isinstance(signer, dict):
        signers.update(str(c) for c in signer.get("ca_fingerprints") or [])
    policy = predicate.get("policy") or {}
    policies = {str(policy["digest"])} if isinstance(policy, dict) and policy.get("digest") else set()
    return signers, policies


def releases_consuming(
    store: ArtifactStore,
    kind: str,
    subject: str,
    *,
    release_policy: TrustPolicy | None = None,
) -> list[ConsumingRelease]:
    """Every published release that used ``subject`` (the incident-response question).

    ``kind`` is a revocation kind: ``source`` (an input by catalog name), ``artifact`` (an input,
    the model or any released file by digest), ``signer`` (the release signer, or the signer of
    an input's verification record), ``policy`` (the release policy digest, or an input's) or
    ``release``. With ``release_policy`` every index's signature is checked first (fail closed).
    """
    from integrity.release.revocation import SUBJECT_KINDS

    if kind not in SUBJECT_KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(SUBJECT_KINDS)}")
    wanted = subject if kind not in ("artifact", "policy") or subject.startswith("sha256:") else f"sha256:{subject}"
    found = []
    for publication in list_publications(store):
        index = _published_index(store, publication, release_policy)
        matches = [f"{k} {s}" for k, s in index.subjects() if k == kind and s == wanted]
        if kind in ("signer", "policy"):
            for item in index.data.get("inputs") or []:
                record = item.get("verification_record") if isinstance(item, dict) else None
                if isinstance(record, str) and record.startswith("records/"):
                    signers, policies = _record_signers(store, record)
                    if wanted in (signers if kind == "signer" else policies):
                        matches.append(f"input {item.get('name')} verified under {kind} {wanted} ({record})")
        if matches:
            found.append(ConsumingRelease(index.model, index.version, index.sequence, tuple(dict.fromkeys(matches))))
    return found


def find_subject(store: ArtifactStore, kind: str, subject: str) -> tuple[bool, list[ConsumingRelease]]:
    """(whether the store knows ``subject``, the published releases that consumed it) before revoking it.

    A release is known when it is published; a source or signer when a published release used it
    or a verification record in the store names it. Policy versions and artifact digests are always
    accepted (a digest may be revoked before anything used it).
    """
    consumed = releases_consuming(store, kind, subject)
    if kind == "release":
        model, _, version = subject.partition("@")
        return bool(version) and store.has_key(publication_key(model, version)), consumed
    if kind not in ("source", "signer") or consumed:
        return True, consumed
    for name in store.list_records("verifications"):
        key = f"records/verifications/{name}.json"
        try:
            predicate = (safeio.loads(store.read_key(key)) or {}).get("predicate") or {}
        except (CairnError, ValueError, AttributeError):
            continue
        if kind == "source" and predicate.get("source") == subject:
            return True, consumed
        if kind == "signer" and subject in _record_signers(store, key)[0]:
            return True, consumed
    return False, consumed
