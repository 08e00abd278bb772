"""The input evidence chain: a release spec's inputs resolved to attested, scanned, unrevoked bytes (records only)."""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity import safeio
from integrity.errors import ArtifactReadError, CairnError, DigestMismatchError, VerificationError
from integrity.intake.scans import mandatory_scan, scan_stages
from integrity.ledger.transparency import LoggedRecords, UnloggedRecordError
from integrity.release.revocation import RevocationList
from integrity.release.spec import InputRef, ReleaseSpec
from integrity.trust.hashing import manifest_root

if TYPE_CHECKING:
    from integrity.intake.ingest import Ingestion
    from integrity.ledger.transparency import LoggedRecords
    from integrity.storage import ArtifactStore


class UnattestedInputError(VerificationError):
    """A training input lacks a passing record for one of its gates, or its records disagree."""

    kind = "unattested-input"
    advice = ("Train only on inputs that went through every gate: run ingestion (fetch, verify, validate, "
              "attest) for the source, then start the training again.")


class InputChangedError(DigestMismatchError):
    """The bytes read for training are not the bytes that were attested."""

    kind = "input-changed"
    advice = ("The attested copy changed after attestation (or between the check and the read). Do not "
              "train on it; re-run ingestion from the publisher's drop and investigate the change.")


