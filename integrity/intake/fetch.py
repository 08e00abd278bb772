"""Fetching a catalog source's bytes (local folder, file://, s3://, https://) without following links."""

import contextlib
import os
import shutil
import stat
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from integrity.errors import ArtifactReadError
from integrity.storage.s3_api import download_s3

FETCH_TIMEOUT_S = 60.0


class FetchError(ArtifactReadError):
    """A source could not be fetched (unreachable URI, missing signature, unsafe file type)."""

    kind = "fetch"
    advice = "Check the source's URI and signature location in the catalog, and that the publisher's drop is there."


def _fetch_uri(uri: str, dest_dir: Path, *, want_file: bool = False) -> Path:
    """Copy what ``uri`` names into ``dest_dir`` (a file, or a directory tree); returns the copy."""
    parsed = urlparse(uri)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "file":
        return _fetch_local(Path(unquote(parsed.path)), dest_dir, want_file=want_file)
    if parsed.scheme == "s3":
        try:
            return download_s3(parsed.netloc, unquote(parsed.path).lstrip("/"), dest_dir, want_file=want_file)
        except ArtifactReadError as exc:
            raise FetchError(exc.reason, artifact=exc.artifact) from exc
    if parsed.scheme in ("https", "http"):
        return _fetch_http(uri, dest_dir)
    raise FetchError(f"unsupported URI scheme in {uri!r}")


def _fetch_local(source: Path, dest_dir: Path, *, want_file: bool) -> Path:
    try:
        info = os.lstat(source)
    except OSError as exc:
        raise FetchError(f"unreachable URI: {source} ({exc.strerror or exc})", artifact=source) from exc
    target = dest_dir / source.name
    if stat.S_ISREG(info.st_mode):
        _copy_file(source, target)
    elif stat.S_ISDIR(info.st_mode) and not want_file:
        _copy_tree(source, target)
    else:
        raise FetchError("not a regular file or directory", artifact=source)
    return target


def _copy_file(source: Path, target: Path) -> None:
    try:
        with open(source, "rb") as reader, open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer, 4 << 20)
    except OSError as exc:
        raise FetchError(f"cannot copy: {exc.strerror or exc}", artifact=source) from exc


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a drop without following links or opening special files (verification judges links later)."""
    target.mkdir()
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        path, dest = Path(entry.path), target / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(path), dest)  # kept as a link: list_files refuses it unless allowed
        elif entry.is_dir(follow_symlinks=False):
            _copy_tree(path, dest)
        elif entry.is_file(follow_symlinks=False):
            _copy_file(path, dest)
        else:
            raise FetchError("special file in the drop (device, socket or FIFO)", artifact=path)


def _fetch_http(uri: str, dest_dir: Path) -> Path:
    name = unquote(urlparse(uri).path.rstrip("/").rsplit("/", 1)[-1]) or "download"
    target = dest_dir / name
    try:
        with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT_S) as response, open(target, "xb") as out:  # noqa: S310
            shutil.copyfileobj(response, out, 4 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise FetchError(f"unreachable URI: {exc}", artifact=uri) from exc
    return target
