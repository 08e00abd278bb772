"""Attested fine-tuning: train only on inputs whose records say they passed every gate, on exactly those bytes.

Three layers, each doing one thing:

1. :func:`resolve_input` turns a spec input (``digits``, ``efficientnet-lite0``, later
   ``digits/screened``) into an :class:`AttestedInput`: the attested copy plus the verification,
   validation, ingestion (and conversion) records that vouch for it, cross-checked against each
   other, and against the revocation list (source, signer, artifact digests and the policy
   version it was attested under). It is the one place that maps input names to artifacts.
2. :func:`read_attested` reads every file of an attested copy into memory, hashes the bytes it
   read and compares them with the attested digest; training parses only those in-memory
   bytes, so a file swapped between the check and the use is caught rather than trained on.
3. :func:`fine_tune` trains (CUDA when present, CPU otherwise) and records seeds,
   hyperparameters, the code version, library versions, the device and every input digest in a
   training record written next to the model and into the store.
"""

import hashlib
import io
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity import __version__, safeio
from integrity.errors import ArtifactReadError, CairnError, DigestMismatchError, UsageError, VerificationError
from integrity.ledger.transparency import LoggedRecords, UnloggedRecordError
from integrity.release.revocation import RevocationList
from integrity.release.spec import InputRef, ReleaseSpec, TrainingParams
from integrity.trust.hashing import IN_TOTO_STATEMENT_TYPE, manifest_root, sha256_file
from integrity.trust.signing import atomic_write

if TYPE_CHECKING:
    import numpy as np
    import torch

    from integrity.intake.ingest import Ingestion
    from integrity.storage import ArtifactStore

TRAINING_PREDICATE_TYPE = "https://cairn.dev/attestations/training/v1"
MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ST_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


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


# -- inputs ---------------------------------------------------------------------------------------------


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
        }
        if self.digest != self.verified_digest:
            data["used_digest"] = f"sha256:{self.digest}"
            if self.conversions:
                data["conversion_records"] = [c.get("record") for c in self.conversions]
        if self.records.get("scans"):
            data["scan_records"] = list(self.records["scans"])
        return data


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
        return parse_json_object(raw, artifact=store.backend.describe(key), what=f"{what} record")
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
        policy=dict(vpred.get("policy") or {}), signer=dict(vpred.get("signer") or {}),
        license=source.license, origin=source.origin, catalog=dict(ipred.get("catalog") or {}),
        asset_key=(source.key, "attested"), conversions=conversions,
    )
    if ref.stage == "screened":
        attested = _screened(ingestion, attested, logged)
    elif ref.stage == "backdoor_scanned":
        attested = _backdoor_scanned(ingestion, attested, logged)
    if revocations is not None:
        check_not_revoked(attested, revocations)
    return attested


#: Stages after attestation that a training input may name, and the kind of source each applies to.
SCAN_STAGES = {"screened": "dataset", "backdoor_scanned": "model"}


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


# -- reading exactly the attested bytes ------------------------------------------------------------------


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


# -- safetensors from and to bytes -------------------------------------------------------------------------


