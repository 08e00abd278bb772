"""Comparing manifests and printing them (what ``cairn hash`` shows)."""

from collections.abc import Iterator

from integrity.errors import (
    ManifestMismatchError,
)
from integrity.trust.hashing import Manifest


def compare_manifests(expected: Manifest, actual: Manifest, *, artifact: str = "") -> None:
    """Raise :class:`ManifestMismatchError` naming every added, removed, renamed or changed file."""
    want, have = expected.files, actual.files
    if want == have:
        return
    removed = sorted(set(want) - set(have))
    added = sorted(set(have) - set(want))
    changed = sorted(p for p in set(want) & set(have) if want[p] != have[p])
    renamed: list[tuple[str, str]] = []
    by_digest = {have[p]: p for p in added}
    for old in list(removed):
        new = by_digest.get(want[old])
        if new is not None and new in added:
            renamed.append((old, new))
            removed.remove(old)
            added.remove(new)
    parts = []
    if changed:
        parts.append("changed: " + ", ".join(changed))
    if added:
        parts.append("added: " + ", ".join(added))
    if removed:
        parts.append("removed: " + ", ".join(removed))
    if renamed:
        parts.append("renamed: " + ", ".join(f"{a} -> {b}" for a, b in renamed))
    raise ManifestMismatchError(
        "content differs from what was signed (" + "; ".join(parts) + ")",
        artifact=artifact,
        added=added,
        removed=removed,
        changed=changed,
        renamed=renamed,
    )


def iter_manifest_lines(manifest: Manifest) -> Iterator[str]:
    """``digest  name`` lines, like ``sha256sum``, for humans and diffs."""
    for resource in manifest.resources:
        yield f"{resource.digest}  {resource.name}"
