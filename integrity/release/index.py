"""The release index (``release.json``): its file names, its one parser, and the one list of the
subjects a revocation can name for a release (every path that asks about revocation uses it)."""

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    DigestMismatchError,
    UsageError,
    VerificationError,
)
from integrity.storage import (
    normalize_digest,
)
from integrity.trust.hashing import validate_relative_name
from integrity.trust.policy import SignerEvidence, TrustPolicy
from integrity.trust.verifying import verify_source

RELEASE_SCHEMA = "https://cairn.dev/release/v1"
#: The index of a release bundle and its signature: the only place these names are defined.
INDEX_NAME = "release.json"
INDEX_SIGNATURE_NAME = "release.json.sig"
#: What every complete bundle lists (docs/release-bundle.md).
MODEL_DIR = "model"
MODEL_FILES = ("model/model.safetensors", "model/config.json")
MODEL_SIGNATURE = "model/model.sig"
SIGNED_FILES = ("provenance.intoto.json", "bom.cdx.json", "lineage.json", "lineage.svg")
REQUIRED_FILES = (*MODEL_FILES, MODEL_SIGNATURE, *SIGNED_FILES, *(f"{name}.sig" for name in SIGNED_FILES))
#: Fields a complete index carries, with their JSON types.
COMPLETE_FIELDS = (("model", str), ("version", str), ("created", str), ("sequence", int), ("files", dict),
                   ("model_digest", str), ("inputs", list), ("gates", dict), ("signer", dict))

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _check_segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SAFE.match(value):
        raise UsageError(f"invalid {what} {value!r}: use letters, digits, '.', '_', '+' and '-' (not first)")
    return value


class ReleaseBundleError(VerificationError):
    """A release bundle is not what its signed index says (the error names the file and why)."""

    kind = "release-bundle"
    advice = "Do not deploy this release. Obtain it again from the release store and re-run `cairn audit`."


