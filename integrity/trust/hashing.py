"""Streaming SHA-256 of files and directories into OpenSSF model-signing manifests.

Layering follows model-signing: this module only hashes. It turns a file or a
directory into a :class:`Manifest` (per-file or per-shard digests plus the
serialization parameters needed to recompute them). Signing the manifest and
verifying it live in other modules.

Two serializations are produced, both byte-compatible with model-signing 1.x:

* ``files``: one digest per file; files are hashed in parallel, one stream each.
* ``shards``: one digest per fixed-size shard of every file; shards of one large
  file are hashed in parallel, so a single multi-gigabyte file uses every core.

Paths are walked without following anything that leaves the tree: symbolic links
outside the root, special files and unrepresentable names are refused.
"""

import hashlib
import os
import stat
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from integrity.errors import (
    ArtifactReadError,
    BundleFormatError,
    EmptyArtifactError,
    UnsafePathError,
)
from integrity.trust.statements import IN_TOTO_STATEMENT_TYPE, statement, subject

#: Paths model-signing ignores by default at the root of a model directory.
DEFAULT_IGNORED_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")
#: model-signing's default shard size (1 GB, decimal).
DEFAULT_SHARD_SIZE = 1_000_000_000
#: Read buffer per worker; large enough that hashlib releases the GIL and syscalls are rare.
READ_CHUNK = 4 * 1024 * 1024

OMS_PREDICATE_TYPE = "https://model_signing/signature/v1.0"

Method = Literal["files", "shards"]


@dataclass(frozen=True)
class HashingConfig:
    """How to turn an artifact into a manifest.

    Reads like a sentence: ``HashingConfig().use_shards(shard_size=...).ignoring("model.sig")``.
    """

    method: Method = "files"
    shard_size: int = DEFAULT_SHARD_SIZE
    ignore_paths: tuple[str, ...] = DEFAULT_IGNORED_PATHS
    allow_symlinks: bool = False
    # How to hash, not what: these never change a digest, so they do not take part in equality.
    workers: int | None = field(default=None, compare=False)
    chunk_size: int = field(default=READ_CHUNK, compare=False)

    def use_files(self) -> "HashingConfig":
        return replace(self, method="files")

    def use_shards(self, shard_size: int = DEFAULT_SHARD_SIZE) -> "HashingConfig":
        if shard_size <= 0:
            raise ValueError(f"shard size must be positive, got {shard_size}")
        return replace(self, method="shards", shard_size=shard_size)

    def ignoring(self, *paths: str) -> "HashingConfig":
        extra = tuple(p for p in paths if p not in self.ignore_paths)
        return replace(self, ignore_paths=self.ignore_paths + extra)

    def with_workers(self, workers: int) -> "HashingConfig":
        return replace(self, workers=workers)

    def serialization(self) -> dict[str, Any]:
        """The ``serialization`` block of the model-signing predicate."""
        params: dict[str, Any] = {"method": self.method, "hash_type": "sha256"}
        if self.method == "shards":
            params["shard_size"] = self.shard_size
        params["allow_symlinks"] = self.allow_symlinks
        if self.ignore_paths:
            params["ignore_paths"] = list(self.ignore_paths)
        return params

    @classmethod
    def from_serialization(cls, params: dict[str, Any], *, artifact: str = "") -> "HashingConfig":
        """Rebuild the config a signer used, from a signed predicate (strictly checked)."""
        if not isinstance(params, dict):
            raise BundleFormatError("serialization block is not an object", artifact=artifact)
        method = params.get("method")
        hash_type = params.get("hash_type")
        if method not in ("files", "shards"):
            raise BundleFormatError(f"unsupported serialization method {method!r}", artifact=artifact)
        if hash_type != "sha256":
            raise BundleFormatError(
                f"unsupported hash type {hash_type!r} (Cairn verifies sha256 manifests)",
                artifact=artifact,
            )
        ignore = params.get("ignore_paths", [])
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise BundleFormatError("ignore_paths must be a list of strings", artifact=artifact)
        allow_symlinks = params.get("allow_symlinks", False)
        if not isinstance(allow_symlinks, bool):
            raise BundleFormatError("allow_symlinks must be a boolean", artifact=artifact)
        config = cls(method=method, ignore_paths=tuple(ignore), allow_symlinks=allow_symlinks)
        if method == "shards":
            shard_size = params.get("shard_size")
            # model-signing writes the shard size through a protobuf Struct, i.e. as a float.
            if isinstance(shard_size, float) and shard_size.is_integer():
                shard_size = int(shard_size)
            if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size <= 0:
                raise BundleFormatError(f"invalid shard_size {shard_size!r}", artifact=artifact)
            config = replace(config, shard_size=shard_size)
        return config