@dataclass(frozen=True)
class AttestedInput:
    """An input whose gates all passed: where its attested bytes are and the records that say so."""

    ref: InputRef
    source: str
    policy_source: str
    kind: str
    path: Path
    #: What the bytes read must hash to (manifest root of a directory, SHA-256 of a file).
    digest: str
    #: What the publisher signed (differs from ``digest`` when the model gate converted a checkpoint).
    verified_digest: str
    expected_files: Mapping[str, str]
    records: Mapping[str, Any]
    policy: Mapping[str, Any]
    signer: Mapping[str, Any]
    license: str | None
    origin: str | None
    catalog: Mapping[str, Any]
    asset_key: tuple[str, ...]
    conversions: tuple[Mapping[str, Any], ...] = ()
    #: Why no scan stands between this input and training, when none does (recorded in release.json).
    scan_decision: Mapping[str, Any] | None = None
    #: How a recipe reads it: the catalog format and the suite validated against (path and digest).
    reading: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref.ref

    def entry(self) -> dict[str, Any]:
        """This input as ``release.json`` lists it (see docs/release-bundle.md)."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "role": self.ref.role,
            "source": self.policy_source,
            "digest": f"sha256:{self.verified_digest}",
            "verification_record": self.records.get("verification"),
            "validation_record": self.records.get("validation"),
            "ingestion_record": self.records.get("ingestion"),
            "policy_digest": self.policy.get("digest"),
            "signer": signer_summary(self.signer, self.policy),
        }
        if self.digest != self.verified_digest:
            data["used_digest"] = f"sha256:{self.digest}"
            if self.conversions:
                data["conversion_records"] = [c.get("record") for c in self.conversions]
        if self.records.get("scans"):
            data["scan_records"] = list(self.records["scans"])
        if self.scan_decision:
            data["scan_decision"] = dict(self.scan_decision)
        return data


def signer_summary(signer: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    """Who signed an input, by the policy identity it matched: identity + issuer, key, or CA + identity."""
    method = signer.get("method")
    if method == "sigstore":
        who = f"Sigstore {signer.get('identity')} (issuer {signer.get('issuer')})"
    elif method == "key":
        who = f"key {signer.get('key_fingerprint')}"
    elif method == "certificate":
        who = f"certificate {signer.get('identity')} (CA-pinned)"
    else:
        who = str(method or "unknown signer")
    rule = signer.get("rule")
    where = f"policy v{policy.get('version')} {policy.get('digest', '')}".strip()
    return f"{who}; matched {rule} of {where}" if rule else f"{who}; {where}"


def referenced_record(store: "ArtifactStore", key: Any, what: str, source: str,
                      logged: "LoggedRecords | None" = None) -> dict[str, Any]:
    """The stored record a summary refers to (``records/KIND/NAME.json``), exactly as the signed ledger logged it.

    Missing, unreadable, unlogged or edited after logging: the input is unattested. ``logged`` is the
    verified ledger's view (built from the store's ledger when not given).
    """
    from integrity.safeio import parse_json_object

    if not isinstance(key, str) or not key.startswith("records/"):
        raise UnattestedInputError(f"missing {what} record (none is referenced)", artifact=source)
    try:
        logged = logged or LoggedRecords.for_store(store)
        raw = logged.read(key.strip("/"))
        return parse_json_object(raw, artifact=store.describe(key), what=f"{what} record")
    except UnloggedRecordError as exc:
        raise UnattestedInputError(f"untrusted {what} record {key}: {exc.reason}", artifact=source) from exc
    except CairnError as exc:
        raise UnattestedInputError(f"missing {what} record {key}: {exc.reason}", artifact=source) from exc


def _subject_digest(record: Mapping[str, Any]) -> str | None:
    subjects = record.get("subject")
    if isinstance(subjects, list) and subjects and isinstance(subjects[0], dict):
        value = (subjects[0].get("digest") or {}).get("sha256")
        return str(value) if value else None
    return None


def resolve_input(ingestion: "Ingestion", ref: InputRef, revocations: RevocationList | None = None,
                  logged: "LoggedRecords | None" = None) -> AttestedInput:
    """The attested artifact behind a spec input, with its records cross-checked (fails closed).

    This is the one place that maps input names to artifacts: ``SOURCE`` is the source's attested
    copy; ``SOURCE/screened`` is a dataset's copy filtered by the poisoning screen and
    ``SOURCE/backdoor_scanned`` a model whose backdoor scan passed; both are checked against the
    screening (or model-scan) record as well as the attestation records underneath.
    """
    from integrity.intake.ingest import INGESTION_PREDICATE_TYPE, VALIDATION_PREDICATE_TYPE
    from integrity.trust.records import VERIFICATION_PREDICATE_TYPE

    try:
        source = ingestion.catalog.source(ref.source)
    except CairnError as exc:
        raise UnattestedInputError(f"{ref.ref!r} is not a catalog source: {exc.reason}", artifact=ref.ref) from exc
    if ref.stage not in ("attested", *SCAN_STAGES):
        raise UnattestedInputError(
            f"no {ref.stage!r} stage exists for {source.name!r} (inputs are SOURCE, SOURCE/screened for a dataset "
            "or SOURCE/backdoor_scanned for a model)", artifact=ref.ref)
    if ref.stage in SCAN_STAGES and SCAN_STAGES[ref.stage] != source.kind:
        raise UnattestedInputError(f"{ref.stage!r} is a stage of a {SCAN_STAGES[ref.stage]}, and {source.name!r} "
                                   f"is a {source.kind}", artifact=ref.ref)
    name = source.name
    mandatory = mandatory_scan(source)
    if ref.stage == "attested" and mandatory is not None:
        raise UnattestedInputError(
            f"{name!r} is a {source.kind} that must pass its {mandatory.description.split(':')[0]} before anything "
            f"trains on it; the attested copy has not been screened: name it {name}/{mandatory.stage} in the "
            "release spec", artifact=ref.ref)
    if ref.stage in SCAN_STAGES and (mandatory is None or mandatory.stage != ref.stage):
        raise UnattestedInputError(f"no {ref.stage!r} scan applies to {name!r} (kind {source.kind}, scan_profile "
                                   f"{source.scan_profile!r}, format {source.format}); name it {name}",
                                   artifact=ref.ref)
    decision = _unscanned_decision(ingestion, source, ref) if mandatory is None else None
    if logged is None:
        try:
            logged = LoggedRecords.for_store(ingestion.store, ingestion.home)
        except CairnError as exc:
            raise UnattestedInputError(f"its records cannot be checked: {exc.reason}", artifact=name) from exc
    summary = ingestion.attested_record(source)
    if summary is None:
        raise UnattestedInputError("never attested: no passing attest step for this source", artifact=name)
    digest = str(summary.get("digest") or "")
    store = ingestion.store
    verification = referenced_record(store, summary.get("verification"), "verification", name, logged)
    if verification.get("predicateType") != VERIFICATION_PREDICATE_TYPE:
        raise UnattestedInputError("the verification record is not a verification statement", artifact=name)
    vpred = verification.get("predicate") or {}
    if vpred.get("result") != "passed":
        raise UnattestedInputError(f"the verification record says {vpred.get('result')!r}: {vpred.get('reason')}",
                                   artifact=name)
    if _subject_digest(verification) != digest:
        raise UnattestedInputError(f"the verification record names sha256:{_subject_digest(verification)}, "
                                   f"not the attested sha256:{digest}", artifact=name)
    if vpred.get("source") != source.policy_source:
        raise UnattestedInputError(f"the verification record is for source {vpred.get('source')!r}", artifact=name)
    validation = referenced_record(store, summary.get("validation"), "validation", name, logged)
    result = (validation.get("predicate") or {}).get("result") or {}
    if validation.get("predicateType") != VALIDATION_PREDICATE_TYPE or result.get("passed") is not True:
        raise UnattestedInputError(f"the validation record does not pass: {result.get('reason', 'no result')}",
                                   artifact=name)
    if _subject_digest(validation) != digest:
        raise UnattestedInputError("the validation record names other bytes than the attested ones", artifact=name)
    ingest = referenced_record(store, summary.get("record"), "ingestion", name, logged)
    ipred = ingest.get("predicate") or {}
    if (ingest.get("predicateType") != INGESTION_PREDICATE_TYPE or _subject_digest(ingest) != digest
            or ipred.get("verification") != summary.get("verification")
            or ipred.get("validation") != summary.get("validation")):
        raise UnattestedInputError("the ingestion record does not match the attestation summary", artifact=name)
    usable = str(ipred.get("usableDigest") or digest)
    expected = {str(r.get("name")): str(r.get("sha256")) for r in vpred.get("resources") or [] if isinstance(r, dict)}
    conversions = tuple(c for c in ipred.get("conversions") or [] if isinstance(c, dict))
    for conversion in conversions:
        record = referenced_record(store, conversion.get("record"), "conversion", name, logged)
        if _subject_digest(record) != conversion.get("to_sha256"):
            raise UnattestedInputError(f"conversion record {conversion.get('record')} names other bytes", artifact=name)
        expected.pop(str(conversion.get("from")), None)
        expected[str(conversion.get("to_path") or conversion.get("to"))] = str(conversion.get("to_sha256"))
    folder = ingestion.attested_dir(source)
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    if len(entries) != 1:
        raise UnattestedInputError(f"no attested copy under {folder}", artifact=name)
    attested = AttestedInput(
        ref=ref, source=name, policy_source=source.policy_source, kind=source.kind, path=entries[0],
        digest=usable, verified_digest=digest, expected_files=expected,
        records={"verification": summary.get("verification"), "validation": summary.get("validation"),
                 "ingestion": summary.get("record"), "conversions": [c.get("record") for c in conversions]},
        policy=dict(vpred.get("policy") or {}),
        signer={**dict(vpred.get("signer") or {}), **({"rule": vpred["rule"]} if vpred.get("rule") else {})},
        license=source.license, origin=source.origin, catalog=dict(ipred.get("catalog") or {}),
        asset_key=(source.key, "attested"), conversions=conversions, scan_decision=decision,
        reading={"format": source.format, "suite": str(source.suite) if source.suite else None,
                 "suite_digest": result.get("suite_digest")},
    )
    if ref.stage == "screened":
        attested = _screened(ingestion, attested, logged)
    elif ref.stage == "backdoor_scanned":
        attested = _backdoor_scanned(ingestion, attested, logged)
    if revocations is not None:
        check_not_revoked(attested, revocations)
    return attested


def _unscanned_decision(ingestion: "Ingestion", source: Any, ref: InputRef) -> dict[str, Any]:
    """No registered scan applies: a model needs the trust policy's explicit allowance; both are recorded."""
    profile = source.scan_profile
    if source.kind != "model":
        return {"scan": None, "reason": f"no poisoning screen is registered for datasets of scan_profile "
                                        f"{profile!r} (format {source.format}); trained on unscreened"}
    try:
        entry = ingestion.policy.source(source.policy_source)
    except CairnError as exc:
        raise UnattestedInputError(f"the trust policy cannot be read for {source.name!r}: {exc.reason}",
                                   artifact=ref.ref) from exc
    if not entry.allow_unscanned:
        raise UnattestedInputError(
            f"no backdoor scan applies to model {source.name!r} (scan_profile {profile!r}), and the trust policy "
            f"does not allow training on it unscanned: a reviewed policy change may set allow_unscanned: true "
            f"under sources.{source.policy_source}, or give the model a scanned scan_profile", artifact=ref.ref)
    return {"scan": None, "reason": f"no backdoor scan applies to scan_profile {profile!r}; the trust policy "
                                    f"(sha256:{ingestion.policy.digest.removeprefix('sha256:')}) allows it",
            "allowed_by": f"sources.{source.policy_source}.allow_unscanned"}


