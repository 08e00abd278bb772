"""Release distribution: publish a signed release bundle to the artifact store, pull it back verified.

**Publishing** writes, in this order, so that a reader never sees half a release:

1. every file of the bundle, ``release.json`` and ``release.json.sig`` as content-addressed
   objects (``trusted/sha256/..``; re-uploading the same bytes is a no-op);
2. a claim on the release's sequence number, ``releases/<model>/sequence/<n>.json``
   (create-only: one sequence number, one version);
3. the publication record ``releases/<model>/versions/<version>.json`` (create-only): the
   commit point. Until it exists the release is invisible; once it exists everything it
   points at is already there.

Create-only writes (``If-None-Match: *`` on S3, hard links locally) mean two publishers can
never clobber each other, and re-running a publish of the same bundle is idempotent. Where the
bucket has S3 Object Lock enabled, every object of the release gets a retention period and the
publication record reports the retention S3 holds (read back with ``head_object``).

**Pulling** (``cairn pull MODEL[@VERSION] --dest DIR``) downloads into a staging folder beside
``DIR``, verifies the release index signature against the release policy, refuses rollbacks
(sequence numbers in the signed index, a client-side record of what was seen, and optionally
the transparency ledger), checks the revocation list, downloads and checks every file, verifies
the bundle (model signature, provenance, BOM, every digest) and only then renames the staging
folder to ``DIR``. On any failure ``DIR`` is untouched and the reason is raised.

A **pull ticket** (:func:`presign`) lets a release manager hand a pull to someone without
bucket credentials: a JSON file of presigned URLs, verified exactly like a credentialed pull.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.distribution.errors import (
    PullTimeoutError,
    RollbackError,
)
from integrity.distribution.publication import (
    _now,
    verify_release_dir,
)
from integrity.distribution.sources import ReleaseSource, StoreSource, _check_publication, _fetch_small
from integrity.errors import (
    CairnError,
    DigestMismatchError,
    RevokedError,
    UsageError,
)
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    FileEntry,
    ReleaseIndex,
    ReleaseIndexError,
    _check_segment,
    check_revocations,
    verify_index_signature,
)
from integrity.release.revocation import RevocationList
from integrity.storage import ArtifactStore
from integrity.trust.policy import TrustPolicy

PULL_STATE_SCHEMA = "https://cairn.dev/pull-state/v1"
_STAGING_SUFFIX = ".cairn-pull"


# -- errors -----------------------------------------------------------------------------------


# -- small helpers ------------------------------------------------------------------------------


# -- the release index ------------------------------------------------------------------------


# -- verifying a bundle on disk ----------------------------------------------------------------


# -- S3 Object Lock -----------------------------------------------------------------------------


# -- publishing ---------------------------------------------------------------------------------


# -- where a pull reads from --------------------------------------------------------------------


# -- pull tickets -------------------------------------------------------------------------------


# -- client-side rollback record ----------------------------------------------------------------


class PullState:
    """What this client has already pulled: the highest sequence per model, the index per version.

    Kept in a small JSON file (default ``$CAIRN_HOME/pull-state.json``) so that a store serving
    an older index than one already seen, or a different index for a version already pulled, is
    refused as a rollback.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists() and not self.path.is_symlink():
            return {"schema": PULL_STATE_SCHEMA, "models": {}, "versions": {}}
        try:
            data = safeio.loads(safeio.read_regular_file(self.path, what="pull state", max_bytes=64 << 20))
        except (CairnError, ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"unreadable pull state: {exc}", artifact=self.path,
                             advice="Restore the file from backup; deleting it turns off rollback protection.") from exc
        if not isinstance(data, dict) or data.get("schema") != PULL_STATE_SCHEMA:
            raise UsageError("not a Cairn pull-state file", artifact=self.path)
        return data

    def check(self, index: ReleaseIndex, *, latest: bool) -> None:
        data = self._read()
        seen = (data.get("models") or {}).get(index.model)
        pinned = (data.get("versions") or {}).get(index.reference)
        if pinned and pinned.get("index_sha256") != index.sha256:
            raise RollbackError(
                f"{index.reference} was pulled before with index sha256:{pinned.get('index_sha256')} "
                f"(sequence {pinned.get('sequence')}); the store now serves sha256:{index.sha256} "
                f"(sequence {index.sequence})", artifact=index.reference)
        if latest and seen and int(seen.get("sequence", 0)) > index.sequence:
            raise RollbackError(
                f"the newest release of {index.model} served is sequence {index.sequence} ({index.version}), but "
                f"this client already saw sequence {seen['sequence']} ({seen.get('version')}): an older index was "
                "replayed or a newer release hidden", artifact=index.reference)

    def origin(self, reference: str, dest: Path) -> str | None:
        """The store ``reference`` (model@version) was pulled from into ``dest``, if this client did that."""
        try:
            pinned = (self._read().get("versions") or {}).get(reference) or {}
        except UsageError:
            return None
        if not isinstance(pinned, dict) or pinned.get("dest") != str(Path(dest).absolute()):
            return None
        origin = pinned.get("origin")
        return origin if isinstance(origin, str) and origin else None

    def record(self, index: ReleaseIndex, *, origin: str | None = None, dest: Path | None = None) -> None:
        from integrity.trust.signing import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            models = data.setdefault("models", {})
            seen = models.get(index.model)
            if not seen or int(seen.get("sequence", 0)) < index.sequence:
                models[index.model] = {"sequence": index.sequence, "version": index.version,
                                       "index_sha256": index.sha256, "at": _now()}
            entry = {"sequence": index.sequence, "index_sha256": index.sha256, "at": _now()}
            if origin and dest is not None:
                entry.update(origin=origin, dest=str(Path(dest).absolute()))
            data.setdefault("versions", {})[index.reference] = entry
            atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode())


