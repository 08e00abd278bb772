"""What the gate found: findings that name the file or member, the offset and the callable."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One reason to refuse a model file.

    ``path`` names the file and, for archive members, the member after ``!``
    (``model.pt!archive/data.pkl``); ``offset`` is the byte offset inside that file or member;
    ``callable`` is the ``module.name`` a pickle would import, where there is one.
    """

    path: str
    offset: int | None
    rule: str
    detail: str
    callable: str | None = None

    @property
    def member(self) -> str | None:
        return self.path.split("!", 1)[1] if "!" in self.path else None

    def describe(self) -> str:
        where = self.path if self.offset is None else f"{self.path}@{self.offset}"
        return f"{where}: {self.detail} [{self.rule}]"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "member": self.member, "offset": self.offset, "rule": self.rule,
                "detail": self.detail, "callable": self.callable, "name": self.rule, "passed": False}


@dataclass(frozen=True)
class ScanReport:
    """The gate's verdict on a file or directory: safe only when there is no finding at all."""

    artifact: str
    safe: bool
    formats: dict[str, str]
    findings: tuple[Finding, ...]
    files_scanned: int
    allowlist_version: int = field(default=0)

    @property
    def reason(self) -> str:
        if self.safe:
            kinds = ", ".join(sorted(set(self.formats.values()))) or "none"
            return f"safe: {self.files_scanned} file(s) ({kinds})"
        shown = "; ".join(f.describe() for f in self.findings[:3])
        more = f"; and {len(self.findings) - 3} more" if len(self.findings) > 3 else ""
        return f"unsafe: {shown}{more}"

    def as_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "safe": self.safe, "reason": self.reason, "formats": self.formats,
                "findings": [f.as_dict() for f in self.findings], "files_scanned": self.files_scanned,
                "allowlist_version": self.allowlist_version}


class Findings(list[Finding]):
    """A list of findings with a shorthand for adding one."""

    def add(self, path: str, offset: int | None, rule: str, detail: str, callable: str | None = None) -> None:
        self.append(Finding(path, offset, rule, detail, callable))