#: Stages after attestation that a training input may name, and the kind of source each applies to.
#: Stage -> source kind, from the scan registry (integrity.intake.scans).
SCAN_STAGES = scan_stages()


def _scan_summary(ingestion: "Ingestion", attested: AttestedInput, scan: str) -> dict[str, Any]:
    """The scan's summary for this source; ``scan`` names it for the messages ("poisoning screen")."""
    key = attested.asset_key[0]
    path = ingestion.home / "screened" / f"{key}.json"
    try:
        summary = safeio.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnattestedInputError(f"the {scan} never ran: no readable summary at {path}",
                                   artifact=attested.name) from exc
    if not isinstance(summary, dict) or summary.get("passed") is not True:
        reason = summary.get("reason") if isinstance(summary, dict) else "malformed summary"
        raise UnattestedInputError(f"the {scan} did not pass: {reason}", artifact=attested.name)
    return summary


def _screened(ingestion: "Ingestion", attested: AttestedInput, logged: "LoggedRecords") -> AttestedInput:
    """The poisoning screen's filtered copy of an attested dataset, cross-checked with its record and the store."""
    from integrity.intake.screening import SCREENING_PREDICATE_TYPE

    name = attested.name
    summary = _scan_summary(ingestion, attested, "poisoning screen")
    if summary.get("input_digest") != attested.digest:
        raise UnattestedInputError(f"the screening was of sha256:{summary.get('input_digest')}, not the attested "
                                   f"sha256:{attested.digest} (screen the current version)", artifact=name)
    record = referenced_record(ingestion.store, summary.get("record"), "screening", name, logged)
    predicate = record.get("predicate") or {}
    output = predicate.get("output") or {}
    if (record.get("predicateType") != SCREENING_PREDICATE_TYPE or _subject_digest(record) != attested.digest
            or predicate.get("passed") is not True or output.get("digest") != summary.get("output_digest")
            or output.get("storeDigest") != summary.get("output_store_digest")):
        raise UnattestedInputError("the screening record does not match the screening summary", artifact=name)
    try:
        files = ingestion.store.tree_files(str(output["storeDigest"]))
    except (CairnError, KeyError) as exc:
        raise UnattestedInputError(f"the screened copy is not in the trusted store: {exc}", artifact=name) from exc
    if _root_digest(files) != output["digest"]:
        raise UnattestedInputError("the trusted store's screened copy is not the one the record names", artifact=name)
    # Found under this home like the attested copy (a home may be moved or copied; recorded paths are not used).
    folder = ingestion.home / "screened" / attested.asset_key[0] / attested.path.name
    if not folder.is_dir():
        raise UnattestedInputError(f"the screened copy is missing at {folder}", artifact=name)
    records = {**attested.records, "screening": summary["record"], "scans": [summary["record"]],
               "attested_digest": attested.digest}
    return replace(attested, ref=attested.ref, path=folder, digest=str(output["digest"]), expected_files=files,
                   records=records, asset_key=(attested.asset_key[0], "screened"))


