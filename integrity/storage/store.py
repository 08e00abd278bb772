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

import base64
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

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
from integrity.trust.hashing import DEFAULT_IGNORED_PATHS, HashingConfig, list_files, validate_relative_name

Area = Literal["trusted", "quarantine"]
ObjectKind = Literal["file", "tree"]

#: Where ``open_store(None)`` puts the store unless ``CAIRN_STORE`` says otherwise.
DEFAULT_STORE_PATH = Path(".cairn") / "store"
#: Objects larger than this are uploaded to S3 in parts.
DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: Size of one multipart part (S3's minimum is 5 MiB, except for the last part).
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
#: Parts of one object uploaded at the same time (memory use is about this many parts).
DEFAULT_MAX_CONCURRENCY = 4
#: Seconds an S3 request may wait for a connection or for the next bytes ($CAIRN_S3_TIMEOUT overrides).
DEFAULT_S3_TIMEOUT = 20.0
#: Attempts per S3 request (the first and the retries): a dead endpoint fails in attempts x timeout.
S3_ATTEMPTS = 3


def s3_timeout() -> float:
    """The per-request S3 timeout in seconds (``$CAIRN_S3_TIMEOUT``, default 20)."""
    from integrity.settings import current

    return current().s3_timeout


def s3_config(endpoint_url: str | None) -> Any:
    """The botocore configuration of every S3 client Cairn makes: bounded timeouts and retries."""
    from botocore.config import Config

    timeout = s3_timeout()
    return Config(connect_timeout=timeout, read_timeout=timeout,
                  retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"},
                  # Custom endpoints (MinIO, moto, on-premises) rarely have wildcard DNS.
                  s3={"addressing_style": "path" if endpoint_url else "auto"})
#: S3 refuses uploads with more parts than this.
S3_MAX_PARTS = 10_000
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


# -- small helpers ----------------------------------------------------------------------


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


def record_key(kind: str, name: str) -> str:
    """Address of a JSON record."""
    return f"records/{_check_name(kind, 'record kind')}/{_check_name(name, 'record name')}.json"


def _check_name(value: str, what: str) -> str:
    # Names become path components and S3 key segments: keep them boring everywhere.
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' (not first), at most 200")
    return value


def _canonical_json(data: Any) -> bytes:
    """One byte string per document, so equal documents get equal digests."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


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


# -- backends -----------------------------------------------------------------------------


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


def _safe_key_parts(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise StoreError(f"refusing malformed store key {key!r}")
    return parts


class LocalBackend(Backend):
    """A directory on the local filesystem.

    Writes go to a temp file on the same filesystem, are fsynced, made read-only and then
    hard-linked into place: ``link`` fails if the name exists, so a concurrent writer can
    never replace an object, and readers only ever see complete files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_safe_key_parts(key))

    def describe(self, key: str) -> str:
        return str(self._path(key))

    def _staging(self) -> Path:
        staging = self.root / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def _link_into_place(self, tmp: str, final: Path) -> bool:
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        _fsync_dir(final.parent)
        return True

    def put_blob(self, source: Path, expected: str | None, key_of: Callable[[str], str]) -> BlobWrite:
        try:
            fd, tmp = tempfile.mkstemp(dir=self._staging(), prefix=".put-")
        except OSError as exc:
            raise StoreError(f"cannot write to the store: {exc.strerror or exc}", artifact=self.root) from exc
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in _read_source(source):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = hasher.hexdigest()
            if expected is not None and digest != expected:
                raise _mismatch_on_put(source, digest, expected)
            os.chmod(tmp, 0o444)
            key = key_of(digest)
            created = self._link_into_place(tmp, self._path(key))
            return BlobWrite(key, digest, size, created)
        except OSError as exc:
            raise StoreError(f"cannot write to the store: {exc.strerror or exc}", artifact=self.root) from exc
        finally:
            _unlink_quietly(tmp)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        except OSError as exc:
            raise StoreError(f"cannot write to the store: {exc.strerror or exc}", artifact=final) from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if overwrite:
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
                return True
            os.chmod(tmp, 0o444)
            return self._link_into_place(tmp, final)
        except OSError as exc:
            raise StoreError(f"cannot write to the store: {exc.strerror or exc}", artifact=final) from exc
        finally:
            _unlink_quietly(tmp)

    def move(self, key: str, dest: str) -> None:
        source, target = self._path(key), self._path(dest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            _fsync_dir(target.parent)
            _fsync_dir(source.parent)
        except FileNotFoundError as exc:
            raise MissingObjectError("not in the store", artifact=source) from exc
        except OSError as exc:
            raise StoreError(f"cannot move {key} aside: {exc.strerror or exc}", artifact=source) from exc

    def read_chunks(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below, errors mapped
        except FileNotFoundError as exc:
            raise MissingObjectError("not in the store", artifact=path) from exc
        except OSError as exc:
            raise StoreError(f"cannot read from the store: {exc.strerror or exc}", artifact=path) from exc
        with handle:
            while True:
                try:
                    chunk = handle.read(CHUNK)
                except OSError as exc:
                    raise StoreError(f"cannot read from the store: {exc.strerror or exc}", artifact=path) from exc
                if not chunk:
                    return
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> Iterator[str]:
        stem = prefix.strip("/")
        base = self._path(stem) if stem else self.root
        keys: list[str] = []
        for directory, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(directory).relative_to(self.root).as_posix()
            lead = "" if rel == "." else f"{rel}/"
            keys.extend(f"{lead}{name}" for name in filenames if not name.startswith("."))
        return iter(sorted(keys))


def _client_error_code(exc: Any) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _client_error_message(exc: Any) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


def _b64(digest_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(digest_hex)).decode("ascii")


class S3Backend(Backend):
    """An S3 bucket and prefix, through boto3 (credentials from the usual AWS sources).

    Small objects are sent in one PUT; larger ones (``multipart_threshold``) in parts that
    are hashed as they are read, and the upload is completed only if the whole object
    matched its address (otherwise aborted, so nothing becomes visible). New objects are
    written with ``If-None-Match: *``; where a service rejects that header the backend
    falls back to checking with HEAD first.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        conditional_writes: bool = True,
    ) -> None:
        if not bucket:
            raise UsageError("an S3 store needs a bucket name (s3://bucket/prefix)")
        if multipart_chunksize < 5 * 1024 * 1024:
            raise UsageError("multipart_chunksize must be at least 5 MiB (S3's minimum part size)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max(1, max_concurrency)
        #: Cleared the first time the service rejects ``If-None-Match``.
        self.conditional_writes = conditional_writes
        if client is None:
            # boto3 is a heavy import: pay for it only when an S3 store is opened.
            import boto3

            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region_name, config=s3_config(endpoint_url)
            )
        self.client = client

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def full_key(self, key: str) -> str:
        """The S3 object key for a store key."""
        _safe_key_parts(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    def _fail(self, exc: Exception, action: str, key: str) -> StoreError:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError | BotoConnectionError):
            return StoreError(
                f"S3 {action} timed out: the endpoint did not answer within {s3_timeout():g} s "
                f"({S3_ATTEMPTS} attempts; {type(exc).__name__})", artifact=self.describe(key),
                advice="Check that the S3 endpoint is up and reachable; raise $CAIRN_S3_TIMEOUT for a slow link.")
        code, _ = _client_error_code(exc)
        detail = f"{code}: {_client_error_message(exc)}" if code else str(exc)
        return StoreError(
            f"S3 {action} failed ({detail})",
            artifact=self.describe(key),
            advice="Check the bucket, the endpoint URL and the AWS credentials and permissions.",
        )

    @staticmethod
    def _is_precondition_failed(exc: Any) -> bool:
        code, status = _client_error_code(exc)
        return code == "PreconditionFailed" or status == 412

    @staticmethod
    def _is_condition_unsupported(exc: Any) -> bool:
        code, status = _client_error_code(exc)
        if code == "NotImplemented" or status == 501:
            return True
        message = _client_error_message(exc).lower()
        return code in ("InvalidArgument", "InvalidRequest") and (
            "if-none-match" in message or "conditional" in message
        )

    def move(self, key: str, dest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.copy_object(Bucket=self.bucket, Key=self.full_key(dest),
                                    CopySource={"Bucket": self.bucket, "Key": self.full_key(key)})
            self.client.delete_object(Bucket=self.bucket, Key=self.full_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "move", key) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            code, status = _client_error_code(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(exc, "HEAD", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "HEAD", key) from exc
        return True

    def _create_only(self, key: str, send: Callable[[dict[str, Any]], Any], action: str) -> bool:
        """Run a write that must not replace an existing object; False if one is there."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.conditional_writes:
            try:
                send({"IfNoneMatch": "*"})
                return True
            except ClientError as exc:
                if self._is_precondition_failed(exc):
                    return False
                code, status = _client_error_code(exc)
                if code == "ConditionalRequestConflict" or status == 409:
                    # A concurrent conditional write to the same key: it wins or fails on its own.
                    if self.exists(key):
                        return False
                    raise self._fail(exc, action, key) from exc
                if not self._is_condition_unsupported(exc):
                    raise self._fail(exc, action, key) from exc
                self.conditional_writes = False
            except BotoCoreError as exc:
                raise self._fail(exc, action, key) from exc
        # Fallback for services without conditional writes: check first (a race can still
        # write the same address twice, which content addressing makes the same bytes).
        if self.exists(key):
            return False
        try:
            send({})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, action, key) from exc
        return True

    def _put_object(self, key: str, data: bytes, *, digest: str | None, overwrite: bool) -> bool:
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.full_key(key),
            "Body": data,
            # S3 recomputes this and rejects the PUT if the body was damaged in transit.
            "ChecksumSHA256": _b64(hashlib.sha256(data).hexdigest()),
        }
        if digest is not None:
            params["Metadata"] = {"sha256": digest}

        def send(extra: dict[str, Any]) -> Any:
            return self.client.put_object(**params, **extra)

        if overwrite:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                send({})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "PUT", key) from exc
            return True
        return self._create_only(key, send, "PUT")

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._put_object(key, data, digest=None, overwrite=overwrite)

    def put_blob(self, source: Path, expected: str | None, key_of: Callable[[str], str]) -> BlobWrite:
        size = _check_regular_file(source).st_size
        if size <= self.multipart_threshold:
            # Small enough to hold: read once, hash, then a single all-or-nothing PUT.
            data = b"".join(_read_source(source))
            digest = hashlib.sha256(data).hexdigest()
            if expected is not None and digest != expected:
                raise _mismatch_on_put(source, digest, expected)
            key = key_of(digest)
            created = self._put_object(key, data, digest=digest, overwrite=False)
            return BlobWrite(key, digest, len(data), created)
        if expected is None:
            # The address must be known before a multipart upload starts: hash first, then
            # hash again while uploading so a file that changes in between is refused.
            hasher = hashlib.sha256()
            for chunk in _read_source(source, 4 * CHUNK):
                hasher.update(chunk)
            target = hasher.hexdigest()
        else:
            target = expected
        key = key_of(target)
        if self.exists(key):
            return BlobWrite(key, target, size, False)
        written, created = self._multipart(key, source, size, target, pinned=expected is not None)
        return BlobWrite(key, target, written, created)

    def _multipart(self, key: str, source: Path, size: int, digest: str, *, pinned: bool) -> tuple[int, bool]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.full_key(key)
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256", Metadata={"sha256": digest}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "CreateMultipartUpload", key) from exc
        upload_id = upload["UploadId"]
        completed = False
        try:
            part_size = max(self.multipart_chunksize, math.ceil(size / S3_MAX_PARTS))
            hasher = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            pending: deque[Future[dict[str, Any]]] = deque()
            written = 0
            chunks = _read_source(source, CHUNK)
            carry = bytearray()
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="cairn-s3") as pool:
                number = 0
                while True:
                    body = _read_exactly(chunks, part_size, carry)
                    if not body and number:
                        break
                    number += 1
                    hasher.update(body)
                    written += len(body)
                    pending.append(pool.submit(self._upload_part, key, upload_id, number, body))
                    # Bound memory: at most max_concurrency parts in flight.
                    while len(pending) >= self.max_concurrency:
                        parts.append(pending.popleft().result())
                    if len(body) < part_size:
                        break
                while pending:
                    parts.append(pending.popleft().result())
            actual = hasher.hexdigest()
            if actual != digest:
                if pinned:
                    raise _mismatch_on_put(source, actual, digest)
                raise DigestMismatchError("file changed while it was uploaded; nothing was stored", artifact=source)

            def send(extra: dict[str, Any]) -> Any:
                return self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                )

            created = self._create_only(key, send, "CompleteMultipartUpload")
            completed = created
            return written, created
        finally:
            if not completed:
                self._abort(full, upload_id)

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        checksum = _b64(hashlib.sha256(body).hexdigest())
        try:
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.full_key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumSHA256=checksum,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"UploadPart {number}", key) from exc
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, full: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # Best effort: the original error matters more; a lifecycle rule cleans up the rest.
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            code, status = _client_error_code(exc)
            if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
                raise MissingObjectError("not in the store", artifact=self.describe(key)) from exc
            raise self._fail(exc, "GET", key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "GET", key) from exc
        body = response["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise self._fail(exc, "GET", key) from exc
        finally:
            body.close()

    def list_keys(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "LIST", prefix) from exc
        return iter(sorted(keys))


# -- the store ----------------------------------------------------------------------------


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


class ArtifactStore:
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
            set_aside(self, result.key, result.digest)
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
            set_aside(self, key, digest)
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


def s3_endpoint(endpoint_url: str | None = None) -> str | None:
    """The S3 endpoint: explicit, else ``$CAIRN_S3_ENDPOINT_URL``, ``$AWS_ENDPOINT_URL_S3``, ``$AWS_ENDPOINT_URL``."""
    from integrity.settings import current

    return endpoint_url or current().s3_endpoint_url


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client configured like the store's (path-style on custom endpoints, retries)."""
    import boto3

    endpoint = s3_endpoint(endpoint_url)
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=s3_config(endpoint))


