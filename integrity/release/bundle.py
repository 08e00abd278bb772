"""The release bundle: one directory a release manager verifies without Cairn's store, Dagster or a network.

Layout and index are fixed in ``docs/release-bundle.md``::

    <model>-<version>/
      release.json  release.json.sig
      model/{model.safetensors, config.json, model.sig}
      provenance.intoto.json(.sig)  bom.cdx.json(.sig)  lineage.json(.sig)  lineage.svg(.sig)

:func:`write_bundle` builds it beside its final place and renames it in, so a reader sees a
whole release or none. :func:`verify_bundle` re-checks everything (index signature, every file's
size and SHA-256, no unlisted file, the model-signing signature over ``model/``, the signatures of
provenance, BOM and lineage, cross-references, revocations) and raises on the first failure;
:func:`audit_bundle` runs the same checks but collects every finding, for ``cairn audit``.
"""

import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import (
    ArtifactReadError,
    PolicyError,
    UsageError,
    VerificationError,
)
from integrity.release.findings import BundleAudit, BundleReport, _check_file, _Checks, _walk
from integrity.release.index import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MODEL_DIR,
    MODEL_FILES,
    MODEL_SIGNATURE,
    RELEASE_SCHEMA,
    SIGNED_FILES,
    ReleaseBundleError,
    ReleaseFileError,
    ReleaseIndex,
    ReleaseIndexError,
)
from integrity.release.revocation import RevocationList
from integrity.trust.hashing import sha256_file
from integrity.trust.policy import AnyOf, SignerEvidence, TrustPolicy
from integrity.trust.signing import BUNDLE_MEDIA_TYPE, Signer, atomic_write, sign_artifact
from integrity.trust.verifying import VerificationResult, verify_artifact, verify_source

#: Files signed one by one with the release identity (each has ``NAME.sig`` beside it).
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


# -- errors -----------------------------------------------------------------------------------------


class ReleaseGateError(VerificationError):
    """The model did not pass the release gate, so it is not released."""

    kind = "release-gate"
    advice = "See the gate results; fix the training inputs or the model, then run the release again."


class ReleaseExistsError(UsageError):
    """A release with this model name and version already exists; releases are never overwritten."""

    kind = "release-exists"
    advice = "Bump the version in the release spec (or use `{sequence}` in it) and release again."


# -- the index ----------------------------------------------------------------------------------------


def release_dir_name(model: str, version: str) -> str:
    return f"{model}-{version}"


