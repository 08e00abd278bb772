"""Cairn's artifact store: content-addressed, write-once, with trusted and quarantine areas.

Every object lives at an address derived from its SHA-256, so an address can only
ever name one content: the store refuses to write bytes whose hash does not match,
never overwrites or deletes an object, and re-hashes on every read so that bytes
changed behind its back are detected rather than served. Rejected artifacts go to
a separate *quarantine* area together with a record of why; nothing there is ever
written to, or read as, *trusted*.

Layout (relative to the store root, a directory or an S3 prefix)::

    trusted/sha256/ab/abcdef...          file contents
    trusted/trees/sha256/12/1234...      JSON tree of a directory: relative path -> digest
    quarantine/sha256/..., quarantine/trees/sha256/...
    quarantine/reasons/<id>.json         why an artifact was quarantined
    records/<kind>/<name>.json           small JSON documents (verification records, ...)

Two backends sit behind :class:`Backend`: the local filesystem (temp file, fsync,
then a hard link, which fails instead of clobbering) and S3 through boto3 (objects
become visible only when a PUT or multipart upload completes, written with
``If-None-Match: *`` where the service supports it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    CairnError,
    DigestMismatchError,
    EmptyArtifactError,
    ManifestMismatchError,
    StoreError,
    UnsafePathError,
    UsageError,
)
from integrity.storage.base import (
    TREE_SCHEMA,
    Area,
    Backend,
    MissingObjectError,
    ObjectKind,
    QuarantineEntry,
    StoredObject,
    _canonical_json,
    _check_name,
    _check_regular_file,
    _fsync_dir,
    blob_key,
    normalize_digest,
    record_key,
    set_aside,
    tree_key,
    write_verified,
)
from integrity.storage.keyed import KeyedDocuments
from integrity.trust.hashing import DEFAULT_IGNORED_PATHS, HashingConfig, list_files, validate_relative_name

# -- small helpers ----------------------------------------------------------------------


# -- backends -----------------------------------------------------------------------------


# -- the store ----------------------------------------------------------------------------


class ArtifactStore(KeyedDocuments):
    """Content-addressed, write-once storage of artifacts, trees, quarantine and records."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def url(self) -> str:
        return self.backend.url

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- writing ----------------------------------------------------------------------------

    def put_file(self, path: str | Path, expected_digest: str | None = None, *, area: Area = "trusted") -> StoredObject:
        """Store one file at its SHA-256 address; a no-op if that content is already there."""
        source = Path(path)
        expected = normalize_digest(expected_digest, artifact=source) if expected_digest is not None else None
        _check_regular_file(source)
        result = self.backend.put_blob(source, expected, lambda digest: blob_key(area, digest))
        if not result.created and not self._intact(result.key, result.digest):
            # The object under this address does not hold these bytes (bit rot, tampering): set it aside
            # for investigation and write the good bytes, so a re-ingest heals instead of failing forever.
            set_aside(self.backend, result.key, result.digest)
            result = self.backend.put_blob(source, result.digest, lambda digest: blob_key(area, digest))
        return StoredObject(
            result.digest,
            result.key,
            self.backend.describe(result.key),
            result.size,
            "file",
            area,
            result.created,
        )

    def put_tree(
        self,
        path: str | Path,
        expected_digest: str | None = None,
        *,
        expected_files: Mapping[str, str] | None = None,
        ignore_paths: Sequence[str] = DEFAULT_IGNORED_PATHS,
        area: Area = "trusted",
    ) -> StoredObject:
        """Store every file of a directory, then a JSON tree (path -> digest) addressed by its hash.

        ``expected_files`` (e.g. the verified manifest's per-file digests) pins every file: a
        file added, removed or changed since verification is refused. ``expected_digest`` pins
        the tree itself; it is checked before anything is written.
        """
        root = Path(path)
        config = HashingConfig(ignore_paths=tuple(ignore_paths))
        entries = list_files(root, config)
        if len(entries) == 1 and entries[0].relative == ".":
            raise UsageError("not a directory; store a single file with put_file", artifact=root)
        expected_tree = normalize_digest(expected_digest, artifact=root) if expected_digest is not None else None
        pinned: dict[str, str] | None = None
        if expected_files is not None:
            pinned = {name: normalize_digest(d, artifact=root) for name, d in expected_files.items()}
            listed = {entry.relative for entry in entries}
            added, removed = sorted(listed - set(pinned)), sorted(set(pinned) - listed)
            if added or removed:
                parts = ([f"added: {', '.join(added)}"] if added else []) + (
                    [f"removed: {', '.join(removed)}"] if removed else []
                )
                raise ManifestMismatchError(
                    f"directory differs from what was expected ({'; '.join(parts)}); nothing was stored",
                    artifact=root,
                    added=added,
                    removed=removed,
                )
        elif expected_tree is not None:
            # Hash everything first so a wrong tree leaves nothing behind.
            from integrity.trust.hashing import hash_artifact

            manifest = hash_artifact(root, config)
            pinned = {r.path: r.digest for r in manifest.resources}
        if expected_tree is not None and pinned is not None:
            planned = self._tree_document([(e.relative, pinned[e.relative], e.size) for e in entries])
            planned_digest = hashlib.sha256(planned).hexdigest()
            if planned_digest != expected_tree:
                raise DigestMismatchError(
                    f"directory tree hashes to sha256:{planned_digest}, expected sha256:{expected_tree}; "
                    "nothing was stored",
                    artifact=root,
                )
        stored: list[tuple[str, str, int]] = []
        for entry in entries:
            want = pinned[entry.relative] if pinned is not None else None
            try:
                obj = self.put_file(entry.absolute, want, area=area)
            except DigestMismatchError as exc:
                raise DigestMismatchError(f"file {entry.relative!r} changed: {exc.reason}", artifact=root) from exc
            stored.append((entry.relative, obj.digest, obj.size))
        document = self._tree_document(stored)
        digest = hashlib.sha256(document).hexdigest()
        if expected_tree is not None and digest != expected_tree:
            raise DigestMismatchError(
                f"directory changed while it was stored (tree sha256:{digest}, expected "
                f"sha256:{expected_tree}); the tree was not stored",
                artifact=root,
            )
        key = tree_key(area, digest)
        created = self.backend.put_bytes(key, document)
        if not created and not self._intact(key, digest):
            set_aside(self.backend, key, digest)
            created = self.backend.put_bytes(key, document)
        return StoredObject(
            digest,
            key,
            self.backend.describe(key),
            sum(size for _, _, size in stored),
            "tree",
            area,
            created,
            {name: d for name, d, _ in stored},
        )

    @staticmethod
    def _tree_document(files: Iterable[tuple[str, str, int]]) -> bytes:
        ordered = sorted(files, key=lambda item: tuple(item[0].split("/")))
        return _canonical_json(
            {
                "schema": TREE_SCHEMA,
                "files": [{"path": name, "sha256": digest, "size": size} for name, digest, size in ordered],
            }
        )

    def put(
        self,
        path: str | Path,
        expected_digest: str | None = None,
        *,
        expected_files: Mapping[str, str] | None = None,
        ignore_paths: Sequence[str] = DEFAULT_IGNORED_PATHS,
        area: Area = "trusted",
    ) -> StoredObject:
        """Store a file or a directory (as a tree), whichever ``path`` is."""
        source = Path(path)
        try:
            info = os.lstat(source)
        except OSError as exc:
            raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=source) from exc
        if stat.S_ISDIR(info.st_mode):
            return self.put_tree(
                source, expected_digest, expected_files=expected_files, ignore_paths=ignore_paths, area=area
            )
        return self.put_file(source, expected_digest, area=area)

    def put_trusted(
        self,
        path: str | Path,
        expected_digest: str | None = None,
        *,
        expected_files: Mapping[str, str] | None = None,
        ignore_paths: Sequence[str] = DEFAULT_IGNORED_PATHS,
    ) -> StoredObject:
        """Store a (verified) file or directory in the trusted area."""
        return self.put(
            path, expected_digest, expected_files=expected_files, ignore_paths=ignore_paths, area="trusted"
        )

    def promote(
        self,
        path: str | Path,
        expected_digest: str | None = None,
        *,
        expected_files: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Put a verified artifact into trusted, pinned to the digest(s) verification saw.

        Unlike :meth:`put_trusted` a pin is required: what is promoted must be exactly what
        was verified, even if the file changed on disk in between.
        """
        if expected_digest is None and expected_files is None:
            raise UsageError("promote needs the verified digest (or per-file digests)", artifact=path)
        return self.put_trusted(path, expected_digest, expected_files=expected_files)

    # -- reading ----------------------------------------------------------------------------

    def _find(self, digest: str, area: Area) -> tuple[ObjectKind, str]:
        candidates: tuple[tuple[ObjectKind, str], ...] = (
            ("file", blob_key(area, digest)),
            ("tree", tree_key(area, digest)),
        )
        for kind, key in candidates:
            if self.backend.exists(key):
                return kind, key
        raise MissingObjectError(f"no object sha256:{digest} in the {area} area", artifact=self.url)

    def exists(self, digest: str, *, area: Area = "trusted") -> bool:
        """Whether a file or tree with this digest is stored."""
        digest = normalize_digest(digest)
        return self.backend.exists(blob_key(area, digest)) or self.backend.exists(tree_key(area, digest))

    def get(self, digest: str, dest: str | Path, *, area: Area = "trusted") -> Path:
        """Copy a stored file to ``dest``, re-hashing it; ``dest`` changes only if it matches."""
        digest = normalize_digest(digest)
        key = blob_key(area, digest)
        write_verified(self.backend.read_chunks(key), dest, digest, source=self.backend.describe(key))
        return Path(dest)

    def verify(self, digest: str, *, area: Area = "trusted") -> int:
        """Re-hash a stored file or tree (and its files) in place; returns its size in bytes."""
        digest = normalize_digest(digest)
        kind, key = self._find(digest, area)
        if kind == "tree":
            return sum(self.verify(d, area=area) for d in self.tree_files(digest, area=area).values())
        hasher, size = hashlib.sha256(), 0
        for chunk in self.backend.read_chunks(key):
            hasher.update(chunk)
            size += len(chunk)
        if hasher.hexdigest() != digest:
            raise DigestMismatchError(
                f"stored bytes hash to sha256:{hasher.hexdigest()}, not to their address sha256:{digest}",
                artifact=self.backend.describe(key),
            )
        return size

    def _intact(self, key: str, digest: str) -> bool:
        hasher = hashlib.sha256()
        try:
            for chunk in self.backend.read_chunks(key):
                hasher.update(chunk)
        except MissingObjectError:
            return False
        return hasher.hexdigest() == digest

    def _read_verified(self, key: str, digest: str) -> bytes:
        data = self.backend.read_bytes(key)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatchError(
                f"stored bytes hash to sha256:{actual}, not to their address sha256:{digest}",
                artifact=self.backend.describe(key),
            )
        return data

    def tree_files(self, digest: str, *, area: Area = "trusted") -> dict[str, str]:
        """A stored tree's relative path -> sha256, checked against the tree's address."""
        digest = normalize_digest(digest)
        key = tree_key(area, digest)
        where = self.backend.describe(key)
        try:
            document = safeio.loads(self._read_verified(key, digest))
            if document.get("schema") != TREE_SCHEMA:
                raise StoreError(f"unknown tree schema {document.get('schema')!r}", artifact=where)
            files: dict[str, str] = {}
            for item in document["files"]:
                name = validate_relative_name(str(item["path"]), where)
                if name == "." or name in files:
                    raise StoreError(f"tree lists {name!r} twice or as the root", artifact=where)
                files[name] = normalize_digest(str(item["sha256"]), artifact=where)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"malformed tree document: {exc!r}", artifact=where) from exc
        return files

    def materialize(self, digest: str, dest: str | Path, *, area: Area = "trusted") -> Path:
        """Rebuild a stored file or directory at ``dest``, every byte re-verified.

        A tree is assembled in a temporary sibling directory and renamed into place, so
        ``dest`` either does not change or appears complete. ``dest`` must not exist, or be
        an empty directory.
        """
        digest = normalize_digest(digest)
        kind, _ = self._find(digest, area)
        target = Path(dest)
        if kind == "file":
            return self.get(digest, target, area=area)
        files = self.tree_files(digest, area=area)
        if target.exists() and not (target.is_dir() and not any(target.iterdir())):
            raise StoreError("destination exists and is not an empty directory", artifact=target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".cairn-tmp"))
        except OSError as exc:
            raise StoreError(f"cannot write destination: {exc.strerror or exc}", artifact=target) from exc
        try:
            for name, file_digest in files.items():
                self.get(file_digest, staging.joinpath(*name.split("/")), area=area)
            try:
                os.chmod(staging, 0o755)  # noqa: S103 - mkdtemp makes 0700; a model dir is world-readable
                os.replace(staging, target)
            except OSError as exc:
                raise StoreError(f"cannot write destination: {exc.strerror or exc}", artifact=target) from exc
            _fsync_dir(target.parent)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def list_objects(self, *, area: Area = "trusted") -> list[str]:
        """Digests of the files stored in an area."""
        return [key.rsplit("/", 1)[-1] for key in self.backend.list_keys(f"{area}/sha256/")]

    # -- records ----------------------------------------------------------------------------

    def put_record(self, kind: str, name: str, data: Mapping[str, Any], *, overwrite: bool = False) -> str:
        """Store a small JSON document; records are write-once unless ``overwrite`` is set.

        Writing identical content again is a no-op; different content under an existing
        name raises :class:`StoreError`. Returns the record's key.
        """
        key = record_key(kind, name)
        try:
            body = json.dumps(dict(data), indent=2, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as exc:
            raise StoreError(f"record is not plain JSON: {exc}", artifact=self.backend.describe(key)) from exc
        if self.backend.put_bytes(key, body, overwrite=overwrite):
            return key
        if self.backend.read_bytes(key) != body:
            raise StoreError(
                "a different record with this name already exists; records are write-once",
                artifact=self.backend.describe(key),
            )
        return key

    def get_record(self, kind: str, name: str) -> dict[str, Any]:
        """A stored record; :class:`MissingObjectError` if there is none."""
        key = record_key(kind, name)
        return self._load_json(key)

    def _load_json(self, key: str) -> dict[str, Any]:
        return self.load_json_object(key, "record", StoreError)

    def load_json_object(self, key: str, what: str, error: type[CairnError]) -> dict[str, Any]:
        """The JSON object stored at ``key``; otherwise ``error`` naming the object and saying ``what`` it is not."""
        try:
            data = safeio.loads(self.backend.read_bytes(key))
        except ValueError as exc:
            raise error(f"{what} is not valid JSON: {exc}", artifact=self.backend.describe(key)) from exc
        if not isinstance(data, dict):
            raise error(f"{what} is not a JSON object", artifact=self.backend.describe(key))
        return data

    def list_records(self, kind: str) -> list[str]:
        """Names of the records of one kind, sorted."""
        prefix = f"records/{_check_name(kind, 'record kind')}/"
        return [
            key[len(prefix) : -len(".json")]
            for key in self.backend.list_keys(prefix)
            if key.endswith(".json") and "/" not in key[len(prefix) :]
        ]

    # -- quarantine -------------------------------------------------------------------------

    def quarantine(
        self,
        path: str | Path,
        reason: str,
        *,
        source: str,
        details: Mapping[str, Any] | None = None,
    ) -> QuarantineEntry:
        """Keep a rejected artifact's bytes (content-addressed) and a record of why.

        Only the quarantine area is written. If the artifact cannot be read or copied safely
        (missing, unreadable, unsafe paths, empty), the reason is still recorded, with
        ``digest`` None and ``copy_error`` saying why: a rejection is never lost.
        """
        artifact = Path(path)
        now = datetime.now(UTC)
        digest: str | None = None
        kind: ObjectKind | None = None
        key: str | None = None
        copy_error: str | None = None
        try:
            stored = self.put(artifact, area="quarantine")
            digest, kind, key = stored.digest, stored.kind, stored.key
        except (ArtifactReadError, UnsafePathError, EmptyArtifactError, DigestMismatchError) as exc:
            copy_error = f"{type(exc).__name__}: {exc.summary()}"
        entry_id = f"{now:%Y%m%dT%H%M%S%fZ}-{(digest or 'nocopy')[:16]}-{uuid.uuid4().hex[:8]}"
        rkey = f"quarantine/reasons/{entry_id}.json"
        entry = QuarantineEntry(
            id=entry_id,
            quarantined_at=now,
            source=source,
            reason=reason,
            path=str(artifact),
            digest=digest,
            kind=kind,
            key=key,
            record_key=rkey,
            details=dict(details or {}),
            copy_error=copy_error,
        )
        try:
            body = json.dumps(entry.as_dict(), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise StoreError(f"quarantine details are not plain JSON: {exc}", artifact=artifact) from exc
        if not self.backend.put_bytes(rkey, body + b"\n"):
            raise StoreError("quarantine record id collision; try again", artifact=self.backend.describe(rkey))
        return entry

    def list_quarantine(self) -> list[QuarantineEntry]:
        """Every quarantine entry, oldest first."""
        entries = []
        for key in self.backend.list_keys("quarantine/reasons/"):
            if not key.endswith(".json"):
                continue
            try:
                entries.append(QuarantineEntry.from_dict(self._load_json(key), key))
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"malformed quarantine record: {exc!r}", artifact=self.backend.describe(key)) from exc
        return sorted(entries, key=lambda e: (e.quarantined_at, e.id))


# -- opening ------------------------------------------------------------------------------


__all__ = [
    "ArtifactStore",
]


