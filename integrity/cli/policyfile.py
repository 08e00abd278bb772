"""``cairn policy add``: a signer added to a reviewed policy file, its comments and layout kept.

A policy is reviewed in version control, so the edit is one a reviewer can read in a diff: the file
is rewritten with ruamel's round-trip YAML (every comment, the key order and the quoting stay), the
new signer is appended to the source's ``signers``, ``version`` goes up by one (records name the
policy version they were attested under), and a public key from outside the policy's folder is
copied into ``keys/`` beside it, so that the policy never names a path of one machine. The result
must load as a policy before it replaces the file (atomically); nothing is written otherwise.
"""

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity.errors import UsageError
from integrity.safeio import parse_yaml

PolicyDocument = Any  # a ruamel round-trip mapping (CommentedMap): the file as a reviewer wrote it


def _round_trip() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 120
    return yaml


@dataclass
class PolicyFile:
    """A policy as written: the round-trip document and the comment lines that end the file.

    ruamel ties comments at the very end of a file to the last item, so an appended signer would land
    below them; they are kept apart and written back at the end instead.
    """

    document: PolicyDocument
    tail: str = ""

    def render(self) -> bytes:
        buffer = io.StringIO()
        _round_trip().dump(self.document, buffer)
        return (buffer.getvalue() + self.tail).encode()


def read_policy_document(path: Path) -> PolicyFile:
    """The policy as written (comments included), after the strict reader accepted it (no aliases, no duplicates)."""
    from ruamel.yaml.comments import CommentedMap

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the policy: {exc.strerror or exc}", artifact=path) from exc
    strict = parse_yaml(raw, artifact=path)
    if strict is not None and not isinstance(strict, dict):
        raise UsageError("a policy is a mapping", artifact=path)
    body, tail = split_trailing_comments(raw.decode("utf-8"))
    document = _round_trip().load(body) if strict else None
    return PolicyFile(document if document is not None else CommentedMap(), tail)


def split_trailing_comments(text: str) -> tuple[str, str]:
    """``text`` without the comment and blank lines that end it, and those lines."""
    lines = text.splitlines(keepends=True)
    cut = len(lines)
    while cut and (not lines[cut - 1].strip() or lines[cut - 1].lstrip().startswith("#")):
        cut -= 1
    return "".join(lines[:cut]), "".join(lines[cut:])


def key_in_policy_folder(policy: Path, public: Path, source: str) -> tuple[str, Path | None]:
    """The key's path as the policy names it (relative to the policy's folder), and where it was copied to.

    A key outside the folder is copied to ``keys/<source>.pub`` there (or ``<source>-N.pub`` beside a
    different key of that name), so that the policy holds no absolute path of this machine.
    """
    folder = policy.parent.resolve()
    resolved = public.resolve()
    if resolved.is_relative_to(folder):
        return resolved.relative_to(folder).as_posix(), None
    keys = folder / "keys"
    keys.mkdir(exist_ok=True)
    data = resolved.read_bytes()
    for number in range(1000):
        target = keys / (f"{source}.pub" if number == 0 else f"{source}-{number}.pub")
        if target.exists() and target.read_bytes() == data:
            return target.relative_to(folder).as_posix(), None
        if not target.exists():
            shutil.copyfile(resolved, target)
            return target.relative_to(folder).as_posix(), target
    raise UsageError(f"too many keys named {source}*.pub in {keys}", artifact=keys)


def add_signer(document: PolicyDocument, source: str, signer: dict[str, Any], description: str) -> bool:
    """Append ``signer`` to ``source``'s signers (the entry created if new) and bump ``version``.

    Returns False, changing nothing, if the source already lists that signer.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    sources = document.get("sources")
    if not isinstance(sources, dict) or not sources:  # absent, or the scaffold's flow-style `{}`
        sources = CommentedMap(sources or {})
        document["sources"] = sources
    entry = sources.get(source)
    if entry is None:
        entry = CommentedMap([("description", description), ("signers", CommentedSeq())])
        sources[source] = entry
    signers = entry.setdefault("signers", CommentedSeq())
    if any(_plain(existing) == signer for existing in signers):
        return False
    signers.append(_commented(signer))
    document["version"] = int(document.get("version", 0) or 0) + 1
    return True


def describe_signer(signer: dict[str, Any]) -> str:
    """One line for the user: ``key sha256:... (keys/vendor.pub)`` or ``Sigstore identity ... from ...``."""
    if "key" in signer:
        return f"key {signer['key']['fingerprint']} ({signer['key']['public_key']})"
    return f"Sigstore identity {signer['sigstore']['identity']} issued by {signer['sigstore']['issuer']}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _commented(value: Any) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if isinstance(value, dict):
        return CommentedMap((k, _commented(v)) for k, v in value.items())
    return value
