"""Publishing a release into a store: its layout there, the create-only commit, Object Lock retention."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from integrity.distribution.errors import (
    PublishConflictError,
)
from integrity.errors import (
    UsageError,
)
from integrity.release.bundle import verify_bundle
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    ReleaseIndex,
    ReleaseIndexError,
    _check_segment,
    check_revocations,
    read_index,
    verify_index_signature,
)
from integrity.storage import (
    ArtifactStore,
    normalize_digest,
)
from integrity.trust.hashing import sha256_file
from integrity.trust.policy import SignerEvidence, TrustPolicy

PUBLICATION_SCHEMA = "https://cairn.dev/publication/v1"


RELEASES_PREFIX = "releases/"


#: Default Object Lock retention where the bucket supports it and has no default rule.
DEFAULT_RETENTION_DAYS = 3650


DEFAULT_RETENTION_MODE = "GOVERNANCE"


def parse_reference(reference: str) -> tuple[str, str | None]:
    """``MODEL`` or ``MODEL@VERSION`` into its parts."""
    model, _, version = reference.partition("@")
    _check_segment(model, "model name")
    if version:
        _check_segment(version, "version")
    elif "@" in reference:
        raise UsageError(f"{reference!r}: empty version after '@'")
    return model, version or None


def publication_key(model: str, version: str) -> str:
    return f"{RELEASES_PREFIX}{_check_segment(model, 'model name')}/versions/{_check_segment(version, 'version')}.json"


def sequence_key(model: str, sequence: int) -> str:
    return f"{RELEASES_PREFIX}{_check_segment(model, 'model name')}/sequence/{sequence:012d}.json"


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(data), indent=2, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Publication:
    """The publication record: the commit point of a release in a store."""

    model: str
    version: str
    sequence: int
    index_sha256: str
    index_size: int
    signature_sha256: str
    signature_size: int
    published_at: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": PUBLICATION_SCHEMA,
            "model": self.model,
            "version": self.version,
            "sequence": self.sequence,
            "index": {"path": INDEX_NAME, "sha256": self.index_sha256, "size": self.index_size},
            "signature": {"path": INDEX_SIGNATURE_NAME, "sha256": self.signature_sha256,
                          "size": self.signature_size},
            "published_at": self.published_at,
            **{k: v for k, v in self.data.items() if k not in ("schema", "model", "version", "sequence", "index",
                                                               "signature", "published_at")},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> "Publication":
        try:
            if data.get("schema") != PUBLICATION_SCHEMA:
                raise ReleaseIndexError(f"unknown publication schema {data.get('schema')!r}", artifact=where)
            return cls(
                _check_segment(str(data["model"]), "model name"),
                _check_segment(str(data["version"]), "version"),
                int(data["sequence"]),
                normalize_digest(str(data["index"]["sha256"]), artifact=where),
                int(data["index"]["size"]),
                normalize_digest(str(data["signature"]["sha256"]), artifact=where),
                int(data["signature"]["size"]),
                str(data.get("published_at", "")),
                dict(data),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseIndexError(f"malformed publication record: {exc!r}", artifact=where) from exc
        except UsageError as exc:
            raise ReleaseIndexError(exc.reason, artifact=where) from exc


@dataclass(frozen=True)
class BundleCheck:
    """A release bundle on disk that verified: its index and who signed it."""

    path: Path
    index: ReleaseIndex
    evidence: SignerEvidence


def verify_release_dir(bundle_dir: str | Path, policy: TrustPolicy, model: str, *,
                       revocations: Any = None) -> BundleCheck:
    """Verify a release bundle folder with :func:`integrity.release.bundle.verify_bundle` (the one bundle verifier).

    The index signature and the revocations of what the index names are checked first, so a
    forged or revoked release fails on the cheapest check.
    """
    root = Path(bundle_dir)
    index, evidence = verify_index_signature(root, policy, model)
    check_revocations(revocations, index, evidence)
    verify_bundle(root, policy, model, revocations=revocations)
    return BundleCheck(root, index, evidence)


@dataclass(frozen=True)
class Retention:
    """Object Lock retention for every object of a release (S3 buckets with Object Lock only)."""

    mode: str = DEFAULT_RETENTION_MODE
    days: int = DEFAULT_RETENTION_DAYS

    def __post_init__(self) -> None:
        if self.mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise UsageError(f"retention mode must be GOVERNANCE or COMPLIANCE, not {self.mode!r}")
        if self.days < 1:
            raise UsageError("retention needs at least one day")


def object_lock_enabled(store: ArtifactStore) -> bool:
    """Whether the store's backend enforces retention (an S3 bucket with Object Lock enabled)."""
    return "object-lock" in store.capabilities and store.object_lock_enabled()


def _apply_retention(store: ArtifactStore, keys: Sequence[str], retention: Retention) -> dict[str, dict[str, str]]:
    """Set (or extend) retention on each key; returns what the service reports afterwards."""
    until = datetime.now(UTC) + timedelta(days=retention.days)
    return {key: store.retain(key, retention.mode, until) for key in keys}