@dataclass(frozen=True, order=True)
class Resource:
    """One manifest entry: a file (``files``) or a byte range of a file (``shards``)."""

    sort_key: tuple[tuple[str, ...], int, int] = field(repr=False, compare=True)
    path: str = field(compare=False)
    start: int = field(compare=False)
    end: int = field(compare=False)
    digest: str = field(compare=False)  # lowercase hex sha256
    sharded: bool = field(compare=False, default=False)

    @classmethod
    def make(cls, path: str, digest: str, start: int = 0, end: int = 0, sharded: bool = False) -> "Resource":
        # model-signing sorts PurePosixPath keys, i.e. by path components, then by offsets.
        return cls((tuple(path.split("/")), start, end), path, start, end, digest, sharded)

    @property
    def name(self) -> str:
        return f"{self.path}:{self.start}:{self.end}" if self.sharded else self.path


@dataclass(frozen=True)
class Manifest:
    """Digests of everything in an artifact, in model-signing's canonical order."""

    model_name: str
    resources: tuple[Resource, ...]
    config: HashingConfig

    @property
    def root_digest(self) -> str:
        """SHA-256 over the raw resource digests in order: the in-toto subject digest."""
        hasher = hashlib.sha256()
        for resource in self.resources:
            hasher.update(bytes.fromhex(resource.digest))
        return hasher.hexdigest()

    @property
    def files(self) -> dict[str, str]:
        """Per-file view: path -> digest of the whole file (or of its shard digests joined)."""
        grouped: dict[str, list[str]] = {}
        for resource in self.resources:
            grouped.setdefault(resource.path, []).append(resource.digest)
        return {path: ",".join(digests) for path, digests in grouped.items()}

    @property
    def algorithm(self) -> str:
        """The per-resource algorithm label model-signing writes for this serialization."""
        if self.config.method == "shards":
            return f"sha256-sharded-{self.config.shard_size}"
        return "sha256"

    def to_statement(self) -> dict[str, Any]:
        """The in-toto statement model-signing signs (predicate v1.0)."""
        return statement([subject(self.model_name, self.root_digest)], OMS_PREDICATE_TYPE, {
            "serialization": self.config.serialization(),
            "resources": [{"name": r.name, "algorithm": self.algorithm, "digest": r.digest} for r in self.resources],
        })

    @classmethod
    def from_statement(cls, statement: dict[str, Any], *, artifact: str = "") -> "Manifest":
        """Parse and check a signed model-signing statement (never trusts its root digest)."""
        try:
            if statement.get("_type") != IN_TOTO_STATEMENT_TYPE:
                raise BundleFormatError(
                    f"payload is not an in-toto v1 statement ({statement.get('_type')!r})",
                    artifact=artifact,
                )
            if statement.get("predicateType") != OMS_PREDICATE_TYPE:
                raise BundleFormatError(
                    f"predicate type {statement.get('predicateType')!r} is not a model signature",
                    artifact=artifact,
                )
            subjects = statement["subject"]
            if not isinstance(subjects, list) or len(subjects) != 1:
                raise BundleFormatError("a model signature must have exactly one subject", artifact=artifact)
            subject_digest = subjects[0]["digest"]["sha256"]
            predicate = statement["predicate"]
            config = HashingConfig.from_serialization(predicate["serialization"], artifact=artifact)
            resources = []
            allowed = {"sha256", f"sha256-sharded-{config.shard_size}"} if config.method == "shards" else {"sha256"}
            for entry in predicate["resources"]:
                if entry.get("algorithm") not in allowed:
                    raise BundleFormatError(
                        f"resource {entry.get('name')!r} uses algorithm {entry.get('algorithm')!r}",
                        artifact=artifact,
                    )
                digest = _check_hex_digest(entry["digest"], artifact)
                name = entry["name"]
                if not isinstance(name, str):
                    raise BundleFormatError("resource name is not a string", artifact=artifact)
                if config.method == "shards":
                    path, start, end = _parse_shard_name(name, artifact)
                    resources.append(Resource.make(path, digest, start, end, sharded=True))
                else:
                    resources.append(Resource.make(validate_relative_name(name, artifact), digest))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, BundleFormatError):
                raise
            raise BundleFormatError(f"model signature payload is malformed: {exc!r}", artifact=artifact) from exc
        names = [r.name for r in resources]
        if len(set(names)) != len(names):
            raise BundleFormatError("model signature lists a resource twice", artifact=artifact)
        manifest = cls(str(subjects[0].get("name", "")), tuple(sorted(resources)), config)
        if manifest.root_digest != subject_digest:
            raise BundleFormatError(
                "model signature is inconsistent: its subject digest does not match its resources",
                artifact=artifact,
            )
        return manifest


