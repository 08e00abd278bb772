"""Documents by key: what code outside the storage layer asks of a store besides content addressing.

:class:`~integrity.storage.store.ArtifactStore` inherits these, so callers never reach for
``store.backend``: publication records, ledger entries, revocations and reports are read and
written through the store, and a backend's capabilities are asked, never its type.
"""

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from integrity.storage.base import Backend


class KeyedDocuments:
    backend: Backend

    @property
    def local_root(self) -> Path | None:
        """The folder of a local store (None for a remote one): to tell a mistyped path from an empty store."""
        root = getattr(self.backend, "root", None)
        return root if isinstance(root, Path) else None

    @property
    def capabilities(self) -> frozenset[str]:
        return self.backend.capabilities

    def describe(self, key: str) -> str:
        """A key as users see it (full path or ``s3://`` URL)."""
        return self.backend.describe(key)

    def has_key(self, key: str) -> bool:
        return self.backend.exists(key)

    def keys(self, prefix: str) -> Iterator[str]:
        """Keys under a '/'-terminated prefix, sorted."""
        return self.backend.list_keys(prefix)

    def read_key(self, key: str) -> bytes:
        return self.backend.read_bytes(key)

    def read_key_chunks(self, key: str) -> Iterator[bytes]:
        return self.backend.read_chunks(key)

    def write_key(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        """Store a small document; False (and nothing written) if the key exists and not ``overwrite``."""
        return self.backend.put_bytes(key, data, overwrite=overwrite)

    def download(self, key: str, dest: Path, progress: Callable[[int], None], *, connections: int = 1) -> None:
        self.backend.download(key, dest, progress, connections=connections)

    def object_lock_enabled(self) -> bool:
        return "object-lock" in self.backend.capabilities and self.backend.object_lock_enabled()

    def retain(self, key: str, mode: str, until: datetime) -> dict[str, str]:
        return self.backend.retain(key, mode, until)

    def retention(self, key: str) -> dict[str, str] | None:
        return self.backend.retention(key)

    def presign_get(self, key: str, expires_in: int) -> str:
        return self.backend.presign_get(key, expires_in)