class ReleaseIndexError(ReleaseBundleError):
    """``release.json`` is malformed, names another model, or records a failed gate."""

    kind = "release-index"


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ReleaseIndex:
    """What ``release.json`` says, checked for shape (its signature is checked separately)."""

    model: str
    version: str
    sequence: int
    files: tuple[FileEntry, ...]
    data: Mapping[str, Any]
    sha256: str

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def parse(cls, raw: bytes, *, where: str | Path = INDEX_NAME, model: str | None = None,
              complete: bool = False) -> "ReleaseIndex":
        """The one parser of ``release.json``. ``model``: the index must be a release of it.

        ``complete``: also require everything a full bundle carries (every field, the required
        files, and gates that all passed), as bundle verification and audits do.
        """
        try:
            data = safeio.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReleaseIndexError(f"release index is not JSON: {exc}", artifact=where) from exc
        if not isinstance(data, dict):
            raise ReleaseIndexError("release index is not a JSON object", artifact=where)
        if data.get("schema") != RELEASE_SCHEMA:
            raise ReleaseIndexError(f"unknown release schema {data.get('schema')!r} (expected {RELEASE_SCHEMA})",
                                    artifact=where)
        if complete:
            _check_complete(data, where)
        if model is not None and data.get("model") != model:
            raise ReleaseIndexError(f"this is a release of {data.get('model')!r}, not of {model!r}", artifact=where)
        try:
            name = _check_segment(str(data["model"]), "model name")
            version = _check_segment(str(data["version"]), "version")
            sequence = data["sequence"]
            if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
                raise ReleaseIndexError(f"sequence {sequence!r} is not a positive integer", artifact=where)
            files_raw = data["files"]
            if not isinstance(files_raw, dict) or not files_raw:
                raise ReleaseIndexError("release index lists no files", artifact=where)
            files = []
            for file, entry in sorted(files_raw.items()):
                relative = validate_relative_name(str(file), str(where))
                if relative in (INDEX_NAME, INDEX_SIGNATURE_NAME, "."):
                    raise ReleaseIndexError(f"release index lists {relative!r} as a file", artifact=where)
                size = entry["size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ReleaseIndexError(f"{relative}: size {size!r} is not a byte count", artifact=where)
                files.append(FileEntry(relative, normalize_digest(str(entry["sha256"]), artifact=str(where)), size))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReleaseIndexError(f"release index is missing a field: {exc!r}", artifact=where) from exc
        except UsageError as exc:
            raise ReleaseIndexError(exc.reason, artifact=where) from exc
        return cls(name, version, sequence, tuple(files), data, hashlib.sha256(raw).hexdigest())

    @classmethod
    def read(cls, bundle_dir: str | Path, *, model: str | None = None, complete: bool = False) -> "ReleaseIndex":
        """The index of the bundle folder ``bundle_dir``."""
        path = Path(bundle_dir) / INDEX_NAME
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ArtifactReadError(f"no release index: {exc.strerror or exc}", artifact=path) from exc
        return cls.parse(raw, where=path, model=model, complete=complete)

    def subjects(self, evidences: Sequence[SignerEvidence] = ()) -> list[tuple[str, str]]:
        """Every (kind, subject) a revocation can name for this release: the one list.

        The release itself, its policy, model digest and every listed file; the signer the index
        records and every signer whose signature verified (``evidences``); each input's catalog
        source, its signed and its used digest, and its policy. Digests always carry ``sha256:``.
        """
        found: list[tuple[str, str]] = [("release", self.reference)]
        policy = self.data.get("policy_digest")
        if isinstance(policy, str) and policy:
            found.append(("policy", _prefixed(policy)))
        model_digest = self.data.get("model_digest")
        if isinstance(model_digest, str) and model_digest:
            found.append(("artifact", _prefixed(model_digest)))
        signer = self.data.get("signer") or {}
        if isinstance(signer, dict):
            for name in ("key_fingerprint", "certificate_fingerprint", "identity"):
                if isinstance(signer.get(name), str) and signer[name]:
                    found.append(("signer", signer[name]))
        for evidence in evidences:
            for value in (evidence.key_fingerprint, evidence.identity):
                if value:
                    found.append(("signer", value))
            if evidence.certificate is not None:
                from integrity.trust.signing import certificate_fingerprint

                found.append(("signer", certificate_fingerprint(evidence.certificate)))
        for item in self.data.get("inputs") or []:
            if not isinstance(item, dict):
                continue
            source = item.get("source") or item.get("name")  # the catalog source ("name" may be SOURCE/STAGE)
            if isinstance(source, str) and source:
                found.append(("source", source))
            for key in ("digest", "used_digest"):  # what the publisher signed, and what training read
                if isinstance(item.get(key), str) and item[key]:
                    found.append(("artifact", _prefixed(item[key])))
            if isinstance(item.get("policy_digest"), str) and item["policy_digest"]:
                found.append(("policy", _prefixed(item["policy_digest"])))
        found.extend(("artifact", f"sha256:{f.sha256}") for f in self.files)
        return list(dict.fromkeys(found))


def read_index(bundle_dir: Path) -> ReleaseIndex:
    return ReleaseIndex.read(bundle_dir)


def verify_index_signature(bundle_dir: Path, policy: TrustPolicy, model: str) -> tuple[ReleaseIndex, SignerEvidence]:
    """``release.json`` against ``release.json.sig`` and the release policy's signers for ``model``."""

    result = verify_source(bundle_dir / INDEX_NAME, policy, model, bundle=bundle_dir / INDEX_SIGNATURE_NAME)
    index = read_index(bundle_dir)
    if index.sha256 != result.digest:
        raise DigestMismatchError("release index changed while it was verified", artifact=bundle_dir / INDEX_NAME)
    if index.model != model:
        raise ReleaseIndexError(f"the signed index is for model {index.model!r}, not {model!r}",
                                artifact=bundle_dir / INDEX_NAME)
    return index, result.evidence


def check_revocations(revocations: Any, index: ReleaseIndex, evidence: SignerEvidence) -> None:
    """Refuse a release if it, its signer, its policy, one of its inputs or one of its files is revoked."""
    if revocations is None:
        return
    for kind, subject in index.subjects([evidence]):
        revocations.check(kind, subject, artifact=index.reference)


def _prefixed(digest: str) -> str:
    return digest if digest.startswith("sha256:") else f"sha256:{digest}"


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_complete(data: Mapping[str, Any], where: str | Path) -> None:
    """What a complete bundle's index must carry beyond its shape."""
    for name, kind in COMPLETE_FIELDS:
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ReleaseIndexError(f"field {name!r} is missing or not a {kind.__name__}", artifact=where)
    if data["sequence"] < 1:
        raise ReleaseIndexError("sequence must be a positive integer", artifact=where)
    if not str(data["model_digest"]).startswith("sha256:"):
        raise ReleaseIndexError("model_digest must be sha256:<hex>", artifact=where)
    for name, entry in data["files"].items():
        parts = str(name).split("/")
        if (not isinstance(entry, dict) or not _HEX64.match(str(entry.get("sha256", "")))
                or not isinstance(entry.get("size"), int) or any(p in ("", ".", "..") for p in parts)
                or name in (INDEX_NAME, INDEX_SIGNATURE_NAME)):
            raise ReleaseIndexError(f"file entry {name!r} is malformed", artifact=where)
    missing = [name for name in REQUIRED_FILES if name not in data["files"]]
    if missing:
        raise ReleaseIndexError(f"the index does not list {', '.join(missing)}", artifact=where)
    failed = [name for name, gate in data["gates"].items()
              if not isinstance(gate, dict) or gate.get("passed") is not True]
    if failed or not data["gates"]:
        raise ReleaseIndexError(f"the index records gate(s) that did not pass: {', '.join(failed)}" if failed
                                else "the index records no release gate", artifact=where)


class ReleaseFileError(ReleaseBundleError):
    """A file of the bundle changed, is missing, or is present without being listed."""

    kind = "release-file"