def _backdoor_scanned(ingestion: "Ingestion", attested: AttestedInput, logged: "LoggedRecords") -> AttestedInput:
    """An attested model whose backdoor scan (of exactly these weights) passed."""
    from integrity.intake.screening import MODEL_SCAN_PREDICATE_TYPE

    name = attested.name
    summary = _scan_summary(ingestion, attested, "backdoor scan")
    record = referenced_record(ingestion.store, summary.get("record"), "model scan", name, logged)
    predicate = record.get("predicate") or {}
    if (record.get("predicateType") != MODEL_SCAN_PREDICATE_TYPE or _subject_digest(record) != attested.digest
            or summary.get("digest") != attested.digest):
        raise UnattestedInputError(f"the backdoor scan was not of the weights used (sha256:{attested.digest})",
                                   artifact=name)
    if predicate.get("passed") is not True:
        raise UnattestedInputError(f"the backdoor scan record says: {predicate.get('reason')}", artifact=name)
    records = {**attested.records, "scans": [summary["record"]]}
    return replace(attested, records=records, asset_key=(attested.asset_key[0], "backdoor_scanned"))


def check_not_revoked(attested: AttestedInput, revocations: RevocationList) -> None:
    """Refuse an input whose source, signer, bytes or attesting policy version has been revoked."""
    where = attested.name
    revocations.check("source", attested.policy_source, artifact=where)
    revocations.check("artifact", f"sha256:{attested.verified_digest}", artifact=where)
    revocations.check("artifact", f"sha256:{attested.digest}", artifact=where)
    policy_digest = attested.policy.get("digest")
    if isinstance(policy_digest, str):
        revocations.check("policy", policy_digest, artifact=where)
    for key in ("key_fingerprint", "identity"):
        value = attested.signer.get(key)
        if isinstance(value, str):
            revocations.check("signer", value, artifact=where)


