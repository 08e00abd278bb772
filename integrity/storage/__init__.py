"""Storage: the content-addressed artifact store and its backends (local folder, S3).

Nothing outside this package touches boto3/botocore or asks which backend it has: callers use
:class:`ArtifactStore` and a backend's declared capabilities. May import the base modules and
:mod:`integrity.trust`.
"""

from integrity.storage.backends import open_store
from integrity.storage.base import (
    AREAS,
    CHUNK,
    CORRUPT_PREFIX,
    QUARANTINE_SCHEMA,
    TREE_SCHEMA,
    Area,
    Backend,
    BlobWrite,
    MissingObjectError,
    ObjectKind,
    QuarantineEntry,
    StoredObject,
    blob_key,
    normalize_digest,
    record_key,
    set_aside,
    tree_key,
    write_verified,
)
from integrity.storage.local import LocalBackend
from integrity.storage.s3 import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MULTIPART_CHUNKSIZE,
    DEFAULT_MULTIPART_THRESHOLD,
    S3_MAX_PARTS,
    S3Backend,
)
from integrity.storage.s3_api import DEFAULT_S3_TIMEOUT, S3_ATTEMPTS, s3_client, s3_config, s3_endpoint, s3_timeout
from integrity.storage.store import ArtifactStore

__all__ = [
    "AREAS",
    "CHUNK",
    "CORRUPT_PREFIX",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MULTIPART_CHUNKSIZE",
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_S3_TIMEOUT",
    "QUARANTINE_SCHEMA",
    "S3_ATTEMPTS",
    "S3_MAX_PARTS",
    "TREE_SCHEMA",
    "Area",
    "ArtifactStore",
    "Backend",
    "BlobWrite",
    "LocalBackend",
    "MissingObjectError",
    "ObjectKind",
    "QuarantineEntry",
    "S3Backend",
    "StoredObject",
    "blob_key",
    "normalize_digest",
    "open_store",
    "record_key",
    "s3_client",
    "s3_config",
    "s3_endpoint",
    "s3_timeout",
    "set_aside",
    "tree_key",
    "write_verified",
]
