"""Store keys, digests and the backend interface every store backend implements."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from integrity.errors import (
    ArtifactReadError,
    DigestMismatchError,
    StoreError,
    UnsafePathError,
    UsageError,
)

Area = Literal["trusted", "quarantine"]


ObjectKind = Literal["file", "tree"]


#: Read and write buffer for streaming.
CHUNK = 1024 * 1024


TREE_SCHEMA = "cairn.tree/v1"


QUARANTINE_SCHEMA = "cairn.quarantine/v1"


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


_AREAS: tuple[Area, ...] = ("trusted", "quarantine")


#: The content-addressed areas of a store.
AREAS = _AREAS


class MissingObjectError(StoreError):
    """The store holds no object, tree or record at the requested address."""

    kind = "store-missing"


def normalize_digest(value: str, *, artifact: str | Path | None = None) -> str:
    """Lowercase hex SHA-256, accepting an optional ``sha256:`` prefix; refuses anything else."""
    text = value.strip().lower() if isinstance(value, str) else ""
    text = text.removeprefix("sha256:")
    if not _HEX64.match(text):
        raise UsageError(f"{value!r} is not a SHA-256 hex digest", artifact=artifact)
    return text


def blob_key(area: Area, digest: str) -> str:
    """Address of a file's content in an area."""
    return f"{area}/sha256/{digest[:2]}/{digest}"


def tree_key(area: Area, digest: str) -> str:
    """Address of a directory tree document in an area."""
    return f"{area}/trees/sha256/{digest[:2]}/{digest}"


def record_name(name: str, step: str) -> str:
    """A new, unique record name: ``NAME-STEP-<UTC time>-<random>`` (records are never overwritten)."""
    return f"{name}-{step}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def record_key(kind: str, name: str) -> str:
    """Address of a JSON record."""
    return f"records/{_check_name(kind, 'record kind')}/{_check_name(name, 'record name')}.json"


def _check_name(value: str, what: str) -> str:
    # Names become path components and S3 key segments: keep them boring everywhere.
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' (not first), at most 200")
    return value


def _canonical_json(data: Any) -> bytes:
    """Tree documents in the one canonical JSON (RFC 8785); stored trees are verified by re-hashing their bytes."""
    from integrity.canonical import canonical_json

    return canonical_json(data)


