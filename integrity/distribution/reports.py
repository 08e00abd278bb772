"""The report server: records, Data Docs, lineage images, release files and audits over HTTP, read-only.

Browsers refuse ``file://`` links from a web page, so the Dagster UI links here instead. The server
answers GET and HEAD only, and serves three things:

``/store/KEY``
    A document of the artifact store (records, reports and Data Docs, published releases, the ledger,
    quarantine records). The trusted copies and the staging area are never served.
``/releases/NAME/FILE``
    A file of a signed release bundle in the releases folder (``lineage.svg``, ``release.json``...).
``/audit/NAME``
    ``cairn audit`` of that release, run when asked and rendered as HTML (failures highlighted).

What it never does, whoever wrote to the store (see :mod:`integrity.distribution.serving`): follow a
symbolic link, serve anything under ``keys``, ``trusted`` or ``tmp``, a private key, a FIFO or device;
answer a Host header other than its own names (DNS rebinding); let a page it serves run script (a
Content-Security-Policy on every response, with ``sandbox`` on every served file such as Data Docs);
print a filesystem path in an error; let a slow client hold a thread past its timeout, or run more than
``workers`` requests at once (the rest are answered 503).

:class:`ReportLinks` builds the URLs the assets record; where no server is configured
(``CAIRN_REPORTS_URL=none``) an S3 store's presigned URL is used, else no link is made.
"""

import html
import io
import logging
import mimetypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from integrity.distribution.httpd import BoundedHTTPServer, DeadlineReader, busy_response
from integrity.distribution.revocations import StatusCache
from integrity.distribution.serving import (
    FILE_CSP,
    PAGE_CSP,
    SECURITY_HEADERS,
    NotServedError,
    RefusedRequest,
    allowed_hosts,
    check_names,
    host_allowed,
    is_private_key,
    open_beneath,
    parse_target,
)
from integrity.errors import CairnError, UsageError
from integrity.release.index import INDEX_NAME
from integrity.storage import ArtifactStore, MissingObjectError

log = logging.getLogger(__name__)

#: Store areas the server may show; ``trusted`` (the attested bytes) and ``tmp`` are never served.
SERVED_AREAS = frozenset({"records", "reports", "releases", "ledger", "quarantine"})
PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live
#: Seconds a client may take to send its request (and each write of the answer may take).
DEFAULT_TIMEOUT = 15.0
#: Requests served at once; more are answered 503 at once.
DEFAULT_WORKERS = 16
#: Files up to this size are read whole (and checked for a private key) before anything is sent; larger
#: local files are streamed, each chunk checked before it is sent.
WHOLE_BYTES = 8 << 20
#: The largest object read from a remote (S3) store.
REMOTE_MAX_BYTES = 64 << 20
CHUNK = 1 << 16
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


def _quoted(path: str) -> str:
    return quote(path, safe="/")
@dataclass(frozen=True)
class ReportLinks:
    """URLs for what the UI links to: the report server's, else an S3 store's presigned URLs, else none."""

    base: str | None
    store: Any = None

    def record(self, key: str | None) -> str | None:
        """The URL of a store document (a record key such as ``records/verifications/...``)."""
        if not key:
            return None
        if self.base:
            return f"{self.base}/store/{_quoted(key)}"
        if self.store is not None and "presigned-urls" in self.store.capabilities:
            try:
                url: str = self.store.presign_get(key, PRESIGN_SECONDS)
                return url
            except CairnError:
                return None
        return None

    def release_file(self, release: Path, name: str) -> str | None:
        return f"{self.base}/releases/{_quoted(release.name)}/{_quoted(name)}" if self.base else None

    def audit(self, release: Path) -> str | None:
        return f"{self.base}/audit/{_quoted(release.name)}" if self.base else None




