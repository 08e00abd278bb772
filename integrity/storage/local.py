"""The local-folder store backend (atomic create-only writes through hard links)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from integrity.errors import (
    StoreError,
)
from integrity.storage.base import (
    CHUNK,
    Backend,
    BlobWrite,
    MissingObjectError,
    _fsync_dir,
    _mismatch_on_put,
    _read_source,
    _safe_key_parts,
    _unlink_quietly,
)


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