def load_safetensors(data: bytes, *, where: str | Path = "<safetensors>") -> dict[str, "torch.Tensor"]:
    """Parse a safetensors blob (already hashed) strictly: bounds, dtypes and offsets are checked."""
    import torch

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise UsageError("safetensors loading needs a little-endian machine")
    if len(data) < 8:
        raise ArtifactReadError("not a safetensors file (too short)", artifact=where)
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 100_000_000:
        raise ArtifactReadError("safetensors header length is out of bounds", artifact=where)
    try:
        header = safeio.loads(data[8:8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactReadError(f"safetensors header is not JSON: {exc}", artifact=where) from exc
    if not isinstance(header, dict):
        raise ArtifactReadError("safetensors header is not an object", artifact=where)
    buffer = bytearray(data[8 + size:])
    tensors: dict[str, torch.Tensor] = {}
    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = dtypes[meta["dtype"]]
            shape = [int(s) for s in meta["shape"]]
            start, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactReadError(f"tensor {name!r} has a malformed header entry", artifact=where) from exc
        count = 1
        for dim in shape:
            count *= dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        if any(d < 0 for d in shape) or not 0 <= start <= end <= len(buffer) or end - start != count * itemsize:
            raise ArtifactReadError(f"tensor {name!r} has inconsistent offsets or shape", artifact=where)
        spans.append((start, end))
        tensors[name] = (torch.frombuffer(buffer, dtype=dtype, count=count, offset=start).reshape(shape).clone()
                         if count else torch.empty(shape, dtype=dtype))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start < end:
            raise ArtifactReadError("tensors overlap in the safetensors data", artifact=where)
    return tensors


def safetensors_bytes(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize tensors as safetensors (little-endian, 8-byte aligned header)."""
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob + b"".join(chunks)


# -- data -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageData:
    images: "np.ndarray"  # (N, H, W) raw values
    labels: "np.ndarray"  # (N,) int64
    pixel_max: float
    class_names: tuple[str, ...]


def image_dataset(reads: Sequence[ReadInput]) -> ImageData:
    """Images and labels from ``images.npy`` + ``labels.npy`` datasets (parsed from the hashed bytes)."""
    import numpy as np

    images, labels = [], []
    for read in reads:
        try:
            batch = np.load(io.BytesIO(read.files["images.npy"]), allow_pickle=False)
            targets = np.load(io.BytesIO(read.files["labels.npy"]), allow_pickle=False)
        except KeyError as exc:
            raise UsageError(f"the fine-tuning recipe needs an image dataset (images.npy + labels.npy); "
                             f"{read.input.name} has {', '.join(sorted(read.files))}",
                             artifact=read.input.name) from exc
        except ValueError as exc:
            raise ArtifactReadError(f"unreadable npy data: {exc}", artifact=read.input.name) from exc
        if batch.ndim != 3 or targets.ndim != 1 or len(batch) != len(targets):
            raise ArtifactReadError(f"expected images (N, H, W) and labels (N,), got {batch.shape} and "
                                    f"{targets.shape}", artifact=read.input.name)
        images.append(batch)
        labels.append(targets.astype(np.int64))
    if len({i.shape[1:] for i in images}) != 1:
        raise UsageError("the training datasets have different image shapes")
    stacked = np.concatenate(images)
    joined = np.concatenate(labels)
    classes = sorted(int(c) for c in np.unique(joined))
    if classes != list(range(len(classes))):
        raise UsageError(f"labels must be 0..K-1, found {classes}")
    pixel_max = 16.0 if float(stacked.max()) <= 16 else 255.0
    return ImageData(stacked, joined, pixel_max, tuple(str(c) for c in classes))


def holdout_split(labels: "np.ndarray", fraction: float, seed: int) -> tuple["np.ndarray", "np.ndarray"]:
    """A stratified, seeded split into (train, holdout) indices; evaluation recomputes the same split."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train, holdout = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        cut = max(1, round(len(members) * fraction))
        holdout.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def indices_digest(indices: "np.ndarray") -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def to_pixels(images: "np.ndarray", pixel_max: float, size: int) -> "torch.Tensor":
    """Raw images -> (N, 3, size, size) in [0, 1]: scaled, bilinearly upsampled, grey replicated to RGB."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / pixel_max
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return tensor.repeat(1, 3, 1, 1)


# -- the model --------------------------------------------------------------------------------------------


def build_model(architecture: str, num_classes: int, image_size: int) -> "torch.nn.Module":
    """The classifier as trained and served: ImageNet normalization, then EfficientNet-Lite."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    class Normalized(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            buffers: Any = self._buffers
            result: torch.Tensor = self.net((pixels - buffers["mean"]) / buffers["std"])
            return result

    try:
        net = EfficientNet.from_name(architecture, num_classes=num_classes, image_size=image_size)
    except ValueError as exc:
        raise UsageError(f"unknown architecture {architecture!r}: {exc}") from exc
    return Normalized(net)


def backbone(model: "torch.nn.Module") -> Any:
    """The EfficientNet inside the normalizing wrapper (its state dict is what is released)."""
    return model.get_submodule("net")


def load_backbone(model: "torch.nn.Module", weights: Mapping[str, "torch.Tensor"], where: str) -> list[str]:
    """Load pretrained weights into everything but the new classifier head; returns the head's keys."""
    net = backbone(model)
    own = net.state_dict()
    pretrained = {k: v for k, v in weights.items() if not k.startswith("_fc.")}
    missing = sorted(set(own) - set(pretrained))
    unexpected = sorted(set(pretrained) - set(own))
    mismatched = sorted(k for k in set(own) & set(pretrained) if own[k].shape != pretrained[k].shape)
    if unexpected or mismatched or any(not k.startswith("_fc.") for k in missing):
        raise UsageError(f"the base model's weights do not fit the architecture (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]})", artifact=where)
    net.load_state_dict(pretrained, strict=False)
    return missing


def model_config(spec: ReleaseSpec, data: ImageData, source_shape: Sequence[int]) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "architecture": spec.architecture,
        "framework": {"library": "efficientnet-lite-pytorch", "version": version("efficientnet-lite-pytorch"),
                      "state_dict_prefix": "", "head": "_fc"},
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "input": {"shape": [3, spec.training.image_size, spec.training.image_size], "dtype": "float32",
                  "range": [0.0, 1.0]},
        "preprocessing": {
            "source_shape": list(source_shape),
            "scale": f"divide by {data.pixel_max:g}",
            "resize": {"mode": "bilinear", "align_corners": False, "size": spec.training.image_size},
            "channels": "greyscale replicated to 3",
            "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
        "model": spec.model,
    }


# -- environment -------------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The git commit of the code doing the training (and whether the tree had local changes)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "repository": str(repo)}
    return {"commit": commit, "dirty": bool(dirty), "repository": str(repo)}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "cairn": __version__}
    for name in ("torch", "numpy", "efficientnet-lite-pytorch", "dagster", "model-signing", "sigstore"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def select_device() -> tuple["torch.device", dict[str, Any]]:
    """CUDA when present, else the CPU; described for the record."""
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        return device, {"type": "cuda", "name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    return torch.device("cpu"), {"type": "cpu", "threads": torch.get_num_threads(), "machine": platform.machine()}


def seed_everything(seed: int) -> dict[str, int]:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return {"python": seed, "numpy": seed, "torch": seed, "split": seed, "shuffle": seed}


# -- fine-tuning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun:
    """A finished fine-tuning run: the model directory and the record that says how it was made."""

    run_id: str
    model_dir: Path
    model_digest: str
    files: Mapping[str, str]
    record: Mapping[str, Any]
    record_path: Path
    record_key: str | None = None
    inputs: tuple[AttestedInput, ...] = field(default=(), compare=False)

    @property
    def predicate(self) -> Mapping[str, Any]:
        return self.record["predicate"]  # type: ignore[no-any-return]


def _split_inputs(inputs: Sequence[AttestedInput]) -> tuple[AttestedInput, list[AttestedInput]]:
    bases = [i for i in inputs if i.ref.role == "base-model"]
    data = [i for i in inputs if i.ref.role == "training-data"]
    if len(bases) != 1 or not data:
        raise UsageError("fine-tuning needs exactly one base model and at least one dataset")
    if bases[0].kind != "model" or any(d.kind != "dataset" for d in data):
        raise UsageError("the base model must be a model source and the datasets dataset sources")
    return bases[0], data


def base_weights(read: ReadInput) -> tuple[str, dict[str, "torch.Tensor"]]:
    candidates = [n for n in read.files if n.endswith(".safetensors")]
    if len(candidates) != 1:
        raise UsageError(f"the base model must hold exactly one safetensors file (the model gate converts "
                         f"checkpoints); found {candidates or 'none'}", artifact=read.input.name)
    name = candidates[0]
    return name, load_safetensors(read.files[name], where=read.input.path / name)


def fine_tune(
    spec: ReleaseSpec,
    inputs: Sequence[AttestedInput],
    work_dir: str | Path,
    *,
    run_id: str | None = None,
    store: "ArtifactStore | None" = None,
    log: Callable[[str], None] | None = None,
) -> TrainingRun:
    """Fine-tune the base model on the datasets; writes ``<work_dir>/<run_id>/model`` and the training record."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    say = log or (lambda message: None)
    params: TrainingParams = spec.training
    base, datasets = _split_inputs(inputs)
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    started = datetime.now(UTC)
    clock = time.monotonic()
    # Read (and hash) exactly the bytes that are used; nothing below touches the files again.
    base_read = read_attested(base)
    data_reads = [read_attested(d) for d in datasets]
    weights_name, weights = base_weights(base_read)
    data = image_dataset(data_reads)
    seeds = seed_everything(params.seed)
    device, device_info = select_device()
    say(f"training on {device_info['type']} from {base.name} sha256:{base.digest[:16]} and "
        f"{', '.join(d.name for d in datasets)}")

    train_idx, holdout_idx = holdout_split(data.labels, params.holdout_fraction, params.seed)
    pixels = to_pixels(data.images, data.pixel_max, params.image_size)
    labels = torch.as_tensor(data.labels)
    model = build_model(spec.architecture, len(data.class_names), params.image_size)
    new_head = load_backbone(model, weights, str(base.path / weights_name))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = params.batchnorm_momentum
    net = backbone(model)
    frozen = [net._conv_stem, net._bn0, *list(net._blocks)[: params.freeze_blocks]]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
        if params.optimizer == "adam"
        else torch.optim.SGD(trainable, lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay))
    generator = torch.Generator().manual_seed(params.seed)
    train_tensor = torch.as_tensor(train_idx)
    steps, losses = 0, []
    correct = seen = 0
    for epoch in range(params.epochs):
        model.train()
        for module in frozen:
            module.eval()
        correct = seen = 0  # running accuracy of the last epoch (no extra pass over the data)
        order = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
        for start in range(0, len(order), params.batch_size):
            batch = order[start:start + params.batch_size]
            x, y = pixels[batch].to(device), labels[batch].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            steps += 1
            losses.append(float(loss.detach().cpu()))
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(batch)
            if params.max_steps is not None and steps >= params.max_steps:
                break
        say(f"epoch {epoch + 1}/{params.epochs}: {steps} steps, last loss {losses[-1]:.4f}")
        if params.max_steps is not None and steps >= params.max_steps:
            break
    model.eval()
    train_accuracy = correct / max(1, seen)

    # Write the model beside its final place, then rename it in.
    run_dir = Path(work_dir) / run_id
    staging = Path(work_dir) / f".{run_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "model").mkdir(parents=True)
    state = {k: v for k, v in net.state_dict().items()}
    atomic_write(staging / "model" / MODEL_WEIGHTS, safetensors_bytes(state, {"format": "pt", "model": spec.model}))
    config = model_config(spec, data, data.images.shape[1:])
    atomic_write(staging / "model" / MODEL_CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    files = {name: sha256_file(staging / "model" / name) for name in (MODEL_CONFIG, MODEL_WEIGHTS)}
    model_digest = _root_digest(files)
    finished = datetime.now(UTC)
    record: dict[str, Any] = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": f"model/{name}", "digest": {"sha256": digest}} for name, digest in sorted(files.items())],
        "predicateType": TRAINING_PREDICATE_TYPE,
        "predicate": {
            "runId": run_id,
            "model": spec.model,
            "modelDigest": f"sha256:{model_digest}",
            "spec": spec.describe(),
            "inputs": [{**i.entry(), "bytesRead": {"digest": f"sha256:{r.digest}", "files": dict(r.digests)}}
                       for i, r in zip([base, *datasets], [base_read, *data_reads], strict=True)],
            "baseWeights": {"file": weights_name, "newHead": new_head, "frozen": params.freeze_blocks},
            "hyperparameters": params.as_dict(),
            "seeds": seeds,
            "data": {"examples": len(data.labels), "train": len(train_idx), "holdout": len(holdout_idx),
                     "holdoutDigest": indices_digest(holdout_idx), "classes": list(data.class_names),
                     "pixelMax": data.pixel_max, "imageShape": list(data.images.shape[1:])},
            "result": {"steps": steps, "finalLoss": losses[-1] if losses else None,
                       "meanLossLastEpoch": float(np.mean(losses[-max(1, len(train_idx) // params.batch_size):]))
                       if losses else None, "trainAccuracy": train_accuracy},
            "device": device_info,
            "code": code_version(),
            "libraries": library_versions(),
            "startedOn": started.isoformat(),
            "finishedOn": finished.isoformat(),
            "seconds": round(time.monotonic() - clock, 2),
            "tool": {"name": "cairn", "version": __version__},
        },
    }
    atomic_write(staging / "training.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    if run_dir.exists():
        raise UsageError(f"training run {run_id} already exists", artifact=run_dir)
    os.rename(staging, run_dir)
    key = store.put_record("trainings", f"{spec.model}-{run_id}", record) if store is not None else None
    say(f"trained {steps} steps in {round(time.monotonic() - clock, 1)} s; model sha256:{model_digest}")
    return TrainingRun(run_id, run_dir / "model", model_digest, files, record, run_dir / "training.json", key,
                       tuple([base, *datasets]))


def load_training_run(run_dir: str | Path, inputs: Sequence[AttestedInput] = ()) -> TrainingRun:
    """A finished run from its folder (its model is re-hashed against the record when evaluated or released)."""
    folder = Path(run_dir)
    try:
        record = safeio.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactReadError(f"unreadable training record: {exc}", artifact=folder / "training.json") from exc
    predicate = record.get("predicate") or {}
    files = {str(s["name"]).removeprefix("model/"): str(s["digest"]["sha256"]) for s in record.get("subject") or []}
    return TrainingRun(str(predicate.get("runId")), folder / "model",
                       str(predicate.get("modelDigest", "")).removeprefix("sha256:"), files, record,
                       folder / "training.json", None, tuple(inputs))


def read_model(run: TrainingRun) -> dict[str, bytes]:
    """The trained model's files, read once and checked against the training record."""
    files: dict[str, bytes] = {}
    present = sorted(p.name for p in run.model_dir.iterdir()) if run.model_dir.is_dir() else []
    if present != sorted(run.files):
        raise InputChangedError(f"the model directory holds {present}, the training record names {sorted(run.files)}",
                                artifact=run.model_dir)
    for name, expected in run.files.items():
        path = run.model_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=path) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise InputChangedError(f"sha256 {actual} is not the trained sha256 {expected}", artifact=path)
        files[name] = data
    if _root_digest({n: hashlib.sha256(d).hexdigest() for n, d in files.items()}) != run.model_digest:
        raise InputChangedError("the model's manifest root differs from the training record", artifact=run.model_dir)
    return files
