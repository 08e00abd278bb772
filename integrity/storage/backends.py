"""Which backend a store URL opens: the one registry of storage backends, keyed by URL scheme.

Adding a backend is one module with a :class:`~integrity.storage.base.Backend` subclass and one
:func:`register_backend` call (see docs/extending.md). Built in: paths and ``file://`` (local
folder) and ``s3://bucket/prefix``.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import ParseResult, unquote, urlparse

from integrity.errors import UsageError
from integrity.storage.base import Backend
from integrity.storage.store import ArtifactStore

#: A backend factory: the parsed URL and the options ``open_store`` was given.
BackendFactory = Callable[[ParseResult, dict[str, Any]], Backend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Serve ``scheme://...`` store URLs with ``factory`` (a later registration replaces an earlier one)."""
    _BACKENDS[scheme.lower()] = factory


def registered_schemes() -> list[str]:
    return sorted(_BACKENDS)


def _local(parsed: ParseResult, options: dict[str, Any]) -> Backend:
    from integrity.storage.local import LocalBackend

    if parsed.netloc not in ("", "localhost"):
        raise UsageError(f"file URL with a remote host is not supported: {parsed.geturl()!r}")
    if not parsed.path:
        raise UsageError(f"file URL without a path: {parsed.geturl()!r}")
    return LocalBackend(unquote(parsed.path))


def _s3(parsed: ParseResult, options: dict[str, Any]) -> Backend:
    from integrity.storage.s3 import DEFAULT_MULTIPART_CHUNKSIZE, DEFAULT_MULTIPART_THRESHOLD, S3Backend
    from integrity.storage.s3_api import s3_endpoint

    return S3Backend(
        parsed.netloc,
        unquote(parsed.path).strip("/"),
        endpoint_url=s3_endpoint(options.get("endpoint_url")),
        region_name=options.get("region_name"),
        multipart_threshold=options.get("multipart_threshold") or DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize=options.get("multipart_chunksize") or DEFAULT_MULTIPART_CHUNKSIZE,
    )


register_backend("file", _local)
register_backend("s3", _s3)


def open_store(
    url_or_path: str | Path | None = None,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    multipart_threshold: int | None = None,
    multipart_chunksize: int | None = None,
) -> ArtifactStore:
    """Open a store from a path or a URL of a registered scheme (``file://``, ``s3://bucket/prefix``).

    ``None`` means the configured store (:attr:`integrity.settings.Settings.store`). The S3 endpoint
    comes from ``endpoint_url``, else the settings (``$CAIRN_S3_ENDPOINT_URL``, ``$AWS_ENDPOINT_URL``).
    """
    from integrity.storage.local import LocalBackend

    if url_or_path is None or (isinstance(url_or_path, str) and not url_or_path.strip()):
        from integrity.settings import current

        url_or_path = current().store
    if isinstance(url_or_path, Path):
        return ArtifactStore(LocalBackend(url_or_path))
    text = url_or_path.strip()
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme and len(scheme) > 1:  # one letter: a Windows drive, i.e. a path
        factory = _BACKENDS.get(scheme)
        if factory is None:
            raise UsageError(f"unsupported store URL {text!r}: use a path or one of "
                             + ", ".join(f"{s}://" for s in registered_schemes()))
        options = {"endpoint_url": endpoint_url, "region_name": region_name,
                   "multipart_threshold": multipart_threshold, "multipart_chunksize": multipart_chunksize}
        return ArtifactStore(factory(parsed, options))
    return ArtifactStore(LocalBackend(text))