def resolve_inputs(ingestion: "Ingestion", spec: ReleaseSpec,
                   revocations: RevocationList | None = None) -> list[AttestedInput]:
    try:
        logged = LoggedRecords.for_store(ingestion.store, ingestion.home)
    except CairnError as exc:
        raise UnattestedInputError(f"training inputs cannot be checked: {exc.reason}",
                                   artifact=ingestion.store.url) from exc
    return [resolve_input(ingestion, ref, revocations, logged) for ref in spec.inputs]


@dataclass(frozen=True)
class ReadInput:
    """The bytes of an attested input as read for use, with the digests computed from those bytes."""

    input: AttestedInput
    files: Mapping[str, bytes]
    digests: Mapping[str, str]
    digest: str


def _root_digest(digests: Mapping[str, str]) -> str:
    """model-signing's manifest root over per-file digests (the order is by path components)."""
    return manifest_root(digests)


def read_attested(attested: AttestedInput) -> ReadInput:
    """Read every file of the attested copy once; the bytes returned are the bytes that were hashed."""
    root = attested.path
    files: dict[str, bytes] = {}
    try:
        if root.is_symlink() or not (root.is_dir() or root.is_file()):
            raise InputChangedError("the attested copy is missing or not a regular file or directory", artifact=root)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
        for path in paths:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise InputChangedError("a link or special file appeared in the attested copy", artifact=path)
            if path.is_file():
                name = path.name if path == root else path.relative_to(root).as_posix()
                with open(path, "rb") as handle:
                    files[name] = handle.read()
    except OSError as exc:
        raise ArtifactReadError(f"cannot read the attested copy: {exc.strerror or exc}", artifact=root) from exc
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    digest = next(iter(digests.values())) if root.is_file() and len(digests) == 1 else _root_digest(digests)
    if digest != attested.digest:
        changed = sorted(n for n in set(digests) | set(attested.expected_files)
                         if digests.get(n) != attested.expected_files.get(n))
        detail = f" (differs: {', '.join(changed)})" if changed else ""
        raise InputChangedError(
            f"bytes read hash to sha256:{digest}, not the attested sha256:{attested.digest}{detail}",
            artifact=root / changed[0] if changed and root.is_dir() else root)
    return ReadInput(attested, files, digests, digest)
