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

:class:`ReportLinks` builds the URLs the assets record; where no server is configured
(``CAIRN_REPORTS_URL=none``) an S3 store's presigned URL is used, else no link is made.
"""

import html
import logging
import mimetypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from integrity.errors import CairnError, UsageError

log = logging.getLogger(__name__)

#: Store areas the server may show; ``trusted`` (the attested bytes) and ``tmp`` are never served.
SERVED_AREAS = frozenset({"records", "reports", "releases", "ledger", "quarantine"})
PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


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


class ReportServer:
    """A threaded, read-only HTTP server over one store and one releases folder."""

    def __init__(self, store: Any, releases: Path, *, host: str = "127.0.0.1", port: int = 3100,
                 home: Path | None = None) -> None:
        self.store = store
        self.releases = releases.resolve()
        self.home = home
        handler = type("Handler", (_Handler,), {"reports": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(f"cannot serve reports on {host}:{port}: {exc.strerror or exc}",
                             advice="choose another port (--port, or the port of CAIRN_REPORTS_URL)") from exc
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"

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

    def resolve(self, path: str) -> tuple[bytes, str]:
        """The body and content type for a request path; raises LookupError (404) or PermissionError (403)."""
        parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
        if not parts:
            return self.index().encode(), "text/html; charset=utf-8"
        if any(p in (".", "..") or any(c in p for c in "/\\\x00") for p in parts):
            raise PermissionError("path traversal")
        head, rest = parts[0], parts[1:]
        if head == "store" and rest:
            if rest[0] not in SERVED_AREAS:
                raise PermissionError(f"the store area {rest[0]!r} is not served")
            key = "/".join(rest)
            try:
                body = self.store.read_key(key)
            except CairnError as exc:
                raise LookupError(str(exc)) from exc
            return body, _content_type(key)
        if head == "releases" and len(rest) >= 2:
            folder = self._release(rest[0])
            file = folder.joinpath(*rest[1:])
            if file.is_symlink() or not file.is_file() or not file.resolve().is_relative_to(folder.resolve()):
                raise LookupError(f"no file {'/'.join(rest[1:])} in release {rest[0]}")
            return file.read_bytes(), _content_type(file.name)
        if head == "audit" and len(rest) == 1:
            return self.audit_page(self._release(rest[0])).encode(), "text/html; charset=utf-8"
        raise LookupError(path)

    def _release(self, name: str) -> Path:
        folder = self.releases / name
        if folder.is_symlink() or not folder.is_dir() or folder.parent != self.releases:
            raise LookupError(f"no release {name} in {self.releases}")
        return folder

    def audit_page(self, release: Path) -> str:
        from integrity.distribution.audit import audit_release, render_html

        try:
            return render_html(audit_release(release, home=self.home))
        except CairnError as error:  # the audit could not run: say why, as a page
            return (f"<!DOCTYPE html><html><body><h1>Audit of {html.escape(release.name)} could not run</h1>"
                    f"<p class='verdict'>AUDIT FAILED</p><pre>{html.escape(error.diagnostics())}</pre></body></html>")

    def index(self) -> str:
        releases = sorted(p.name for p in self.releases.iterdir() if p.is_dir()) if self.releases.is_dir() else []
        rows = "".join(
            f"<li>{html.escape(name)}: <a href='/audit/{_quoted(name)}'>audit</a> · "
            f"<a href='/releases/{_quoted(name)}/release.json'>release.json</a> · "
            f"<a href='/releases/{_quoted(name)}/lineage.svg'>lineage</a></li>" for name in releases)
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cairn reports</title></head><body>"
                f"<h1>Cairn reports</h1><p>Store: <code>{html.escape(str(self.store.url))}</code></p>"
                f"<h2>Releases</h2><ul>{rows or '<li>none yet</li>'}</ul></body></html>")


def _content_type(name: str) -> str:
    if name.endswith((".json", ".jsonl")):
        return "application/json"
    if name.endswith(".sig") or name.endswith(".sigstore"):
        return "application/octet-stream"
    guessed, _ = mimetypes.guess_type(name)
    if guessed and (guessed.startswith("text/") or guessed in ("image/svg+xml", "application/javascript")):
        return f"{guessed}; charset=utf-8"
    return guessed or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    reports: ReportServer
    server_version = "cairn-reports"

    def _answer(self, *, body: bool) -> None:
        try:
            data, kind = self.reports.resolve(self.path)
            status = HTTPStatus.OK
        except PermissionError as exc:
            data, kind, status = f"forbidden: {exc}\n".encode(), "text/plain; charset=utf-8", HTTPStatus.FORBIDDEN
        except LookupError as exc:
            data, kind, status = f"not found: {exc}\n".encode(), "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND
        except (OSError, ValueError) as exc:
            log.warning("report server: %s: %s", self.path, exc)
            data, kind = f"error: {exc}\n".encode(), "text/plain; charset=utf-8"
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        if kind.startswith("image/svg"):  # an SVG from a bundle runs no script when opened on its own
            self.send_header("Content-Security-Policy", "script-src 'none'")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "the report server is read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        log.info("report server: " + format, *args)