def default_pull_state() -> PullState:
    from integrity.settings import current

    return PullState(current().pull_state)


# -- pulling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    model: str
    version: str
    sequence: int
    index_sha256: str
    dest: Path
    files: int
    bytes: int
    signer: str
    source: str
    seconds: float
    ledger_checked: bool

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"release": self.reference, "sequence": self.sequence, "index_sha256": self.index_sha256,
                "dest": str(self.dest), "files": self.files, "bytes": self.bytes, "signer": self.signer,
                "source": self.source, "seconds": round(self.seconds, 3), "ledger_checked": self.ledger_checked}


def _check_request(index: ReleaseIndex, model: str, version: str | None) -> None:
    """The signed index must be the release that was asked for, whatever the store's records say."""
    asked = f"{model}@{version or 'latest'}"
    if index.model != model or (version is not None and index.version != version):
        raise RollbackError(
            f"asked for {asked}, but the signed index the store serves is {index.reference} (sequence "
            f"{index.sequence}): an index was replayed under another version (a publication record copied over "
            "another's)", artifact=asked,
            advice="Do not install it. Report the store as tampered with; the release manager must republish.")


def _name_in_release(error: CairnError, staging: Path, reference: str) -> None:
    """Name a failing file as ``MODEL@VERSION:path`` rather than by the staging folder that is about to go."""
    if error.artifact and error.artifact.startswith(str(staging)):
        relative = error.artifact[len(str(staging)):].lstrip("/")
        error.artifact = f"{reference}:{relative}" if relative else reference
        error.args = (error.summary(),)


def _staging_pid(name: str) -> int | None:
    match = re.search(r"\.cairn-pull-(\d+)-[0-9a-f]+$", name)
    return int(match.group(1)) if match else None


