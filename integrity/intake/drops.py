"""Vendor drop locations: notice new or changed objects and map them to catalog sources.

A drop location is a local folder or an ``s3://bucket/prefix``. A *snapshot* maps each
object under it to a fingerprint (size and modification time locally, the ETag on S3);
comparing two snapshots gives what is new or changed, and :func:`sources_for` says which
catalog sources those objects belong to (a source owns everything under its URI).
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from integrity.intake.catalog import Catalog
from integrity.storage.s3_api import list_s3_objects


def location_uri(location: str | Path) -> str:
    """A drop location as a URI (``file:///abs/path`` or ``s3://bucket/prefix``)."""
    text = str(location)
    if text.startswith("s3://"):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    return "file://" + str(Path(text).resolve())


def snapshot(location: str | Path) -> dict[str, str]:
    """Every object under the location (URI -> fingerprint); a missing local folder is empty."""
    uri = location_uri(location)
    if uri.startswith("s3://"):
        return list_s3_objects(uri)
    root = Path(unquote(urlparse(uri).path))
    found: dict[str, str] = {}
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue  # temp files of a drop still being written
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            found["file://" + str(path)] = f"{info.st_size}:{info.st_mtime_ns}"
    return found


def changed(previous: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Objects that are new, or whose fingerprint differs, in ``current``."""
    return sorted(uri for uri, mark in current.items() if previous.get(uri) != mark)


def sources_for(objects: Iterable[str], catalog: Catalog) -> tuple[dict[str, list[str]], list[str]]:
    """Group objects by the catalog source that owns them; also return objects no source owns."""
    owners: dict[str, list[str]] = {}
    unclaimed: list[str] = []
    roots = [(source.name, catalog.resolve(source.uri).rstrip("/")) for source in catalog]
    for uri in objects:
        match = [name for name, root in roots if uri == root or uri.startswith(root + "/")
                 or uri.startswith(root + ".")]  # a file's sibling signature, e.g. data.csv.sig
        if match:
            for name in match:
                owners.setdefault(name, []).append(uri)
        else:
            unclaimed.append(uri)
    return owners, unclaimed
