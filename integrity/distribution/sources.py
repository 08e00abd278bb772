"""Where a pull reads from: a store with credentials, or a pull ticket of presigned URLs."""

import json
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from integrity import safeio
from integrity.distribution.errors import (
    IncompleteReleaseError,
    PullTimeoutError,
    ReleaseNotFoundError,
    RollbackError,
)
from integrity.distribution.publication import (
    Publication,
    _load_json,
    _now,
    list_publications,
    publication_key,
)
from integrity.errors import (
    ArtifactReadError,
    DigestMismatchError,
    StoreError,
    UsageError,
    VerificationError,
)
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    ReleaseIndex,
    check_revocations,
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
from integrity.trust.policy import TrustPolicy

TICKET_SCHEMA = "https://cairn.dev/pull-ticket/v1"


#: How long a pull ticket's URLs stay valid unless told otherwise.
DEFAULT_TICKET_SECONDS = 3600


Progress = Callable[[int], None]


class ReleaseSource(Protocol):
    """Somewhere a release can be pulled from: a store (credentials) or a pull ticket (presigned URLs)."""

    def describe(self) -> str: ...

    def publication(self, model: str, version: str | None) -> Publication: ...

    def fetch(self, digest: str, size: int, dest: Path, progress: Progress) -> None: ...

    def revocations(self, authority: Any) -> Any: ...


def published_versions(store: ArtifactStore, model: str) -> list[str]:
    """The versions of ``model`` with a publication record in ``store``, by name (records not parsed)."""
    prefix = publication_key(model, "0").rsplit("/", 1)[0] + "/"
    names = [key.rsplit("/", 1)[-1].removesuffix(".json") for key in store.keys(prefix) if key.endswith(".json")]
    return sorted(names, key=_version_order)


def _version_order(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in version.replace("-", ".").split("."))


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
                versions = published_versions(self.store, model)
                shown = ", ".join(versions[-20:]) if versions else f"none (no release of {model} is published there)"
                raise ReleaseNotFoundError(f"{model}@{version} is not published in {self.store.url}; published "
                                           f"versions: {shown}", artifact=f"{model}@{version}",
                                           advice=f"Pull one of them (cairn pull {model}@VERSION), or check the "
                                                  "store.") from exc
            return Publication.from_dict(data, where=self.store.describe(key))
        published = list_publications(self.store, model)
        if not published:
            raise ReleaseNotFoundError(f"no release of {model} is published in {self.store.url}", artifact=model)
        return published[-1]

    def fetch(self, digest: str, size: int, dest: Path, progress: Progress) -> None:
        key = blob_key("trusted", digest)
        backend = self.store
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
    backend = store
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
                        "bundle": safeio.loads(store.read_key(revocation.record_key))})
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