def _clean_stale_staging(dest: Path) -> None:
    """Remove staging folders of earlier pulls into ``dest`` whose process is gone (killed halfway)."""
    parent = dest.parent
    if not parent.is_dir():
        return
    for entry in parent.glob(f".{dest.name}{_STAGING_SUFFIX}-*"):
        pid = _staging_pid(entry.name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running: another pull's staging area
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue


def _check_dest(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError("destination exists and is not a folder; pick a new folder", artifact=dest)
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError("destination folder is not empty; pull into a new folder (nothing was changed)",
                         artifact=dest)


def _progress_bar(total: int, label: str, enabled: bool | None) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                disable=(not enabled) if enabled is not None else None, leave=False, mininterval=0.5)


#: Seconds a whole pull may take by default ($CAIRN_PULL_TIMEOUT or ``--timeout`` override).
DEFAULT_PULL_TIMEOUT = 1800.0


class Deadline:
    """An overall time limit checked between and during downloads (each request also has its own timeout)."""

    def __init__(self, seconds: float | None, what: str) -> None:
        if seconds is not None and not seconds > 0:
            raise UsageError(f"a timeout must be a positive number of seconds, not {seconds!r}")
        self.seconds, self.what = seconds, what
        self.at = time.monotonic() + seconds if seconds is not None else None

    def check(self) -> None:
        if self.at is not None and time.monotonic() > self.at:
            raise PullTimeoutError(f"{self.what} did not finish within {self.seconds:g} s", artifact=self.what)


def pull(
    source: ReleaseSource,
    model: str,
    version: str | None,
    dest: str | Path,
    release_policy: TrustPolicy,
    *,
    state: PullState | None = None,
    ledger: Any = None,
    progress: bool | None = None,
    workers: int = 4,
    timeout: float | None = DEFAULT_PULL_TIMEOUT,
    revocation_sources: Sequence[ArtifactStore] = (),
) -> PullResult:
    """Download, verify and only then place a release at ``dest``; ``dest`` is untouched on failure.

    Revocations are read from the source and from every store of ``revocation_sources`` (the
    publisher's revocation list: a release revoked there is refused wherever it is pulled from).

    ``state`` records what this client has seen (rollback protection); ``ledger`` (an
    :class:`integrity.ledger.Ledger` with its public key pinned) additionally requires the index to
    be the one the transparency ledger logged for this version, and none newer when pulling the
    latest release. ``progress`` None shows a bar only on a terminal.
    """
    started = time.perf_counter()
    model = _check_segment(model, "model name")
    if version is not None:
        _check_segment(version, "version")
    target = Path(dest).absolute()
    _check_dest(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the destination's parent: {exc.strerror or exc}", artifact=target) from exc
    _clean_stale_staging(target)
    deadline = Deadline(timeout, f"pull of {model}@{version or 'latest'} from {source.describe()}")
    authority = release_policy.source(model).signers
    publication = source.publication(model, version)
    staging = target.parent / f".{target.name}{_STAGING_SUFFIX}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _fetch_small(source, publication.index_sha256, publication.index_size, staging / INDEX_NAME)
        _fetch_small(source, publication.signature_sha256, publication.signature_size,
                     staging / INDEX_SIGNATURE_NAME)
        index, evidence = verify_index_signature(staging, release_policy, model)
        _check_request(index, model, version)
        _check_publication(index, publication)
        if state is not None:
            state.check(index, latest=version is None)
        ledger_checked = False
        if ledger is not None:
            from integrity.distribution.ledgered import check_release_in_ledger

            check_release_in_ledger(ledger, index, latest=version is None)
            ledger_checked = True
        revocations = RevocationList.merged(source.revocations(authority),
                                            *(RevocationList.load(s, authority) for s in revocation_sources))
        check_revocations(revocations, index, evidence)
        deadline.check()
        _download_files(source, index, staging, progress, workers, deadline)
        deadline.check()
        try:
            verify_release_dir(staging, release_policy, model, revocations=revocations)
        except CairnError as error:
            _name_in_release(error, staging, index.reference)
            raise
        os.chmod(staging, 0o755)  # noqa: S103 - mkdir honours umask; a release folder is world-readable
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise UsageError(f"cannot move the verified release into place: {exc.strerror or exc} "
                             "(nothing was changed)", artifact=target) from exc
        with contextlib.suppress(OSError):
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if state is not None:
        state.record(index, origin=source.describe() if isinstance(source, StoreSource) else None, dest=target)
    return PullResult(index.model, index.version, index.sequence, index.sha256, target, len(index.files),
                      index.total_bytes, evidence.describe(), source.describe(), time.perf_counter() - started,
                      ledger_checked)


def _download_files(source: ReleaseSource, index: ReleaseIndex, staging: Path, progress: bool | None,
                    workers: int, deadline: Deadline | None = None) -> None:
    bar = _progress_bar(index.total_bytes, index.reference, progress)
    deadline = deadline or Deadline(None, index.reference)

    def advance(count: int) -> None:
        deadline.check()
        bar.update(count)

    def one(entry: FileEntry) -> None:
        deadline.check()
        path = staging.joinpath(*entry.path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        source.fetch(entry.sha256, entry.size, path, advance)
        size = path.stat().st_size
        if size != entry.size:
            raise DigestMismatchError(f"{entry.path}: the store sent {size} bytes, the signed index says "
                                      f"{entry.size}", artifact=f"{index.reference}:{entry.path}")

    try:
        # Largest first: the long downloads start at once, small files fill in around them.
        ordered = sorted(index.files, key=lambda f: -f.size)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cairn-pull") as pool:
            for future in [pool.submit(one, entry) for entry in ordered]:
                future.result()
    finally:
        bar.close()


# -- incident response ---------------------------------------------------------------------------


__all__ = [
    "PullResult",
    "PullState",
    "ReleaseIndexError",
    "RevokedError",
    "default_pull_state",
    "pull",
]
