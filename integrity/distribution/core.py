"""Release distribution: publish a signed release bundle to the artifact store, pull it back verified.

**Publishing** writes, in this order, so that a reader never sees half a release:

1. every file of the bundle, ``release.json`` and ``release.json.sig`` as content-addressed
   objects (``trusted/sha256/..``; re-uploading the same bytes is a no-op);
2. a claim on the release's sequence number, ``releases/<model>/sequence/<n>.json``
   (create-only: one sequence number, one version);
3. the publication record ``releases/<model>/versions/<version>.json`` (create-only): the
   commit point. Until it exists the release is invisible; once it exists everything it
   points at is already there.

Create-only writes (``If-None-Match: *`` on S3, hard links locally) mean two publishers can
never clobber each other, and re-running a publish of the same bundle is idempotent. Where the
bucket has S3 Object Lock enabled, every object of the release gets a retention period and the
publication record reports the retention S3 holds (read back with ``head_object``).

**Pulling** (``cairn pull MODEL[@VERSION] --dest DIR``) downloads into a staging folder beside
``DIR``, verifies the release index signature against the release policy, refuses rollbacks
(sequence numbers in the signed index, a client-side record of what was seen, and optionally
the transparency ledger), checks the revocation list, downloads and checks every file, verifies
the bundle (model signature, provenance, BOM, every digest) and only then renames the staging
folder to ``DIR``. On any failure ``DIR`` is untouched and the reason is raised.

A **pull ticket** (:func:`presign`) lets a release manager hand a pull to someone without
bucket credentials: a JSON file of presigned URLs, verified exactly like a credentialed pull.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from integrity import safeio
from integrity.distribution.errors import (
    IncompleteReleaseError,
    PublishConflictError,
    ReleaseNotFoundError,
    RollbackError,
)
from integrity.errors import (
    ArtifactReadError,
    CairnError,
    DigestMismatchError,
    RevokedError,
    StoreError,
    UsageError,
    VerificationError,
)
from integrity.release.bundle import verify_bundle
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    FileEntry,
    ReleaseIndex,
    ReleaseIndexError,
    _check_segment,
    check_revocations,
    read_index,
    verify_index_signature,
)
from integrity.storage import (
    CHUNK,
    ArtifactStore,
    MissingObjectError,
    blob_key,
    normalize_digest,
)
from integrity.trust.hashing import sha256_file
from integrity.trust.policy import SignerEvidence, TrustPolicy

PUBLICATION_SCHEMA = "https://cairn.dev/publication/v1"
TICKET_SCHEMA = "https://cairn.dev/pull-ticket/v1"
PULL_STATE_SCHEMA = "https://cairn.dev/pull-state/v1"
RELEASES_PREFIX = "releases/"
#: How long a pull ticket's URLs stay valid unless told otherwise.
DEFAULT_TICKET_SECONDS = 3600
#: Default Object Lock retention where the bucket supports it and has no default rule.
DEFAULT_RETENTION_DAYS = 3650
DEFAULT_RETENTION_MODE = "GOVERNANCE"
_STAGING_SUFFIX = ".cairn-pull"


# -- errors -----------------------------------------------------------------------------------


# -- small helpers ------------------------------------------------------------------------------


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


# -- the release index ------------------------------------------------------------------------


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


# -- verifying a bundle on disk ----------------------------------------------------------------


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


# -- S3 Object Lock -----------------------------------------------------------------------------


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
    return "object-lock" in store.backend.capabilities and store.backend.object_lock_enabled()


def _apply_retention(store: ArtifactStore, keys: Sequence[str], retention: Retention) -> dict[str, dict[str, str]]:
    """Set (or extend) retention on each key; returns what the service reports afterwards."""
    until = datetime.now(UTC) + timedelta(days=retention.days)
    return {key: store.backend.retain(key, retention.mode, until) for key in keys}


def read_retention(store: ArtifactStore, key: str) -> dict[str, str] | None:
    """Retention the service holds for a store key (None where the backend has none)."""
    return store.backend.retention(key)


# -- publishing ---------------------------------------------------------------------------------


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
    if not store.backend.put_bytes(claim_key, _canonical(claim)):
        existing = _load_json(store, claim_key)
        if existing.get("version") != index.version or existing.get("index_sha256") != index.sha256:
            raise PublishConflictError(
                f"sequence {index.sequence} of {index.model} already belongs to version {existing.get('version')} "
                f"(index sha256:{existing.get('index_sha256')}); nothing was overwritten",
                artifact=store.backend.describe(claim_key))
    pub_key = publication_key(index.model, index.version)
    created = store.backend.put_bytes(pub_key, _canonical(publication.as_dict()))
    if not created:
        existing_pub = Publication.from_dict(_load_json(store, pub_key), where=store.backend.describe(pub_key))
        if existing_pub.index_sha256 != index.sha256:
            raise PublishConflictError(
                f"{index.reference} is already published with another index (sha256:{existing_pub.index_sha256}); "
                "nothing was overwritten", artifact=store.backend.describe(pub_key))
    if locked and retention is not None:
        held.update(_apply_retention(store, [claim_key, pub_key], retention))
    ledger_index = None
    if ledger is not None:
        from integrity.distribution.ledgered import log_release

        ledger_index = log_release(ledger, store, index, pub_key, signature_sha256)
    return PublishResult(index.model, index.version, index.sequence, index.sha256, store.backend.describe(pub_key),
                         created, len(uploads), new, index.total_bytes + publication.index_size
                         + publication.signature_size, held, ledger_index)


def _load_json(store: ArtifactStore, key: str) -> dict[str, Any]:
    return store.load_json_object(key, "publication record", ReleaseIndexError)


def list_publications(store: ArtifactStore, model: str | None = None) -> list[Publication]:
    """Every published release (of one model), oldest sequence first."""
    prefix = f"{RELEASES_PREFIX}{_check_segment(model, 'model name')}/versions/" if model else RELEASES_PREFIX
    found = []
    for key in store.backend.list_keys(prefix):
        parts = key.split("/")
        if len(parts) == 4 and parts[2] == "versions" and key.endswith(".json"):
            found.append(Publication.from_dict(_load_json(store, key), where=store.backend.describe(key)))
    return sorted(found, key=lambda p: (p.model, p.sequence, p.version))


# -- where a pull reads from --------------------------------------------------------------------

Progress = Callable[[int], None]


class ReleaseSource(Protocol):
    """Somewhere a release can be pulled from: a store (credentials) or a pull ticket (presigned URLs)."""

    def describe(self) -> str: ...

    def publication(self, model: str, version: str | None) -> Publication: ...

    def fetch(self, digest: str, size: int, dest: Path, progress: Progress) -> None: ...

    def revocations(self, authority: Any) -> Any: ...


class StoreSource:
    """Pull from an artifact store (local folder or S3 with credentials)."""

    def __init__(self, store: ArtifactStore, *, connections: int = 1) -> None:
        self.store = store
        #: Ranged GETs per large S3 object (s3transfer); 1 streams each object with one GET.
        self.connections = max(1, connections)

    def describe(self) -> str:
        return self.store.url

    def publication(self, model: str, version: str | None) -> Publication:
        if version is not None:
            key = publication_key(model, version)
            try:
                data = _load_json(self.store, key)
            except MissingObjectError as exc:
                raise ReleaseNotFoundError(f"{model}@{version} is not published in {self.store.url}",
                                           artifact=f"{model}@{version}") from exc
            return Publication.from_dict(data, where=self.store.backend.describe(key))
        published = list_publications(self.store, model)
        if not published:
            raise ReleaseNotFoundError(f"no release of {model} is published in {self.store.url}", artifact=model)
        return published[-1]

    def fetch(self, digest: str, size: int, dest: Path, progress: Progress) -> None:
        key = blob_key("trusted", digest)
        backend = self.store.backend
        ranged = self.connections > 1 and size > 8 * 1024 * 1024 and "ranged-reads" in backend.capabilities
        try:
            backend.download(key, dest, progress, connections=self.connections if ranged else 1)
        except MissingObjectError as exc:
            raise IncompleteReleaseError(f"object sha256:{digest} is missing from the store",
                                         artifact=backend.describe(key)) from exc

    def revocations(self, authority: Any) -> Any:
        from integrity.release.revocation import RevocationList

        return RevocationList.load(self.store, authority)


class TicketSource:
    """Pull through a pull ticket: presigned HTTPS URLs, no bucket credentials."""

    def __init__(self, ticket: Mapping[str, Any], *, where: str = "pull ticket", timeout: float = 20.0) -> None:
        if ticket.get("schema") != TICKET_SCHEMA:
            raise UsageError(f"not a Cairn pull ticket (schema {ticket.get('schema')!r})", artifact=where)
        self.ticket = ticket
        self.where = where
        self.timeout = timeout
        objects = ticket.get("objects")
        if not isinstance(objects, dict):
            raise UsageError("pull ticket has no objects", artifact=where)
        self.urls = {normalize_digest(str(k), artifact=where): str(v) for k, v in objects.items()}
        for url in self.urls.values():
            if urlparse(url).scheme not in ("https", "http"):
                raise UsageError(f"pull ticket URL {url[:60]!r} is not http(s)", artifact=where)

    @classmethod
    def load(cls, path: str | Path) -> "TicketSource":
        raw = safeio.read_regular_file(path, what="pull ticket", max_bytes=16 << 20, error=ArtifactReadError)
        try:
            data = safeio.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"pull ticket is not JSON: {exc}", artifact=path) from exc
        if not isinstance(data, dict):
            raise UsageError("pull ticket is not a JSON object", artifact=path)
        return cls(data, where=str(path))

    def describe(self) -> str:
        return f"pull ticket {self.where} (expires {self.ticket.get('expires_at')})"

    def publication(self, model: str, version: str | None) -> Publication:
        publication = Publication.from_dict(self.ticket.get("publication") or {}, where=self.where)
        if publication.model != model or (version is not None and publication.version != version):
            raise ReleaseNotFoundError(f"the ticket is for {publication.model}@{publication.version}, "
                                       f"not {model}@{version or 'latest'}", artifact=self.where)
        return publication

    def fetch(self, digest: str, size: int, dest: Path, progress: Progress) -> None:
        url = self.urls.get(digest)
        if url is None:
            raise IncompleteReleaseError(f"the ticket has no URL for object sha256:{digest}", artifact=self.where)
        request = urllib.request.Request(url, method="GET")  # noqa: S310 - scheme checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response, open(dest, "xb") as out:  # noqa: S310
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    progress(len(chunk))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise IncompleteReleaseError(f"object sha256:{digest} is missing from the store",
                                             artifact=self.where) from exc
            if exc.code == 403:
                raise StoreError(f"the store refused the ticket's URL for sha256:{digest} (HTTP 403: expired or "
                                 "revoked ticket?)", artifact=self.where,
                                 advice="Ask the release manager for a new pull ticket.") from exc
            raise StoreError(f"download of sha256:{digest} failed: HTTP {exc.code}", artifact=self.where) from exc
        except TimeoutError as exc:
            raise PullTimeoutError(f"download of sha256:{digest} timed out: the server sent nothing for "
                                   f"{self.timeout:g} s", artifact=self.where) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"download of sha256:{digest} failed: {exc}", artifact=self.where) from exc

    def revocations(self, authority: Any) -> Any:
        """The signed revocations the ticket carries (as of when it was issued), each verified."""
        from integrity.release.revocation import (
            RECORD_KIND,
            REVOCATION_PREDICATE_TYPE,
            RevocationList,
            RevocationListError,
            _from_statement,
        )
        from integrity.trust.verifying import verify_statement

        found = []
        for item in self.ticket.get("revocations") or []:
            key = str(item.get("key", "?"))
            if not key.startswith(f"records/{RECORD_KIND}/"):
                raise RevocationListError(f"revocation {key} is not a revocation record", artifact=self.where)
            try:
                signed = verify_statement(json.dumps(item.get("bundle")), authority,
                                          predicate_type=REVOCATION_PREDICATE_TYPE, where=key)
            except VerificationError as exc:
                raise RevocationListError(f"revocation {key} does not verify: {exc.reason}", artifact=key) from exc
            found.append(_from_statement(signed.statement, key))
        return RevocationList(found)


# -- pull tickets -------------------------------------------------------------------------------


def presign(
    store: ArtifactStore,
    model: str,
    version: str | None,
    release_policy: TrustPolicy,
    *,
    expires_in: int = DEFAULT_TICKET_SECONDS,
) -> dict[str, Any]:
    """A pull ticket for one release: presigned GET URLs for every object, plus the revocations.

    The release is verified (index signature, revocations) before a ticket is issued; the
    recipient verifies everything again. Only S3 stores can presign.
    """
    backend = store.backend
    if "presigned-urls" not in backend.capabilities:
        raise UsageError("pull tickets need an S3 store (presigned URLs)", artifact=store.url)
    if not 1 <= expires_in <= 7 * 24 * 3600:
        raise UsageError("a ticket lasts between 1 second and 7 days (S3's presigned URL limit)")
    source = StoreSource(store)
    publication = source.publication(model, version)
    authority = release_policy.source(model).signers
    revocations = source.revocations(authority)
    with tempfile.TemporaryDirectory(prefix="cairn-presign-") as scratch:
        folder = Path(scratch)
        _fetch_small(source, publication.index_sha256, publication.index_size, folder / INDEX_NAME)
        _fetch_small(source, publication.signature_sha256, publication.signature_size, folder / INDEX_SIGNATURE_NAME)
        index, evidence = verify_index_signature(folder, release_policy, model)
    _check_publication(index, publication)
    check_revocations(revocations, index, evidence)
    digests = {publication.index_sha256, publication.signature_sha256, *(f.sha256 for f in index.files)}
    urls = {digest: backend.presign_get(blob_key("trusted", digest), expires_in) for digest in sorted(digests)}
    records = []
    for revocation in revocations.revocations:
        records.append({"key": revocation.record_key,
                        "bundle": safeio.loads(store.backend.read_bytes(revocation.record_key))})
    return {
        "schema": TICKET_SCHEMA,
        "model": publication.model,
        "version": publication.version,
        "sequence": publication.sequence,
        "store": store.url,
        "issued_at": _now(),
        "expires_at": (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat(),
        "publication": publication.as_dict(),
        "objects": urls,
        "revocations": records,
    }


# -- client-side rollback record ----------------------------------------------------------------


class PullState:
    """What this client has already pulled: the highest sequence per model, the index per version.

    Kept in a small JSON file (default ``$CAIRN_HOME/pull-state.json``) so that a store serving
    an older index than one already seen, or a different index for a version already pulled, is
    refused as a rollback.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists() and not self.path.is_symlink():
            return {"schema": PULL_STATE_SCHEMA, "models": {}, "versions": {}}
        try:
            data = safeio.loads(safeio.read_regular_file(self.path, what="pull state", max_bytes=64 << 20))
        except (CairnError, ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"unreadable pull state: {exc}", artifact=self.path,
                             advice="Restore the file from backup; deleting it turns off rollback protection.") from exc
        if not isinstance(data, dict) or data.get("schema") != PULL_STATE_SCHEMA:
            raise UsageError("not a Cairn pull-state file", artifact=self.path)
        return data

    def check(self, index: ReleaseIndex, *, latest: bool) -> None:
        data = self._read()
        seen = (data.get("models") or {}).get(index.model)
        pinned = (data.get("versions") or {}).get(index.reference)
        if pinned and pinned.get("index_sha256") != index.sha256:
            raise RollbackError(
                f"{index.reference} was pulled before with index sha256:{pinned.get('index_sha256')} "
                f"(sequence {pinned.get('sequence')}); the store now serves sha256:{index.sha256} "
                f"(sequence {index.sequence})", artifact=index.reference)
        if latest and seen and int(seen.get("sequence", 0)) > index.sequence:
            raise RollbackError(
                f"the newest release of {index.model} served is sequence {index.sequence} ({index.version}), but "
                f"this client already saw sequence {seen['sequence']} ({seen.get('version')}): an older index was "
                "replayed or a newer release hidden", artifact=index.reference)

    def origin(self, reference: str, dest: Path) -> str | None:
        """The store ``reference`` (model@version) was pulled from into ``dest``, if this client did that."""
        try:
            pinned = (self._read().get("versions") or {}).get(reference) or {}
        except UsageError:
            return None
        if not isinstance(pinned, dict) or pinned.get("dest") != str(Path(dest).absolute()):
            return None
        origin = pinned.get("origin")
        return origin if isinstance(origin, str) and origin else None

    def record(self, index: ReleaseIndex, *, origin: str | None = None, dest: Path | None = None) -> None:
        from integrity.trust.signing import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            models = data.setdefault("models", {})
            seen = models.get(index.model)
            if not seen or int(seen.get("sequence", 0)) < index.sequence:
                models[index.model] = {"sequence": index.sequence, "version": index.version,
                                       "index_sha256": index.sha256, "at": _now()}
            entry = {"sequence": index.sequence, "index_sha256": index.sha256, "at": _now()}
            if origin and dest is not None:
                entry.update(origin=origin, dest=str(Path(dest).absolute()))
            data.setdefault("versions", {})[index.reference] = entry
            atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