def read_retention(store: ArtifactStore, key: str) -> dict[str, str] | None:
    """Retention the service holds for a store key (None where the backend has none)."""
    return store.retention(key)


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: str
    sequence: int
    index_sha256: str
    publication_key: str
    created: bool
    objects: int
    objects_new: int
    bytes: int
    retention: dict[str, dict[str, str]] = field(default_factory=dict)
    ledger_index: int | None = None

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.reference, "sequence": self.sequence, "index_sha256": self.index_sha256,
            "publication": self.publication_key, "created": self.created, "objects": self.objects,
            "objects_new": self.objects_new, "bytes": self.bytes,
            "retention": {"objects": len(self.retention),
                          "modes": sorted({r["mode"] for r in self.retention.values()}),
                          "earliest_until": min((r["retain_until"] for r in self.retention.values()), default=None)},
            "ledger_index": self.ledger_index,
        }


def publish(
    store: ArtifactStore,
    bundle_dir: str | Path,
    release_policy: TrustPolicy,
    *,
    ledger: Any = None,
    retention: Retention | None = None,
    revocations: Any = None,
) -> PublishResult:
    """Publish a verified release bundle: objects first, sequence claim, then the publication record.

    The bundle is verified against the release policy before anything is written (a store never
    receives a release that would not pull). ``ledger`` (an :class:`integrity.ledger.Ledger` with a
    signing key) gets one ``release`` entry per publication; ``retention`` applies where the bucket
    has Object Lock (default :class:`Retention` when it does and none is given).
    """
    root = Path(bundle_dir)
    model = read_index(root).model
    check = verify_release_dir(root, release_policy, model, revocations=revocations)
    index = check.index
    uploads: list[tuple[str, str]] = [(INDEX_NAME, index.sha256)]
    signature_sha256 = sha256_file(root / INDEX_SIGNATURE_NAME)
    uploads.append((INDEX_SIGNATURE_NAME, signature_sha256))
    uploads.extend((f.path, f.sha256) for f in index.files)
    keys: list[str] = []
    new = 0
    for relative, digest in uploads:
        stored = store.put_file(root / relative, digest)
        keys.append(stored.key)
        new += int(stored.created)
    locked = object_lock_enabled(store)
    if locked and retention is None:
        retention = Retention()
    held: dict[str, dict[str, str]] = {}
    if locked and retention is not None:
        held.update(_apply_retention(store, keys, retention))

    publication = Publication(index.model, index.version, index.sequence, index.sha256,
                              (root / INDEX_NAME).stat().st_size, signature_sha256,
                              (root / INDEX_SIGNATURE_NAME).stat().st_size, _now(),
                              {"files": len(index.files), "bytes": index.total_bytes,
                               "signer": check.evidence.as_dict()})
    claim_key = sequence_key(index.model, index.sequence)
    claim = {"schema": PUBLICATION_SCHEMA + "#sequence", "model": index.model, "sequence": index.sequence,
             "version": index.version, "index_sha256": index.sha256}
    if not store.write_key(claim_key, _canonical(claim)):
        existing = _load_json(store, claim_key)
        if existing.get("version") != index.version or existing.get("index_sha256") != index.sha256:
            raise PublishConflictError(
                f"sequence {index.sequence} of {index.model} already belongs to version {existing.get('version')} "
                f"(index sha256:{existing.get('index_sha256')}); nothing was overwritten",
                artifact=store.describe(claim_key))
    pub_key = publication_key(index.model, index.version)
    created = store.write_key(pub_key, _canonical(publication.as_dict()))
    if not created:
        existing_pub = Publication.from_dict(_load_json(store, pub_key), where=store.describe(pub_key))
        if existing_pub.index_sha256 != index.sha256:
            raise PublishConflictError(
                f"{index.reference} is already published with another index (sha256:{existing_pub.index_sha256}); "
                "nothing was overwritten", artifact=store.describe(pub_key))
    if locked and retention is not None:
        held.update(_apply_retention(store, [claim_key, pub_key], retention))
    ledger_index = None
    if ledger is not None:
        from integrity.distribution.ledgered import log_release

        ledger_index = log_release(ledger, store, index, pub_key, signature_sha256)
    return PublishResult(index.model, index.version, index.sequence, index.sha256, store.describe(pub_key),
                         created, len(uploads), new, index.total_bytes + publication.index_size
                         + publication.signature_size, held, ledger_index)


def _load_json(store: ArtifactStore, key: str) -> dict[str, Any]:
    return store.load_json_object(key, "publication record", ReleaseIndexError)


def list_publications(store: ArtifactStore, model: str | None = None) -> list[Publication]:
    """Every published release (of one model), oldest sequence first."""
    prefix = f"{RELEASES_PREFIX}{_check_segment(model, 'model name')}/versions/" if model else RELEASES_PREFIX
    found = []
    for key in store.keys(prefix):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "versions" and key.endswith(".json"):
            found.append(Publication.from_dict(_load_json(store, key), where=store.describe(key)))
    return sorted(found, key=lambda p: (p.model, p.sequence, p.version))