@dataclass
class Reply:
    """One answer: a status, a body (or an open file streamed after the headers) and its policy."""

    status: HTTPStatus
    content_type: str
    body: bytes = b""
    file: io.FileIO | None = None
    size: int = -1
    csp: str = PAGE_CSP

    @property
    def length(self) -> int:
        return self.size if self.file is not None else len(self.body)

    @classmethod
    def error(cls, status: HTTPStatus, reason: str) -> "Reply":
        return cls(status, TEXT, f"{status.value} {status.phrase.lower()}: {reason}\n".encode())

    @classmethod
    def served(cls, name: str, data: bytes) -> "Reply":
        if is_private_key(name, data):
            raise RefusedRequest("a private key is never served", artifact=name)
        return cls(HTTPStatus.OK, _content_type(name), data, csp=FILE_CSP)


class ReportServer:
    """A threaded, read-only HTTP server over one store and one releases folder.

    ``public_url`` (the reports URL clients use) adds its host to the Host header values answered;
    ``timeout`` bounds how long a client may take to send a request; ``workers`` how many run at once.
    """

    def __init__(self, store: ArtifactStore, releases: Path, *, host: str = "127.0.0.1", port: int = 3100,
                 home: Path | None = None, public_url: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 workers: int = DEFAULT_WORKERS) -> None:
        self.store = store
        self.releases = releases.resolve()
        self.home = home
        self._releases_protected = self._inside_protected(self.releases)
        handler = type("Handler", (_Handler,), {"reports": self, "timeout": timeout})
        try:
            self.httpd = BoundedHTTPServer((host, port), handler, workers=workers,
                                           busy=_busy_response())
        except OSError as exc:
            raise UsageError(f"cannot serve reports on {host}:{port}: {exc.strerror or exc}",
                             advice="choose another port (--port, or the port of CAIRN_REPORTS_URL)") from exc
        public = urlsplit(public_url or "")
        try:
            public_port = public.port
        except ValueError:
            public_port = None
        self.allowed_hosts = allowed_hosts(host, int(self.httpd.server_address[1]), public.hostname, public_port)

    def _inside_protected(self, folder: Path) -> bool:
        """Whether the releases folder is (inside) the keys folder or the store's trusted or staging area."""
        protected = [self.home / "keys"] if self.home is not None else []
        if self.store.local_root is not None:
            protected += [self.store.local_root / "trusted", self.store.local_root / "tmp"]
        return any(folder.is_relative_to(p.resolve()) for p in protected)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host if isinstance(host, str) else host.decode()
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @contextmanager
    def running(self) -> Iterator["ReportServer"]:
        """Serve from a background thread while the block runs."""
        thread = threading.Thread(target=self.serve_forever, name="cairn-reports", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.close()
            thread.join(timeout=10)

    # -- what each path serves ------------------------------------------------------------------------

    def resolve(self, target: str) -> Reply:
        """The answer to a request target; raises LookupError (404) or PermissionError (403).

        A ``Reply`` with an open ``file`` must be closed by the caller (the handler streams it).
        """
        parts = parse_target(target)
        if not parts:
            return Reply(HTTPStatus.OK, HTML, self.index().encode())
        head, rest = parts[0], parts[1:]
        if head == "store" and rest:
            return self._store_file(rest)
        if head == "releases" and len(rest) >= 2:
            self._release_folder(rest[0])
            check_names(rest[1:])
            return _local_file(self.releases, rest)
        if head == "audit" and len(rest) == 1:
            folder = self._release_folder(rest[0])
            return Reply(HTTPStatus.OK, HTML, self.audit_page(folder).encode())
        raise NotServedError("nothing is served at this path", artifact="request target")

    def _store_file(self, rest: tuple[str, ...]) -> Reply:
        if rest[0] not in SERVED_AREAS:
            raise RefusedRequest(f"the store area {rest[0]!r} is not served", artifact="request target")
        check_names(rest[1:])
        if self.store.local_root is not None:
            return _local_file(self.store.local_root, rest)
        key = "/".join(rest)
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in self.store.read_key_chunks(key):
                chunks.append(chunk)
                total += len(chunk)
                if total > REMOTE_MAX_BYTES:
                    raise RefusedRequest(f"over {REMOTE_MAX_BYTES} bytes", artifact=self.store.describe(key))
        except MissingObjectError as exc:
            raise NotServedError("not in the store", artifact=self.store.describe(key)) from exc
        return Reply.served(rest[-1], b"".join(chunks))

    def _release_folder(self, name: str) -> Path:
        """The folder of a release bundle: a real folder (no link) holding a regular release.json."""
        check_names([name])
        if self._releases_protected:
            raise RefusedRequest("the releases folder is inside the keys folder or the store's trusted area",
                                 artifact=self.releases)
        try:
            open_beneath(self.releases, (name, INDEX_NAME)).close()
        except NotServedError as exc:
            raise NotServedError(f"no release {name!r} (a folder holding {INDEX_NAME})",
                                 artifact=self.releases / name) from exc
        return self.releases / name

    def _release_names(self) -> list[str]:
        names = []
        for entry in sorted(self.releases.iterdir()) if self.releases.is_dir() else []:
            try:
                names.append(self._release_folder(entry.name).name)
            except (LookupError, PermissionError):
                continue
        return names

    def audit_page(self, release: Path) -> str:
        from integrity.distribution.audit import audit_release, render_html

        try:
            return render_html(audit_release(release, home=self.home))
        except CairnError as error:  # the audit could not run: say why, as a page
            log.warning("report server: the audit of %s could not run: %s", release, error.summary())
            return (f"<!DOCTYPE html><html><body><h1>Audit of {html.escape(release.name)} could not run</h1>"
                    f"<p class='verdict'>AUDIT FAILED</p><pre>{html.escape(error.reason)}</pre></body></html>")

    def index(self) -> str:
        rows = ""
        cache: StatusCache = {}  # the revocation lists, read once for the whole page
        for name in self._release_names():
            marked, note = self._status(name, cache)
            rows += (f"<li{marked}>{html.escape(name)}: <a href='/audit/{_quoted(name)}'>audit</a> · "
                     f"<a href='/releases/{_quoted(name)}/{INDEX_NAME}'>{INDEX_NAME}</a> · "
                     f"<a href='/releases/{_quoted(name)}/lineage.svg'>lineage</a>{note}</li>")
        where = "a local folder" if self.store.local_root is not None else self.store.url
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cairn reports</title></head><body>"
                f"<h1>Cairn reports</h1><p>Store: <code>{html.escape(str(where))}</code></p>"
                f"<h2>Releases</h2><ul>{rows or '<li>none yet</li>'}</ul></body></html>")


    def _status(self, name: str, cache: StatusCache) -> tuple[str, str]:
        """The list item's class and a revocation note: "REVOKED ..." as soon as a revocation names it."""
        from integrity.distribution.revocations import release_status

        status = release_status(self.releases / name, self.store, self.home, cache)
        if status is None:
            return "", ""
        if status.revoked:
            return (" class='revoked' style='color:#b00020'",
                    f" — <strong class='revoked'>{html.escape(status.summary)}</strong>")
        return "", f" — <span class='status'>{html.escape(status.summary)}</span>"