def default_pull_state() -> PullState:
    from integrity.settings import current

    return PullState(current().pull_state)


# -- pulling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    model: str
    version: str
    sequence: int
    index_sha256: str
    dest: Path
    files: int
    bytes: int
    signer: str
    source: str
    seconds: float
    ledger_checked: bool

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"release": self.reference, "sequence": self.sequence, "index_sha256": self.index_sha256,
                "dest": str(self.dest), "files": self.files, "bytes": self.bytes, "signer": self.signer,
                "source": self.source, "seconds": round(self.seconds, 3), "ledger_checked": self.ledger_checked}


def _check_request(index: ReleaseIndex, model: str, version: str | None) -> None:
    """The signed index must be the release that was asked for, whatever the store's records say."""
    asked = f"{model}@{version or 'latest'}"
    if index.model != model or (version is not None and index.version != version):
        raise RollbackError(
            f"asked for {asked}, but the signed index the store serves is {index.reference} (sequence "
            f"{index.sequence}): an index was replayed under another version (a publication record copied over "
            "another's)", artifact=asked,
            advice="Do not install it. Report the store as tampered with; the release manager must republish.")


def _check_publication(index: ReleaseIndex, publication: Publication) -> None:
    if (index.model, index.version) != (publication.model, publication.version):
        raise RollbackError(
            f"the store's record for {publication.model}@{publication.version} points at the signed index of "
            f"{index.reference} (sequence {index.sequence}): an index was replayed under another version",
            artifact=f"{publication.model}@{publication.version}")
    if index.sequence != publication.sequence:
        raise RollbackError(
            f"the publication record says sequence {publication.sequence}, the signed index says {index.sequence}",
            artifact=index.reference)