def _check_hex_digest(value: object, artifact: str) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise BundleFormatError(f"invalid sha256 digest {value!r}", artifact=artifact)
    try:
        bytes.fromhex(value)
    except ValueError as exc:
        raise BundleFormatError(f"invalid sha256 digest {value!r}", artifact=artifact) from exc
    return value.lower()


def _parse_shard_name(name: str, artifact: str) -> tuple[str, int, int]:
    parts = name.split(":")
    if len(parts) != 3:
        raise BundleFormatError(f"invalid shard name {name!r}", artifact=artifact)
    start, end = int(parts[1]), int(parts[2])
    if start < 0 or end <= start:
        raise BundleFormatError(f"invalid shard range in {name!r}", artifact=artifact)
    return validate_relative_name(parts[0], artifact), start, end


def validate_relative_name(name: str, artifact: str = "") -> str:
    """Refuse names that could escape the artifact root or cannot be represented."""
    if name == ".":
        return name
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise UnsafePathError(f"path {name!r} is absolute or malformed", artifact=artifact)
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"path {name!r} contains a '..' or empty component", artifact=artifact)
    if any(ord(ch) < 0x20 for ch in name):
        raise UnsafePathError(f"path {name!r} contains control characters", artifact=artifact)
    return name


# -- hashing ------------------------------------------------------------------------------

_local = threading.local()


def _buffer(size: int) -> bytearray:
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = bytearray(size)
        _local.buf = buf
    return buf


def sha256_range(
    path: Path, start: int = 0, end: int | None = None, chunk_size: int = READ_CHUNK, *, expect_eof: bool = False
) -> str:
    """SHA-256 of bytes [start, end) of a file, streamed through a reused buffer.

    With ``expect_eof`` the file must end exactly at ``end``: a file that grew or shrank
    after it was listed is an error, because what gets signed must be what was listed.
    """
    hasher = hashlib.sha256()
    buf = _buffer(chunk_size)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as handle:
            if start:
                handle.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining)
                got = handle.readinto(view[:want])
                if not got:
                    break
                hasher.update(view[:got])
                if remaining is not None:
                    remaining -= got
            if remaining:
                raise ArtifactReadError(f"file shrank while it was hashed ({remaining} bytes missing)", artifact=path)
            if expect_eof and end is not None and handle.readinto(view[:1]):
                raise ArtifactReadError("file grew while it was hashed (more bytes than were listed)", artifact=path)
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
    return hasher.hexdigest()