def _read_source(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Chunks of a source file; every read problem is the artifact's, not the store's."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below, errors mapped
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
    with handle:
        while True:
            try:
                chunk = handle.read(chunk_size)
            except OSError as exc:
                raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
            if not chunk:
                return
            yield chunk


def _read_exactly(chunks: Iterator[bytes], size: int, carry: bytearray) -> bytes:
    """Up to ``size`` bytes from a chunk stream (less only at its end)."""
    while len(carry) < size:
        chunk = next(chunks, None)
        if chunk is None:
            break
        carry.extend(chunk)
    part = bytes(carry[:size])
    del carry[:size]
    return part


def _check_regular_file(path: Path) -> os.stat_result:
    """The same refusals as hashing: no symlinked or special files as artifacts."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError("the artifact itself is a symbolic link; pass its real path", artifact=path)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError("not a regular file (directory or special file)", artifact=path)
    return info


def _fsync_dir(path: Path) -> None:
    """Make a rename or link durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _mismatch_on_put(source: Path, actual: str, expected: str) -> DigestMismatchError:
    return DigestMismatchError(
        f"content hashes to sha256:{actual}, expected sha256:{expected}; nothing was stored",
        artifact=source,
    )


def write_verified(chunks: Iterable[bytes], dest: str | Path, digest: str, *, source: str) -> int:
    """Write a stream to ``dest`` only if it hashes to ``digest``: temp file, fsync, rename.

    Nothing at ``dest`` changes unless every byte arrived and matched, so a reader never
    sees a half-written or tampered file. Returns the number of bytes written.
    """
    target = Path(dest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".cairn-tmp")
    except OSError as exc:
        raise StoreError(f"cannot write destination: {exc.strerror or exc}", artifact=target) from exc
    try:
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write destination: {exc.strerror or exc}", artifact=target) from exc
        actual = hasher.hexdigest()
        if actual != digest:
            raise DigestMismatchError(
                f"stored bytes hash to sha256:{actual}, not to their address sha256:{digest}; "
                f"the store was modified (destination {target} left unchanged)",
                artifact=source,
            )
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            raise StoreError(f"cannot write destination: {exc.strerror or exc}", artifact=target) from exc
        _fsync_dir(target.parent)
        return size
    finally:
        _unlink_quietly(tmp)


@dataclass(frozen=True)
class BlobWrite:
    """What a backend did with one file: where it went and whether it was new."""

    key: str
    digest: str
    size: int
    created: bool


class Backend(ABC):
    """Raw key/value storage. Keys are relative, '/'-separated; content addressing is above."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the store lives, as a URL (``file://...`` or ``s3://bucket/prefix``)."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """A key as users see it (full path or ``s3://`` URL), for error messages."""

    @abstractmethod
    def put_blob(self, source: Path, expected: str | None, key_of: Callable[[str], str]) -> BlobWrite:
        """Stream a file in, hashing it; store it at ``key_of(digest)`` unless it already exists.

        Raises :class:`DigestMismatchError` (leaving nothing) if ``expected`` is given and the
        bytes do not hash to it.
        """

    @abstractmethod
    def move(self, key: str, dest: str) -> None:
        """Move an object to another key (used to set corrupted objects aside, never to delete them)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        """Store a small document; returns False (and writes nothing) if the key exists."""

    @abstractmethod
    def read_chunks(self, key: str) -> Iterator[bytes]:
        """Stream an object; raises :class:`MissingObjectError` if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys under a '/'-terminated prefix, sorted."""

    def read_bytes(self, key: str) -> bytes:
        """A whole (small) object."""
        return b"".join(self.read_chunks(key))

    # -- capabilities: what a backend can do beyond key/value storage -------------------------------

    #: Declared by each backend; callers ask ``"object-lock" in backend.capabilities``, never its type.
    capabilities: frozenset[str] = frozenset({"conditional-writes"})

    def download(self, key: str, dest: Path, progress: Callable[[int], None], *, connections: int = 1) -> None:
        """Write an object to a new file ``dest`` (``connections`` > 1: ranged reads where supported)."""
        with open(dest, "xb") as out:
            for chunk in self.read_chunks(key):
                out.write(chunk)
                progress(len(chunk))

    def object_lock_enabled(self) -> bool:
        """Whether objects written here can be given retention (WORM) that the service enforces."""
        return False

    def retain(self, key: str, mode: str, until: datetime) -> dict[str, str]:
        """Set (or extend) retention on ``key``; returns what the service reports afterwards."""
        raise StoreError("this store has no object retention (Object Lock)", artifact=self.describe(key))

    def retention(self, key: str) -> dict[str, str] | None:
        """The retention the service holds for ``key`` (None: none)."""
        return None

    def presign_get(self, key: str, expires_in: int) -> str:
        """A URL anyone holding it can GET ``key`` from for ``expires_in`` seconds."""
        raise UsageError("pull tickets need a store that can presign URLs (S3)", artifact=self.url)


def _safe_key_parts(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise StoreError(f"refusing malformed store key {key!r}")
    return parts


@dataclass(frozen=True)
class StoredObject:
    """A file or directory tree in the store, at its content address."""

    digest: str
    key: str
    location: str
    size: int
    kind: ObjectKind
    area: Area
    #: False when the same content was already stored (the write was a no-op).
    created: bool
    #: For trees: relative path -> sha256 of every file.
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QuarantineEntry:
    """One rejected artifact: its bytes (when they could be copied) and why it was rejected."""

    id: str
    quarantined_at: datetime
    source: str
    reason: str
    path: str
    digest: str | None
    kind: ObjectKind | None
    key: str | None
    record_key: str
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Why the bytes could not be copied, if they could not (the reason is recorded anyway).
    copy_error: str | None = None

    @property
    def stored(self) -> bool:
        return self.digest is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": QUARANTINE_SCHEMA,
            "id": self.id,
            "quarantined_at": self.quarantined_at.isoformat(),
            "source": self.source,
            "reason": self.reason,
            "path": self.path,
            "digest": self.digest,
            "kind": self.kind,
            "key": self.key,
            "details": dict(self.details),
            "copy_error": self.copy_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], record_key: str) -> QuarantineEntry:
        return cls(
            id=str(data["id"]),
            quarantined_at=datetime.fromisoformat(str(data["quarantined_at"])),
            source=str(data["source"]),
            reason=str(data["reason"]),
            path=str(data.get("path", "")),
            digest=data.get("digest"),
            kind=data.get("kind"),
            key=data.get("key"),
            record_key=record_key,
            details=dict(data.get("details") or {}),
            copy_error=data.get("copy_error"),
        )


#: Where objects whose bytes do not match their address are set aside (never in trusted/, never deleted).
CORRUPT_PREFIX = "corrupt/"


def set_aside(backend: Backend, key: str, digest: str) -> str:
    """Move a corrupted content-addressed object out of its area; returns where it went."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest = f"{CORRUPT_PREFIX}{key}.{stamp}-{uuid.uuid4().hex[:6]}"
    if backend.exists(key):
        backend.move(key, dest)
    return dest