def _fetch_small(source: ReleaseSource, digest: str, size: int, dest: Path) -> None:
    """Fetch the index or its signature and check it against its content address at once."""
    source.fetch(digest, size, dest, lambda _n: None)
    actual = sha256_file(dest)
    if actual != digest:
        raise DigestMismatchError(f"object sha256:{digest} hashes to sha256:{actual}: it was changed in the store",
                                  artifact=f"{source.describe()} {dest.name}")


def _name_in_release(error: CairnError, staging: Path, reference: str) -> None:
    """Name a failing file as ``MODEL@VERSION:path`` rather than by the staging folder that is about to go."""
    if error.artifact and error.artifact.startswith(str(staging)):
        relative = error.artifact[len(str(staging)):].lstrip("/")
        error.artifact = f"{reference}:{relative}" if relative else reference
        error.args = (error.summary(),)


def _staging_pid(name: str) -> int | None:
    match = re.search(r"\.cairn-pull-(\d+)-[0-9a-f]+$", name)
    return int(match.group(1)) if match else None


def _clean_stale_staging(dest: Path) -> None:
    """Remove staging folders of earlier pulls into ``dest`` whose process is gone (killed halfway)."""
    parent = dest.parent
    if not parent.is_dir():
        return
    for entry in parent.glob(f".{dest.name}{_STAGING_SUFFIX}-*"):
        pid = _staging_pid(entry.name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running: another pull's staging area
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError("destination exists and is not a folder; pick a new folder", artifact=dest)
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError("destination folder is not empty; pull into a new folder (nothing was changed)",
                         artifact=dest)


def _progress_bar(total: int, label: str, enabled: bool | None) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                disable=(not enabled) if enabled is not None else None, leave=False, mininterval=0.5)


