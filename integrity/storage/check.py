"""``cairn store verify``: re-hash every content-addressed object of a store, report and set aside what fails.

Objects are addressed by their SHA-256, so each one can be checked on its own: a file blob must
hash to its name, a tree document to its name, and every file a tree lists must exist. What fails
is moved under ``corrupt/`` (kept for investigation, never deleted) unless ``quarantine`` is off;
the next write of the same content heals the address (see ``ArtifactStore.put_file``). Records
are not content-addressed: with a ledger, ``cairn ledger verify --records`` checks them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from integrity import safeio
from integrity.errors import (
    CairnError,
)
from integrity.storage.base import AREAS, blob_key, set_aside
from integrity.storage.store import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class StoreReport:
    """What ``verify_store`` found: object counts and every problem with what was done about it."""

    url: str
    checked: int = 0
    bytes: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.url, "ok": self.ok, "objects_checked": self.checked, "bytes_checked": self.bytes,
                "problems": self.problems}


def _hash(store: ArtifactStore, key: str) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    for chunk in store.backend.read_chunks(key):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def verify_store(store: ArtifactStore, *, quarantine: bool = True) -> StoreReport:
    """Re-hash every blob and tree in every area; corrupted objects are set aside when ``quarantine``."""
    report = StoreReport(store.url)

    def problem(key: str, digest: str, reason: str, corrupt: bool) -> None:
        entry: dict[str, Any] = {"object": store.backend.describe(key), "digest": f"sha256:{digest}",
                                 "reason": reason}
        if corrupt and quarantine:
            try:
                entry["moved_to"] = store.backend.describe(set_aside(store.backend, key, digest))
            except CairnError as exc:
                entry["move_error"] = exc.reason
        report.problems.append(entry)
        log.warning("store verify: %s: %s", key, reason)

    for area in AREAS:
        for key in sorted(store.backend.list_keys(f"{area}/")):
            name = key.rsplit("/", 1)[-1]
            if len(name) != 64 or any(c not in "0123456789abcdef" for c in name):
                continue  # not a content-addressed object (an index or marker file)
            report.checked += 1
            try:
                actual, size = _hash(store, key)
            except CairnError as exc:
                problem(key, name, f"unreadable: {exc.reason}", corrupt=False)
                continue
            report.bytes += size
            if actual != name:
                problem(key, name, f"bytes hash to sha256:{actual}, not to their address", corrupt=True)
                continue
            if key.startswith(f"{area}/trees/"):
                try:
                    tree = safeio.parse_json_object(store.backend.read_bytes(key), what="tree document")
                    files = [(str(f["path"]), str(f["sha256"])) for f in tree["files"]]
                except (CairnError, KeyError, TypeError) as exc:
                    problem(key, name, f"tree document is malformed: {exc}", corrupt=False)
                    continue
                missing = [path for path, digest in files if not store.backend.exists(blob_key(area, digest))]
                if missing:
                    problem(key, name, f"tree lists files missing from the store: {', '.join(missing[:5])}",
                            corrupt=False)
    return report


