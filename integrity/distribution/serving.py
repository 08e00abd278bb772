"""What the report server may serve, as pure functions a fuzz harness can call with arbitrary input.

:func:`parse_target` turns an HTTP request target into path parts, refusing anything that could name
something else once decoded (``..``, ``%2e%2e``, ``%2f``, NUL, backslash, control characters, a second
level of percent-encoding, absolute-form targets, overlong paths). :func:`open_beneath` opens a file
below a folder one component at a time, relative to the folder's descriptor and with ``O_NOFOLLOW``,
so a symbolic link anywhere on the way (planted in the store by someone who may write there) is refused
rather than followed to ``keys/release.key`` or a trusted copy. :func:`is_private_key` recognises a
private key by name or content so that it is never served, whatever folder it turned up in.

Both raise :class:`RefusedRequest` (a :class:`PermissionError`, answered 403) or :class:`NotServedError`
(a :class:`LookupError`, answered 404); their ``reason`` never names a filesystem path (the ``artifact``,
logged by the server only, may).
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from integrity.errors import CairnError

#: The longest request target, path parts and path part the server reads.
MAX_TARGET = 2048
MAX_PARTS = 32
MAX_PART_BYTES = 255
#: Names never served anywhere below a served root (compared case-insensitively).
FORBIDDEN_NAMES = frozenset({"keys", "store", "trusted", "tmp"})
#: Content that marks a private key (PEM of any kind, OpenSSH, PuTTY).
PRIVATE_KEY_MARKERS = (b"PRIVATE KEY-----", b"PuTTY-User-Key-File-")
PRIVATE_KEY_SUFFIXES = (".key",)

#: The Content-Security-Policy of Cairn's own pages and of every error: nothing runs, nothing is fetched
#: but the server's own images and styles, the page cannot be framed.
PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
#: Every served file (vendor-derived HTML such as Data Docs, SVG...) also gets a sandbox: an opaque origin
#: where no script runs even if a browser ignored ``script-src``.
FILE_CSP = f"sandbox; {PAGE_CSP}"
#: Headers on every response, errors included.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Resource-Policy", "same-site"),
    ("Cache-Control", "no-store"),
)
#: Host header values always answered (with or without the port).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEX = re.compile(r"%([0-9A-Fa-f]{2})")


class RefusedRequest(CairnError, PermissionError):
    """The request names something the report server never serves (answered 403)."""

    kind = "refused"


class NotServedError(CairnError, LookupError):
    """Nothing served is at that path (answered 404)."""

    kind = "not-found"


def parse_target(target: str | bytes) -> tuple[str, ...]:
    """The decoded path parts of an origin-form request target (the query is ignored).

    Raises :class:`RefusedRequest` (a PermissionError) for a malformed or unsafe target, never anything
    else for any input. ``/`` is the empty tuple.
    """
    if isinstance(target, bytes):
        try:
            target = target.decode("ascii")
        except UnicodeDecodeError as exc:
            raise RefusedRequest("the request target is not ASCII", artifact="request target") from exc
    if len(target) > MAX_TARGET:
        raise RefusedRequest(f"the request target is over {MAX_TARGET} characters", artifact="request target")
    if not target.startswith("/"):
        raise RefusedRequest("only a path starting with '/' is served (no absolute URLs, no '*')",
                             artifact="request target")
    if any(not "!" <= c <= "~" for c in target):
        raise RefusedRequest("the request target holds a space, control or non-ASCII character",
                             artifact="request target")
    path = target.partition("?")[0]
    if "#" in path:
        raise RefusedRequest("the request target holds a fragment", artifact="request target")
    parts = tuple(_decoded(raw) for raw in path.split("/") if raw)
    if len(parts) > MAX_PARTS:
        raise RefusedRequest(f"the path has over {MAX_PARTS} parts", artifact="request target")
    for part in parts:
        check_part(part)
    return parts


def _decoded(raw: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise RefusedRequest("a '%' that starts no percent-escape", artifact="request target")
    data = _HEX.sub(lambda m: chr(int(m.group(1), 16)), raw).encode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RefusedRequest("a percent-encoded path part that is not UTF-8", artifact="request target") from exc


def check_part(part: str) -> None:
    """Refuse one decoded path part that could leave its folder or hide what it names."""
    if part in (".", ".."):
        raise RefusedRequest("path traversal ('.' or '..')", artifact="request target")
    if not part or part.startswith("."):
        raise RefusedRequest("an empty or hidden name ('.' first)", artifact="request target")
    if any(c in "/\\%" or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in part):
        raise RefusedRequest("a separator, NUL, backslash, control character or double percent-encoding",
                             artifact="request target")
    if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
        raise RefusedRequest(f"a path part over {MAX_PART_BYTES} bytes", artifact="request target")
    if not part.isprintable():
        raise RefusedRequest("an unprintable character", artifact="request target")


def check_names(parts: Iterable[str]) -> None:
    """Refuse ``keys``, ``store``, ``trusted``, ``tmp`` and private-key file names anywhere in ``parts``."""
    for part in parts:
        if part.casefold() in FORBIDDEN_NAMES:
            raise RefusedRequest(f"{part!r} is never served", artifact="request target")
        if part.casefold().endswith(PRIVATE_KEY_SUFFIXES):
            raise RefusedRequest("a private key file is never served", artifact="request target")


def is_private_key(name: str, data: bytes) -> bool:
    """Whether a file looks like a private key, by its name or its content (a PEM, OpenSSH or PuTTY key)."""
    return name.casefold().endswith(PRIVATE_KEY_SUFFIXES) or any(m in data for m in PRIVATE_KEY_MARKERS)


def open_beneath(root: str | Path, parts: Sequence[str]) -> io.FileIO:
    """Open the regular file ``root/parts...`` without following any symbolic link, for reading.

    Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW`` (folders also with
    ``O_DIRECTORY``), and the file must be a regular file with one link. Raises :class:`RefusedRequest`
    (PermissionError: a symbolic link, a FIFO, device or socket, a hard-linked file, an unreadable one, a
    bad part) or :class:`NotServedError` (LookupError: nothing there, a folder); another OSError only
    where the system itself fails (out of descriptors).
    """
    if not parts:
        raise NotServedError("no file named", artifact=str(root))
    for part in parts:
        check_part(part)
    where = Path(root).joinpath(*parts)
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotServedError("the served folder does not exist", artifact=str(root)) from exc
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG):
            raise
        raise RefusedRequest("the served folder cannot be opened", artifact=str(root)) from exc
    try:
        for name in parts[:-1]:
            child = _open_component(folder, name, directory=True, where=where)
            os.close(folder)
            folder = child
        fd = _open_component(folder, parts[-1], directory=False, where=where)
    finally:
        os.close(folder)
    return io.FileIO(fd, "rb", closefd=True)


def read_beneath(root: str | Path, parts: Sequence[str], *, max_bytes: int = 64 << 20) -> bytes:
    """The bytes of :func:`open_beneath`'s file, refused over ``max_bytes`` or if it is a private key."""
    with open_beneath(root, parts) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RefusedRequest(f"the file is over {max_bytes} bytes", artifact=str(Path(root).joinpath(*parts)))
    if is_private_key(parts[-1], data):
        raise RefusedRequest("a private key is never served", artifact=str(Path(root).joinpath(*parts)))
    return data