class PullTimeoutError(StoreError):
    """The pull did not finish within its deadline; nothing was placed at the destination."""

    kind = "timeout"
    advice = "Check the store's endpoint and the network; raise --timeout (or $CAIRN_PULL_TIMEOUT) for a slow link."


#: Seconds a whole pull may take by default ($CAIRN_PULL_TIMEOUT or ``--timeout`` override).
DEFAULT_PULL_TIMEOUT = 1800.0


class Deadline:
    """An overall time limit checked between and during downloads (each request also has its own timeout)."""

    def __init__(self, seconds: float | None, what: str) -> None:
        if seconds is not None and not seconds > 0:
            raise UsageError(f"a timeout must be a positive number of seconds, not {seconds!r}")
        self.seconds, self.what = seconds, what
        self.at = time.monotonic() + seconds if seconds is not None else None

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise PullTimeoutError(f"{self.what} did not finish within {self.seconds:g} s", artifact=self.what)


def pull(
    source: ReleaseSource,
    model: str,
    version: str | None,
    dest: str | Path,
    release_policy: TrustPolicy,
    *,
    state: PullState | None = None,
    ledger: Any = None,
    progress: bool | None = None,
    workers: int = 4,
    timeout: float | None = DEFAULT_PULL_TIMEOUT,
) -> PullResult:
    """Download, verify and only then place a release at ``dest``; ``dest`` is untouched on failure.

    ``state`` records what this client has seen (rollback protection); ``ledger`` (an
    :class:`integrity.ledger.Ledger` with its public key pinned) additionally requires the index to
    be the one the transparency ledger logged for this version, and none newer when pulling the
    latest release. ``progress`` None shows a bar only on a terminal.
    """
    started = time.perf_counter()
    model = _check_segment(model, "model name")
    if version is not None:
        _check_segment(version, "version")
    target = Path(dest).absolute()
    _check_dest(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the destination's parent: {exc.strerror or exc}", artifact=target) from exc
    _clean_stale_staging(target)
    deadline = Deadline(timeout, f"pull of {model}@{version or 'latest'} from {source.describe()}")
    authority = release_policy.source(model).signers
    publication = source.publication(model, version)
    staging = target.parent / f".{target.name}{_STAGING_SUFFIX}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _fetch_small(source, publication.index_sha256, publication.index_size, staging / INDEX_NAME)
        _fetch_small(source, publication.signature_sha256, publication.signature_size,
                     staging / INDEX_SIGNATURE_NAME)
        index, evidence = verify_index_signature(staging, release_policy, model)
        _check_request(index, model, version)
        _check_publication(index, publication)
        if state is not None:
            state.check(index, latest=version is None)
        ledger_checked = False
        if ledger is not None:
            from integrity.distribution.ledgered import check_release_in_ledger

            check_release_in_ledger(ledger, index, latest=version is None)
            ledger_checked = True
        revocations = source.revocations(authority)
        check_revocations(revocations, index, evidence)
        deadline.check()
        _download_files(source, index, staging, progress, workers, deadline)
        deadline.check()
        try:
            verify_release_dir(staging, release_policy, model, revocations=revocations)
        except CairnError as error:
            _name_in_release(error, staging, index.reference)
            raise
        os.chmod(staging, 0o755)  # noqa: S103 - mkdir honours umask; a release folder is world-readable
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise UsageError(f"cannot move the verified release into place: {exc.strerror or exc} "
                             "(nothing was changed)", artifact=target) from exc
        with contextlib.suppress(OSError):
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if state is not None:
        state.record(index, origin=source.describe() if isinstance(source, StoreSource) else None, dest=target)
    return PullResult(index.model, index.version, index.sequence, index.sha256, target, len(index.files),
                      index.total_bytes, evidence.describe(), source.describe(), time.perf_counter() - started,
                      ledger_checked)


def _download_files(source: ReleaseSource, index: ReleaseIndex, staging: Path, progress: bool | None,
                    workers: int, deadline: Deadline | None = None) -> None:
    bar = _progress_bar(index.total_bytes, index.reference, progress)
    deadline = deadline or Deadline(None, index.reference)

    def advance(count: int) -> None:
        deadline.check()
        bar.update(count)

    def one(entry: FileEntry) -> None:
        deadline.check()
        path = staging.joinpath(*entry.path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        source.fetch(entry.sha256, entry.size, path, advance)
        size = path.stat().st_size
        if size != entry.size:
            raise DigestMismatchError(f"{entry.path}: the store sent {size} bytes, the signed index says "
                                      f"{entry.size}", artifact=f"{index.reference}:{entry.path}")

    try:
        # Largest first: the long downloads start at once, small files fill in around them.
        ordered = sorted(index.files, key=lambda f: -f.size)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cairn-pull") as pool:
            for future in [pool.submit(one, entry) for entry in ordered]:
                future.result()
    finally:
        bar.close()


# -- incident response ---------------------------------------------------------------------------


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
        record = safeio.loads(store.backend.read_bytes(key))
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


__all__ = [
    "ConsumingRelease",
    "Publication",
    "PublishResult",
    "PullResult",
    "PullState",
    "ReleaseIndexError",
    "Retention",
    "RevokedError",
    "StoreSource",
    "TicketSource",
    "default_pull_state",
    "list_publications",
    "object_lock_enabled",
    "parse_reference",
    "presign",
    "publish",
    "pull",
    "read_retention",
    "releases_consuming",
    "verify_release_dir",
]