def _local_file(root: Path, parts: tuple[str, ...]) -> Reply:
    """A file below a local root, opened without following links: read whole if small, else streamed."""
    handle = open_beneath(root, parts)
    try:
        size = os.fstat(handle.fileno()).st_size
        if size > WHOLE_BYTES:
            return Reply(HTTPStatus.OK, _content_type(parts[-1]), file=handle, size=size, csp=FILE_CSP)
        with handle:
            data = handle.read(WHOLE_BYTES + 1)
        if len(data) > WHOLE_BYTES:
            raise RefusedRequest("the file grew while it was being read", artifact=root.joinpath(*parts))
        return Reply.served(parts[-1], data)
    except BaseException:
        handle.close()
        raise


def _busy_response() -> bytes:
    return busy_response([*SECURITY_HEADERS, ("Content-Security-Policy", PAGE_CSP)])


def _content_type(name: str) -> str:
    if name.endswith((".json", ".jsonl")):
        return "application/json"
    if name.endswith(".sig") or name.endswith(".sigstore"):
        return "application/octet-stream"
    guessed, _ = mimetypes.guess_type(name)
    if guessed and (guessed.startswith("text/") or guessed in ("image/svg+xml", "application/javascript")):
        return f"{guessed}; charset=utf-8"
    return guessed or "application/octet-stream"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class _Handler(BaseHTTPRequestHandler):
    reports: ReportServer
    timeout = DEFAULT_TIMEOUT
    server_version = "cairn-reports"
    sys_version = ""
    error_content_type = TEXT
    error_message_format = "%(code)d %(message)s: %(explain)s\n"
    _csp = PAGE_CSP
    _extra: tuple[tuple[str, str], ...] = ()

    def setup(self) -> None:
        super().setup()
        given, self.rfile = self.rfile, io.BufferedReader(
            DeadlineReader(self.connection, self.timeout or DEFAULT_TIMEOUT))
        given.close()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # a response without headers would carry no policy
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # answer a malformed request with headers too
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        """Every response, errors included, carries the security headers and a Content-Security-Policy."""
        for name, value in (*SECURITY_HEADERS, ("Content-Security-Policy", self._csp), *self._extra):
            self.send_header(name, value)
        super().end_headers()

    def _reply(self) -> Reply:
        if not host_allowed(self.headers.get_all("Host"), self.reports.allowed_hosts):
            log.warning("report server: refused Host %s", _printable(repr(self.headers.get_all("Host"))))
            return Reply.error(HTTPStatus.MISDIRECTED_REQUEST,
                               "this server answers only to its own host names (DNS rebinding protection)")
        try:
            return self.reports.resolve(self.path)
        except PermissionError as exc:
            log.warning("report server: refused %s: %s", _printable(self.path), _printable(str(exc)))
            reason = exc.reason if isinstance(exc, CairnError) else "not readable by the server"
            return Reply.error(HTTPStatus.FORBIDDEN, reason)
        except LookupError as exc:
            log.info("report server: not found %s: %s", _printable(self.path), _printable(str(exc)))
            reason = exc.reason if isinstance(exc, CairnError) else "not found"
            return Reply.error(HTTPStatus.NOT_FOUND, reason)
        except (OSError, ValueError, CairnError):
            log.exception("report server: error answering %s", _printable(self.path))
            return Reply.error(HTTPStatus.INTERNAL_SERVER_ERROR, "the server failed (its log says why)")

    def _answer(self, *, body: bool) -> None:
        self.connection.settimeout(self.timeout or DEFAULT_TIMEOUT)
        reply = self._reply()
        try:
            self._csp = reply.csp
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(reply.length))
            self.end_headers()
            if body and reply.file is not None:
                self._stream(reply.file, reply.size)
            elif body:
                self.wfile.write(reply.body)
        finally:
            if reply.file is not None:
                reply.file.close()

    def _stream(self, handle: io.FileIO, size: int) -> None:
        """Send a large file chunk by chunk, cutting the answer short before a private key's bytes."""
        tail, left = b"", size
        while left > 0 and (chunk := handle.read(min(CHUNK, left))):
            if is_private_key("", tail + chunk):
                log.error("report server: %s holds a private key; the answer was cut short",
                          _printable(self.path))
                self.close_connection = True
                return
            self.wfile.write(chunk)
            left -= len(chunk)
            tail = chunk[-32:]

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self._extra = (("Allow", "GET, HEAD"),)
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "the report server is read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        log.info("report server: %s", _printable(format % args))
