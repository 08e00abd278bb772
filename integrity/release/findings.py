"""What a bundle check found, file by file, and the report of a bundle that verified."""

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from integrity.errors import (
    CairnError,
)
from integrity.release.index import (
    ReleaseFileError,
)
from integrity.trust.hashing import sha256_file


@dataclass(frozen=True)
class Finding:
    """One check of an audit: which file, what was checked, and whether it held."""

    file: str
    check: str
    passed: bool
    detail: str
    error: CairnError | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "check": self.check, "passed": self.passed, "detail": self.detail}
        if self.error is not None:
            data["error"] = {"type": type(self.error).__name__, "kind": self.error.kind}
        return data


@dataclass(frozen=True)
class BundleReport:
    """A release bundle that passed every check, and what each check established."""

    path: Path
    model: str
    version: str
    sequence: int
    created: str
    model_digest: str
    signer: dict[str, Any]
    index: dict[str, Any]
    findings: tuple[Finding, ...]
    revocations_checked: int

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.index.get("inputs") or [])

    @property
    def gates(self) -> dict[str, Any]:
        return dict(self.index.get("gates") or {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "verified",
            "release": str(self.path),
            "model": self.model,
            "version": self.version,
            "sequence": self.sequence,
            "created": self.created,
            "model_digest": self.model_digest,
            "signer": self.signer,
            "inputs": self.inputs,
            "gates": self.gates,
            "revocations_checked": self.revocations_checked,
            "checks": [f.as_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class BundleAudit:
    """Every check of a release bundle, passed or not (``cairn audit``)."""

    path: Path
    findings: tuple[Finding, ...]
    index: dict[str, Any] | None
    report: BundleReport | None

    @property
    def ok(self) -> bool:
        return self.report is not None and all(f.passed for f in self.findings)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": "verified" if self.ok else "failed",
            "release": str(self.path),
            "index": self.index,
            "checks": [f.as_dict() for f in self.findings],
            "failures": [f.as_dict() for f in self.failures],
        }


class _Checks:
    """Runs checks in order; in strict mode the first failure is raised, else it is recorded."""

    def __init__(self, root: Path, *, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.findings: list[Finding] = []

    def run(self, file: str, check: str, action: Callable[[], str]) -> bool:
        try:
            detail = action()
        except CairnError as error:
            self.findings.append(Finding(file, check, False, error.summary(), error))
            if self.strict:
                raise
            return False
        self.findings.append(Finding(file, check, True, detail))
        return True

    def fail(self, error: CairnError, file: str, check: str) -> None:
        self.findings.append(Finding(file, check, False, error.summary(), error))
        if self.strict:
            raise error


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue
            yield path.relative_to(root).as_posix(), info


def _check_file(root: Path, name: str, entry: Mapping[str, Any], *, digest: str | None = None) -> str:
    """Size and SHA-256 against the index; ``digest`` is one already computed from the same bytes."""
    path = root / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise ReleaseFileError("listed in release.json but missing", artifact=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise ReleaseFileError("not a regular file (links and special files are refused)", artifact=path)
    if info.st_size != entry["size"]:
        raise ReleaseFileError(f"size {info.st_size} differs from the signed size {entry['size']}", artifact=path)
    digest = digest or sha256_file(path)
    if digest != entry["sha256"]:
        raise ReleaseFileError(f"sha256 {digest} differs from the signed {entry['sha256']}", artifact=path)
    return f"sha256 {digest}, {info.st_size} bytes"