def _open_component(folder: int, name: str, *, directory: bool, where: Path) -> int:
    try:
        before = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotServedError("no such file", artifact=where) from exc
    except PermissionError as exc:
        raise RefusedRequest("not readable by the server", artifact=where) from exc
    _check_kind(before, directory=directory, where=where)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise NotServedError("no such file", artifact=where) from exc
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise RefusedRequest("a symbolic link is never followed", artifact=where) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise RefusedRequest("not readable by the server", artifact=where) from exc
        raise
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or after.st_mode != before.st_mode:
        os.close(fd)
        raise RefusedRequest("the file changed while it was being opened", artifact=where)
    if not directory and after.st_nlink > 1:
        os.close(fd)  # a hard link may name a key or a trusted copy: its name says nothing about it
        raise RefusedRequest("a file with several hard links is never served", artifact=where)
    return fd


def _check_kind(info: os.stat_result, *, directory: bool, where: Path) -> None:
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        raise RefusedRequest("a symbolic link is never followed", artifact=where)
    if directory and not stat.S_ISDIR(mode):
        raise NotServedError("no such folder", artifact=where)
    if not directory and stat.S_ISDIR(mode):
        raise NotServedError("a folder, not a file", artifact=where)
    if not directory and not stat.S_ISREG(mode):
        raise RefusedRequest("not a regular file (a FIFO, device or socket)", artifact=where)


def allowed_hosts(host: str, port: int, public_url_host: str | None = None,
                  public_url_port: int | None = None) -> frozenset[str]:
    """The Host header values answered: loopback names, the listening host and the public URL's host."""
    names = set(LOOPBACK_HOSTS)
    ports = {port}
    for name in (host, public_url_host):
        if name and name not in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind names no host
            names.add(f"[{name}]" if ":" in name and not name.startswith("[") else name)
    if public_url_port is not None:
        ports.add(public_url_port)
    return frozenset(v.lower() for name in names for v in (name, *(f"{name}:{p}" for p in ports)))


def host_allowed(values: Sequence[str] | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header (exactly one) is one this server answers to (DNS rebinding)."""
    if not values or len(values) != 1:
        return False
    return values[0].strip().lower() in allowed