def open_store(
    url_or_path: str | Path | None = None,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
) -> ArtifactStore:
    """Open a store from a path, ``file://`` URL or ``s3://bucket/prefix``.

    ``None`` means the configured store (:attr:`integrity.settings.Settings.store`). The S3 endpoint comes from
    ``endpoint_url``, else ``$CAIRN_S3_ENDPOINT_URL``, else ``$AWS_ENDPOINT_URL``.
    """
    if url_or_path is None or (isinstance(url_or_path, str) and not url_or_path.strip()):
        from integrity.settings import current

        url_or_path = current().store
    if isinstance(url_or_path, Path):
        return ArtifactStore(LocalBackend(url_or_path))
    text = url_or_path.strip()
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        endpoint = s3_endpoint(endpoint_url)
        return ArtifactStore(
            S3Backend(
                parsed.netloc,
                unquote(parsed.path).strip("/"),
                endpoint_url=endpoint,
                region_name=region_name,
                multipart_threshold=multipart_threshold,
                multipart_chunksize=multipart_chunksize,
            )
        )
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"file URL with a remote host is not supported: {text!r}")
        if not parsed.path:
            raise UsageError(f"file URL without a path: {text!r}")
        return ArtifactStore(LocalBackend(unquote(parsed.path)))
    if scheme and len(scheme) > 1:
        raise UsageError(f"unsupported store URL {text!r}: use a path, file:// or s3://")
    return ArtifactStore(LocalBackend(text))


__all__ = [
    "DEFAULT_MULTIPART_CHUNKSIZE",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_STORE_PATH",
    "ArtifactStore",
    "Backend",
    "BlobWrite",
    "LocalBackend",
    "MissingObjectError",
    "QuarantineEntry",
    "S3Backend",
    "StoredObject",
    "blob_key",
    "normalize_digest",
    "open_store",
    "record_key",
    "tree_key",
    "write_verified",
]


#: Where objects whose bytes do not match their address are set aside (never in trusted/, never deleted).
CORRUPT_PREFIX = "corrupt/"


def set_aside(store: ArtifactStore, key: str, digest: str) -> str:
    """Move a corrupted content-addressed object out of its area; returns where it went."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest = f"{CORRUPT_PREFIX}{key}.{stamp}-{uuid.uuid4().hex[:6]}"
    if store.backend.exists(key):
        store.backend.move(key, dest)
    return dest