def manifest_root(digests: Mapping[str, str]) -> str:
    """model-signing's manifest root over per-file SHA-256 digests (ordered by path components)."""
    hasher = hashlib.sha256()
    for name in sorted(digests, key=lambda n: tuple(n.split("/"))):
        hasher.update(bytes.fromhex(digests[name]))
    return hasher.hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a whole file."""
    return sha256_range(Path(path))


@dataclass(frozen=True)
class _FileEntry:
    relative: str
    absolute: Path
    size: int


def _is_ignored(relative: str, ignore_paths: Iterable[str]) -> bool:
    for ignored in ignore_paths:
        ignored = ignored.strip("/")
        if relative == ignored or relative.startswith(ignored + "/"):
            return True
    return False


def list_files(root: Path, config: HashingConfig) -> list[_FileEntry]:
    """Every regular file under ``root`` (or ``root`` itself), checked and sorted."""
    artifact = str(root)
    try:
        top = os.lstat(root)
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=root) from exc
    if stat.S_ISLNK(top.st_mode):
        raise UnsafePathError("the artifact itself is a symbolic link; pass its real path", artifact=root)
    if stat.S_ISREG(top.st_mode):
        return [_FileEntry(".", root, top.st_size)]
    if not stat.S_ISDIR(top.st_mode):
        raise UnsafePathError("not a regular file or directory (special file)", artifact=root)

    real_root = root.resolve()
    entries: list[_FileEntry] = []
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as scan:
                children = list(scan)
        except OSError as exc:
            raise ArtifactReadError(f"cannot list directory: {exc.strerror or exc}", artifact=directory) from exc
        for child in children:
            try:
                name = child.name
                name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UnsafePathError(f"file name {child.name!r} is not valid UTF-8", artifact=artifact) from exc
            relative = f"{prefix}{name}"
            validate_relative_name(relative, artifact)
            if _is_ignored(relative, config.ignore_paths):
                continue
            if config.method == "shards" and ":" in relative:
                raise UnsafePathError(
                    f"{relative!r}: ':' cannot appear in a name in a sharded manifest", artifact=artifact
                )
            path = Path(child.path)
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise ArtifactReadError(f"cannot stat: {exc.strerror or exc}", artifact=path) from exc
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    raise UnsafePathError(
                        f"symbolic link {relative!r} points outside the artifact (to {target})",
                        artifact=artifact,
                    )
                if not config.allow_symlinks:
                    raise UnsafePathError(
                        f"symbolic link {relative!r} is not allowed (sign with symlinks allowed)",
                        artifact=artifact,
                    )
                try:
                    info = os.stat(target)
                except OSError as exc:
                    raise ArtifactReadError(f"broken symbolic link {relative!r}", artifact=artifact) from exc
                if stat.S_ISDIR(info.st_mode):
                    raise UnsafePathError(f"symbolic link {relative!r} points to a directory", artifact=artifact)
            if stat.S_ISDIR(info.st_mode):
                pending.append((path, relative + "/"))
            elif stat.S_ISREG(info.st_mode):
                entries.append(_FileEntry(relative, path, info.st_size))
            else:
                raise UnsafePathError(
                    f"{relative!r} is a special file (device, FIFO or socket)", artifact=artifact
                )
    if not entries:
        raise EmptyArtifactError("directory has no files to verify", artifact=root)
    entries.sort(key=lambda e: tuple(e.relative.split("/")))
    return entries


def _work_items(entries: Sequence[_FileEntry], config: HashingConfig) -> list[tuple[_FileEntry, int, int]]:
    items: list[tuple[_FileEntry, int, int]] = []
    for entry in entries:
        if config.method == "files":
            items.append((entry, 0, entry.size))
            continue
        # model-signing emits no shard for an empty file in shard mode.
        for start in range(0, entry.size, config.shard_size):
            items.append((entry, start, min(start + config.shard_size, entry.size)))
    return items


def _resolve_workers(config: HashingConfig) -> int:
    return max(1, config.workers or os.cpu_count() or 1)


def hash_artifact(path: str | Path, config: HashingConfig | None = None, *, model_name: str | None = None) -> Manifest:
    """Hash a file or directory into a manifest, using every core the config allows."""
    config = config or HashingConfig()
    root = Path(path)
    entries = list_files(root, config)
    items = _work_items(entries, config)
    sharded = config.method == "shards"

    def run(item: tuple[_FileEntry, int, int]) -> Resource:
        entry, start, end = item
        # The last range of each file must end exactly at the listed size: growth or
        # truncation while hashing is an error, never a silently different digest.
        digest = sha256_range(entry.absolute, start, end, config.chunk_size, expect_eof=end == entry.size)
        if not sharded:
            return Resource.make(entry.relative, digest)
        return Resource.make(entry.relative, digest, start, end, sharded=True)

    workers = min(_resolve_workers(config), max(1, len(items)))
    # Largest first keeps both cores busy until the end (longest-processing-time scheduling).
    ordered = sorted(items, key=lambda it: it[2] - it[1], reverse=True)
    if workers == 1:
        resources = [run(item) for item in ordered]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-hash") as pool:
            resources = list(pool.map(run, ordered))
    name = model_name if model_name is not None else (root.resolve().name or str(root))
    return Manifest(name, tuple(sorted(resources)), config)


# -- comparison ---------------------------------------------------------------------------