def _check_name(model: str, version: str) -> None:
    if not _NAME.match(model):
        raise UsageError(f"model name {model!r} must be lowercase letters, digits, '.', '_' or '-'")
    if not _VERSION.match(version):
        raise UsageError(f"version {version!r} must be letters, digits, '.', '+', '_' or '-'")


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def next_sequence(releases_dir: str | Path, model: str) -> int:
    """One more than the highest ``sequence`` of this model's releases in ``releases_dir`` (1 for the first)."""
    highest = 0
    folder = Path(releases_dir)
    if folder.is_dir():
        for index in folder.glob(f"*/{INDEX_NAME}"):
            try:
                data = safeio.loads(index.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("model") == model and isinstance(data.get("sequence"), int):
                highest = max(highest, int(data["sequence"]))
    return highest + 1


# -- writing -------------------------------------------------------------------------------------------


def _copy_model(model_dir: Path, dest: Path) -> None:
    if not model_dir.is_dir():
        raise ArtifactReadError("the model to release must be a directory (model.safetensors + config.json)",
                                artifact=model_dir)
    dest.mkdir()
    for entry in sorted(model_dir.rglob("*")):
        relative = entry.relative_to(model_dir).as_posix()
        info = entry.lstat()
        if stat.S_ISDIR(info.st_mode):
            (dest / relative).mkdir(exist_ok=True)
        elif stat.S_ISREG(info.st_mode):
            if relative == "model.sig":
                raise UsageError("the model directory already holds a model.sig; release the unsigned model",
                                 artifact=entry)
            shutil.copyfile(entry, dest / relative)
        else:
            raise UsageError("only regular files can be released (no links or special files)", artifact=entry)
    for name in MODEL_FILES:
        if not (dest.parent / name).is_file():
            raise ArtifactReadError(f"the model directory has no {Path(name).name}", artifact=model_dir)


def _provenance_subject(folder: Path) -> list[dict[str, Any]]:
    return [{"name": name, "digest": {"sha256": sha256_file(folder / name)}} for name in MODEL_FILES]


def write_bundle(
    releases_dir: str | Path,
    *,
    model: str,
    version: str,
    model_dir: str | Path,
    provenance: Mapping[str, Any],
    bom: Mapping[str, Any],
    lineage: Mapping[str, Any],
    lineage_svg: bytes,
    signer: Signer,
    inputs: Sequence[Mapping[str, Any]] = (),
    policy_digest: str = "",
    catalog_digest: str = "",
    gates: Mapping[str, Mapping[str, Any]] | None = None,
    sequence: int | None = None,
    created: datetime | None = None,
    build: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<releases_dir>/<model>-<version>/`` with every signature; returns its path.

    Everything is built in a hidden sibling folder and renamed into place, so a crash leaves
    no half release. An existing release is never replaced (:class:`ReleaseExistsError`), and
    a model whose gates did not all pass is never written (:class:`ReleaseGateError`).
    ``provenance["subject"]``, when empty, is filled with the released model files' digests;
    when given it must name exactly those digests.
    """
    _check_name(model, version)
    gates = dict(gates or {})
    failed = [name for name, gate in gates.items() if gate.get("passed") is not True]
    if failed:
        reasons = "; ".join(f"{name}: {gates[name].get('reason', 'did not pass')}" for name in failed)
        raise ReleaseGateError(f"not released, gate(s) failed: {reasons}", artifact=f"{model}@{version}")
    parent = Path(releases_dir)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / release_dir_name(model, version)
    if final.exists():
        raise ReleaseExistsError(f"release {model} {version} already exists", artifact=final)
    staging = parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        _copy_model(Path(model_dir), staging / MODEL_DIR)
        model_digest = sign_artifact(staging / MODEL_DIR, signer).manifest.root_digest
        statement = dict(provenance)
        subject = _provenance_subject(staging)
        if not statement.get("subject"):
            statement["subject"] = subject
        elif _subject_digests(statement["subject"]) != _subject_digests(subject):
            raise UsageError("the provenance subject does not name the released model files", artifact="provenance")
        contents = {
            "provenance.intoto.json": _json_bytes(statement),
            "bom.cdx.json": _json_bytes(bom),
            "lineage.json": _json_bytes(lineage),
            "lineage.svg": bytes(lineage_svg),
        }
        for name, data in contents.items():
            atomic_write(staging / name, data)
            sign_artifact(staging / name, signer)
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            relative = path.relative_to(staging).as_posix()
            files[relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        index = {
            "schema": RELEASE_SCHEMA,
            "model": model,
            "version": version,
            "created": (created or datetime.now(UTC)).isoformat(),
            "sequence": sequence if sequence is not None else next_sequence(parent, model),
            "files": files,
            "model_digest": f"sha256:{model_digest}",
            "inputs": [dict(item) for item in inputs],
            "policy_digest": policy_digest,
            "catalog_digest": catalog_digest,
            "gates": {name: dict(gate) for name, gate in gates.items()},
            "signer": signer.describe(),
        }
        if build:
            index["build"] = dict(build)
        atomic_write(staging / INDEX_NAME, _json_bytes(index))
        sign_artifact(staging / INDEX_NAME, signer)
        if final.exists():
            raise ReleaseExistsError(f"release {model} {version} already exists", artifact=final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _subject_digests(subject: Any) -> dict[str, str]:
    if not isinstance(subject, list):
        return {}
    found = {}
    for item in subject:
        if isinstance(item, dict) and isinstance(item.get("digest"), dict):
            found[str(item.get("name"))] = str(item["digest"].get("sha256", ""))
    return found


# -- verification --------------------------------------------------------------------------------------


def _strict_signature_shape(path: Path) -> str:
    """A key- or certificate-signed bundle must be exactly as Cairn's signers write it.

    Unsigned parts of a bundle (the key hint, field names the parser does not read, whitespace)
    are not covered by the signature; requiring the canonical form makes any changed byte of
    the index signature a failure, so an audit never passes a file that is not what was written.
    """
    raw = path.read_bytes() if path.is_file() else b""
    try:
        data = safeio.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReleaseFileError(f"not a signature bundle (invalid JSON: {exc})", artifact=path) from exc
    if not isinstance(data, dict):
        raise ReleaseFileError("not a signature bundle", artifact=path)
    material = data.get("verificationMaterial")
    if isinstance(material, dict) and material.get("tlogEntries"):
        return "Sigstore bundle (shape checked by sigstore)"
    expected_keys = {"mediaType", "verificationMaterial", "dsseEnvelope"}
    envelope = data.get("dsseEnvelope")
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    shape_ok = (
        set(data) == expected_keys
        and data.get("mediaType") == BUNDLE_MEDIA_TYPE
        and isinstance(material, dict)
        and set(material) in ({"publicKey", "tlogEntries"}, {"x509CertificateChain", "tlogEntries"})
        and material.get("tlogEntries") == []
        and isinstance(envelope, dict)
        and set(envelope) == {"payload", "payloadType", "signatures"}
        and isinstance(signatures, list)
        and len(signatures) == 1
        and isinstance(signatures[0], dict)
        and set(signatures[0]) == {"sig", "keyid"}
        and signatures[0].get("keyid") == ""
        and (not isinstance(material.get("publicKey"), dict) or set(material["publicKey"]) == {"hint"})
    )
    if not shape_ok or json.dumps(data, indent=2).encode() != raw:
        raise ReleaseFileError("the signature bundle is not in the form Cairn's signers write (edited?)",
                               artifact=path)
    return "canonical key/certificate bundle"


def _cross_references(root: Path, index: Mapping[str, Any]) -> str:
    """The provenance names the released files and every input the index lists."""
    path = root / "provenance.intoto.json"
    try:
        statement = safeio.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReleaseFileError(f"unreadable provenance: {exc}", artifact=path) from exc
    subject = _subject_digests(statement.get("subject") if isinstance(statement, dict) else None)
    for name in MODEL_FILES:
        if subject.get(name) != index["files"][name]["sha256"]:
            raise ReleaseFileError(f"the provenance subject does not name {name} with its released digest",
                                   artifact=path)
    predicate = statement.get("predicate") or {}
    dependencies = ((predicate.get("buildDefinition") or {}).get("resolvedDependencies") or []
                    if isinstance(predicate, dict) else [])
    resolved = {str((d.get("digest") or {}).get("sha256", "")) for d in dependencies if isinstance(d, dict)}
    for item in index.get("inputs") or []:
        for key in ("digest", "used_digest"):
            digest = str((item or {}).get(key) or "").removeprefix("sha256:")
            if digest and digest not in resolved:
                raise ReleaseFileError(f"input {item.get('name')!r} (sha256:{digest}) is not among the provenance's "
                                       "resolved dependencies", artifact=path)
    return f"subject names the model files; {len(resolved)} resolved dependencies cover every input"


def _inspect(
    path: str | Path,
    release_policy: TrustPolicy,
    model_name: str | None,
    *,
    revocations: RevocationList | None,
    trusted_root: str | Path | None,
    min_sequence: int | None,
    strict: bool,
) -> BundleAudit:
    root = Path(path)
    checks = _Checks(root, strict=strict)
    if not root.is_dir():
        checks.fail(ArtifactReadError("no release directory here", artifact=root), str(root), "layout")
        return BundleAudit(root, tuple(checks.findings), None, None)
    index_path, signature_path = root / INDEX_NAME, root / INDEX_SIGNATURE_NAME
    name = model_name
    if name is None:  # audit without a model name: take it from the index, then verify the index for it
        try:
            peek = safeio.loads(index_path.read_text(encoding="utf-8"))
            name = str(peek.get("model")) if isinstance(peek, dict) else None
        except (OSError, ValueError):
            name = None
    try:
        rules = release_policy.source(name or "<unknown model>").signers
    except PolicyError as error:
        checks.fail(error, INDEX_NAME, "release policy")
        return BundleAudit(root, tuple(checks.findings), None, None)

    evidences: list[SignerEvidence] = []
    index_result: list[VerificationResult] = []

    def verify_index() -> str:
        result = verify_source(index_path, release_policy, name or "", bundle=signature_path,
                               trusted_root=trusted_root)
        index_result.append(result)
        evidences.append(result.evidence)
        return f"signed by {result.evidence.describe()} ({result.reason})"

    checks.run(INDEX_SIGNATURE_NAME, "canonical signature bundle", lambda: _strict_signature_shape(signature_path))
    signed = checks.run(INDEX_NAME, "index signature", verify_index)
    index: dict[str, Any] | None = None
    parsed: list[ReleaseIndex] = []

    def parse() -> str:
        nonlocal index
        parsed.append(ReleaseIndex.read(root, model=name, complete=True))
        index = dict(parsed[0].data)
        return f"{index['model']} {index['version']}, sequence {index['sequence']}, {len(index['files'])} files"

    if not checks.run(INDEX_NAME, "index contents", parse) or index is None:
        return BundleAudit(root, tuple(checks.findings), None, None)
    if not signed:
        return BundleAudit(root, tuple(checks.findings), index, None)
    listed: dict[str, Any] = index["files"]
    if min_sequence is not None:
        def sequence() -> str:
            if index is not None and index["sequence"] < min_sequence:
                raise ReleaseIndexError(f"sequence {index['sequence']} is older than the last seen {min_sequence} "
                                        "(a replayed older release?)", artifact=index_path)
            return f"sequence {index['sequence'] if index else '?'} >= {min_sequence}"

        checks.run(INDEX_NAME, "sequence", sequence)

    # Every file present must be listed, and every listed file must match.
    try:
        present = dict(_walk(root))
    except OSError as exc:
        checks.fail(ArtifactReadError(f"cannot list the release: {exc}", artifact=root), str(root), "layout")
        return BundleAudit(root, tuple(checks.findings), index, None)
    for file in sorted(set(present) - set(listed) - {INDEX_NAME, INDEX_SIGNATURE_NAME}):
        checks.fail(ReleaseFileError("present in the release but not listed in the signed release.json",
                                     artifact=root / file), file, "listed")
    # The model's files are hashed once, by the model-signing verification; their digests are then
    # compared with the index. Only when that verification fails are they hashed one by one, to name
    # the file that differs.
    in_model = {f for f in listed if f.startswith(f"{MODEL_DIR}/") and f != MODEL_SIGNATURE}
    for file in sorted(set(listed) - in_model):
        def check_listed(file: str = file) -> str:
            return _check_file(root, file, listed[file])

        checks.run(file, "sha256 and size", check_listed)
    model_digests: dict[str, str] = {}

    def verify_model() -> str:
        try:
            result = verify_artifact(root / MODEL_DIR, rules, bundle=root / MODEL_SIGNATURE,
                                     trusted_root=trusted_root, source=name)
        except VerificationError:
            for file in sorted(in_model):  # name the file that differs from the index, if one does
                _check_file(root, file, listed[file])
            raise
        evidences.append(result.evidence)
        if result.manifest is not None and result.manifest.config.method == "files":  # whole-file digests
            model_digests.update({f"{MODEL_DIR}/{n}": d for n, d in result.manifest.files.items()})
        if index is None or f"sha256:{result.digest}" != index["model_digest"]:
            raise ReleaseIndexError(f"model/ manifest root sha256:{result.digest} is not the index's model_digest",
                                    artifact=root / MODEL_DIR)
        return f"model-signing signature by {result.evidence.describe()}; manifest root sha256:{result.digest}"

    checks.run(MODEL_SIGNATURE, "model-signing signature over model/", verify_model)
    for file in sorted(in_model):
        def check_model_file(file: str = file) -> str:
            return _check_file(root, file, listed[file], digest=model_digests.get(file))

        checks.run(file, "sha256 and size", check_model_file)
    for file in SIGNED_FILES:
        def verify_one(file: str = file) -> str:
            result = verify_artifact(root / file, rules, bundle=root / f"{file}.sig", trusted_root=trusted_root,
                                     source=name)
            evidences.append(result.evidence)
            return f"signed by {result.evidence.describe()}"

        checks.run(f"{file}.sig", f"signature over {file}", verify_one)
    checks.run("provenance.intoto.json", "provenance names model and inputs",
               lambda: _cross_references(root, index or {}))

    revocations_checked = 0
    if revocations is not None:
        subjects = parsed[0].subjects(evidences)
        revocations_checked = len(subjects)
        for kind, subject in subjects:
            def not_revoked(kind: str = kind, subject: str = subject) -> str:
                revocations.check(kind, subject, artifact=str(root))
                return f"{kind} {subject}"

            checks.run(INDEX_NAME, "not revoked", not_revoked)
    report = None
    if all(f.passed for f in checks.findings) and index_result:
        evidence = index_result[0].evidence
        report = BundleReport(root, index["model"], index["version"], index["sequence"], index["created"],
                              index["model_digest"], evidence.as_dict(), index, tuple(checks.findings),
                              revocations_checked)
    return BundleAudit(root, tuple(checks.findings), index, report)


def verify_bundle(
    path: str | Path,
    release_policy: TrustPolicy,
    model_name: str,
    *,
    revocations: RevocationList | None = None,
    trusted_root: str | Path | None = None,
    min_sequence: int | None = None,
) -> BundleReport:
    """Re-verify a release bundle completely; raises a :class:`CairnError` naming the file on the first failure.

    ``release_policy`` says who may sign releases of ``model_name`` (its source entry of that
    name). ``revocations`` (see :mod:`integrity.release.revocation`) is consulted for the release, its
    model digest, signer, policy and every input; ``min_sequence`` refuses a replayed older index.
    """
    audit = _inspect(path, release_policy, model_name, revocations=revocations, trusted_root=trusted_root,
                     min_sequence=min_sequence, strict=True)
    if audit.report is None:  # pragma: no cover - strict mode raises before this
        raise ReleaseBundleError("the release did not verify", artifact=path)
    return audit.report


def audit_bundle(
    path: str | Path,
    release_policy: TrustPolicy,
    model_name: str | None = None,
    *,
    revocations: RevocationList | None = None,
    trusted_root: str | Path | None = None,
) -> BundleAudit:
    """Run every check of :func:`verify_bundle` and collect the findings instead of stopping at the first."""
    return _inspect(path, release_policy, model_name, revocations=revocations, trusted_root=trusted_root,
                    min_sequence=None, strict=False)


def release_signers(release_policy: TrustPolicy, model_name: str) -> AnyOf:
    """The signer rules for a model's releases (also the revocation authority for it)."""
    return release_policy.source(model_name).signers
