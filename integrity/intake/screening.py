"""Screening: scan an attested dataset with the attested foundation model, and the model itself.

Runs after attestation and before fine-tuning. Input and output never leave the trust boundary:

* reads the attested copy (``attested/<dataset>/<name>``, npy format: ``images.npy`` + ``labels.npy``)
  and the foundation model's attested safetensors conversion (``attested/<model>/...``);
* scores every sample (:func:`integrity.scans.poisoning.scan_dataset`), flags by policy, and writes:

  ``screened/<dataset>/<name>/``       the filtered dataset: ``images.npy``, ``labels.npy`` and
                                       ``sample_ids.npy`` (row numbers in the attested copy) - stored in
                                       the trusted store only when the screening passes
  ``screened/<dataset>.json``          summary: verdict, digests, counts, record keys, plot paths
  ``screened/<dataset>/plots/*.png``   per-class score distributions
  store ``records/screenings/...``     the screening record (in-toto statement: inputs, policy, outcome,
                                       every flagged sample id with its score)
  store quarantine                     the flagged samples (ids, labels, scores) with the reason

* :func:`scan_model` reverse-engineers a minimal trigger for the encoder and records the verdict
  (``screened/<model>.json``, ``records/model-scans/...``, the reversed trigger as PNG).

A screening that cannot run (unreadable data, weights that do not fit) is a rejection, never a pass.
"""

import contextlib
import hashlib
import json
import os
import shutil
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from integrity import safeio
from integrity.errors import ArtifactReadError, CairnError, DigestMismatchError, StoreError, UsageError
from integrity.ledger.transparency import log_record
from integrity.scans.poisoning.policy import ModelScanPolicy, ScanPolicy
from integrity.storage import ArtifactStore
from integrity.storage.base import record_name
from integrity.trust.hashing import hash_artifact
from integrity.trust.signing import atomic_write
from integrity.trust.statements import stamped

if TYPE_CHECKING:
    from integrity.intake.catalog import Source
    from integrity.scans.samples import Samples

SCREENING_PREDICATE_TYPE = "https://cairn.dev/attestations/screening/v1"
MODEL_SCAN_PREDICATE_TYPE = "https://cairn.dev/attestations/model-scan/v1"
PROBES = 16  # clean probe images for the model scan (samples of the image dataset it screens)


@dataclass(frozen=True)
class ScreeningOutcome:
    """What screening concluded for one dataset or model; ``passed`` False blocks everything downstream."""

    name: str
    passed: bool
    reason: str
    summary: dict[str, Any] = field(default_factory=dict)
    record_key: str | None = None
    quarantine_id: str | None = None
    plots: list[str] = field(default_factory=list)
    output: str | None = None
    output_digest: str | None = None


def read_attested_dataset(home: Path, source_key: str) -> tuple[Path, str, dict[str, bytes]]:
    """The attested copy's files as read once, checked against the attested digest (fails closed).

    The scan and the filtered copy are made from these in-memory bytes, so a copy swapped after
    attestation is refused rather than screened and passed on as trusted.
    """
    source = attested_path(home, source_key)
    expected = _attested_digest(home, source_key)
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    try:
        files = {(p.name if p == source else p.relative_to(source).as_posix()): p.read_bytes() for p in paths}
    except OSError as exc:
        raise ArtifactReadError(f"cannot read the attested copy: {exc}", artifact=source) from exc
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    if source.is_file():
        digest = next(iter(digests.values()))
    else:
        root = hashlib.sha256()
        for name in sorted(digests, key=lambda n: tuple(n.split("/"))):
            root.update(bytes.fromhex(digests[name]))
        digest = root.hexdigest()
    if expected is None or digest != expected:
        raise DigestMismatchError(f"the attested copy hashes to sha256:{digest}, not the attested "
                                  f"sha256:{expected} (changed after attestation)", artifact=source)
    return source, digest, files


@dataclass(frozen=True)
class ScreenInputs:
    """How to read a source's samples: its kind and format, and from its suite the label column and pixel range."""

    kind: str | None = None
    fmt: str | None = None
    label_column: str | None = None
    pixel_range: tuple[float, float] | None = None

    @classmethod
    def of(cls, source: "Source") -> "ScreenInputs":
        from integrity.scans.expectations import load_suite
        from integrity.scans.samples import IMAGE_FORMATS

        suite = load_suite(source.suite) if source.suite is not None else None
        kind = "image" if source.format in IMAGE_FORMATS else "tabular"
        return cls(kind, source.format, suite.label_column if suite else None, suite.pixel_range if suite else None)


def load_screen_samples(files: dict[str, bytes], where: Path, inputs: ScreenInputs) -> "Samples":
    from integrity.scans.samples import check_screenable, load_samples

    samples = load_samples(files, where=where, kind=inputs.kind, fmt=inputs.fmt, label_column=inputs.label_column,
                           pixel_range=inputs.pixel_range)
    check_screenable(samples, where=where)
    return samples


def attested_path(home: Path, source_key: str) -> Path:
    """The single attested artifact of a source (its folder or file under ``attested/<source>``)."""
    folder = home / "attested" / source_key
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    if len(entries) != 1:
        raise ArtifactReadError("no attested copy: the source must be attested before screening", artifact=folder)
    return entries[0]


def _attested_digest(home: Path, source_key: str) -> str | None:
    try:
        data = safeio.loads((home / "attested" / f"{source_key}.json").read_text())
    except (OSError, ValueError):
        return None
    value = data.get("usable_digest") or data.get("digest")
    return str(value) if value else None


def score_plot(path: Path, scores: np.ndarray, labels: np.ndarray, threshold: float, title: str,
               class_names: tuple[str, ...] | None = None) -> Path:
    """Per-class score distributions (one strip per class, flagged samples in red) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.unique(labels)
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(classes) + 1.6), dpi=100)
    rng = np.random.default_rng(0)
    shown = np.clip(scores, -5, 15)
    for row, label in enumerate(classes):
        values = shown[labels == label]
        jitter = row + rng.uniform(-0.3, 0.3, len(values))
        flagged = values >= threshold
        axis.scatter(values[~flagged], jitter[~flagged], s=4, color="#4477aa", alpha=0.5)
        axis.scatter(values[flagged], jitter[flagged], s=8, color="#cc3311")
    axis.axvline(threshold, color="#cc3311", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(classes)), [class_names[int(c)] if class_names else str(c) for c in classes])
    axis.set_xlabel("poisoning score (robust z; clipped to [-5, 15]); dashed: flag threshold")
    axis.set_ylabel("class")
    axis.set_title(textwrap.fill(title, 110), fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def trigger_plot(path: Path, mask: np.ndarray, pattern: np.ndarray, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pattern2d = pattern if pattern.ndim == 2 else pattern.mean(0)
    figure, axes = plt.subplots(1, 3, figsize=(7, 2.6), dpi=100)
    panels = (("mask", mask), ("pattern", pattern2d), ("trigger = mask x pattern", mask * pattern2d))
    for axis, (name, image) in zip(axes, panels, strict=True):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


@contextlib.contextmanager
def _shared_cores() -> Iterator[None]:
    """Scan with half the cores: the scan shares the machine with the run's other steps (and, in CI,
    with a second test worker), and oversubscribed torch threads slow everything down many times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) // 2)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _foundation(home: Path, model_key: str | None) -> Any:
    from integrity.scans.poisoning.features import FoundationModel

    if model_key is None:
        return None
    return FoundationModel.from_path(attested_path(home, model_key))


def screen_dataset(home: Path, store: ArtifactStore, dataset_key: str, *, model_key: str | None,
                   policy: ScanPolicy | None = None, device: str | None = None,
                   inputs: ScreenInputs | None = None) -> ScreeningOutcome:
    """Scan the attested dataset; store the filtered copy (if it passes), the record and the quarantine list.

    ``inputs`` says how to read it (:meth:`ScreenInputs.of` a catalog source); images are embedded
    with the foundation model ``model_key``, tables are scored on their own features.
    """
    from integrity.scans.poisoning import scan_dataset
    from integrity.scans.samples import write_filtered

    policy = policy or ScanPolicy()
    inputs = inputs or ScreenInputs()
    out_root = home / "screened"
    summary_path = out_root / f"{dataset_key}.json"
    try:
        source, input_digest, files = read_attested_dataset(home, dataset_key)
        samples = load_screen_samples(files, source, inputs)
        x, y = samples.x, samples.labels
        foundation = _foundation(home, model_key) if samples.kind == "image" else None
        with _shared_cores():
            columns = samples.details.get("columns") if samples.kind == "tabular" else None
            result = scan_dataset(x, y, foundation=foundation, policy=policy, device=device, columns=columns)
    except CairnError as error:
        outcome = ScreeningOutcome(dataset_key, False, f"screening could not run: {error.summary()}")
        atomic_write(summary_path, json.dumps({"dataset": dataset_key, "passed": False, "reason": outcome.reason},
                                              indent=2).encode())
        return outcome
    flagged_ids = np.flatnonzero(result.flagged)
    names = samples.class_names
    flagged_list = [{"id": int(i), "label": names[int(y[i])], "score": round(float(result.scores[i]), 4)}
                    for i in flagged_ids]
    plots = [str(score_plot(out_root / dataset_key / "plots" / "scores-by-class.png", result.scores, y,
                            policy.flag_threshold, f"{dataset_key}: {result.verdict.reason}", names))]
    # The flagged samples go to quarantine (as a list of ids, labels and scores) with the reason.
    scratch = out_root / dataset_key / f".flagged-{uuid.uuid4().hex[:8]}.json"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(scratch, json.dumps({"dataset": dataset_key, "input_digest": input_digest,
                                      "flagged": flagged_list}, indent=2).encode())
    quarantine_id = None
    try:
        if flagged_list:
            entry = store.quarantine(scratch, f"poisoning scan flagged {len(flagged_list)} sample(s): "
                                     f"{result.verdict.reason}", source=dataset_key,
                                     details={"step": "screen", "flagged": len(flagged_list),
                                              "passed": result.verdict.passed})
            quarantine_id = entry.id
    finally:
        scratch.unlink(missing_ok=True)
    output, output_digest = None, None
    store_digest: str | None = None
    if result.verdict.passed:
        keep = np.flatnonzero(~result.flagged)
        target = out_root / dataset_key / source.name
        staging = out_root / dataset_key / f".{source.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            write_filtered(files, where=source, kind=samples.kind, fmt=inputs.fmt, keep=keep, folder=staging)
            stored = store.put_trusted(staging)
            output_digest = hash_artifact(staging).root_digest
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
            output = str(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        store_digest = stored.digest
    summary = result.summary()
    per_class = {names[int(c)]: v for c, v in summary["per_class"].items()}
    record = stamped(source.name, input_digest, SCREENING_PREDICATE_TYPE, {
        "dataset": dataset_key, "kind": samples.kind, "model": model_key if samples.kind == "image" else None,
        "modelDigest": _attested_digest(home, model_key) if model_key and samples.kind == "image" else None,
        "passed": result.verdict.passed, "reason": result.verdict.reason,
        "read": samples.details | {"files": len(samples.details.get("files") or [])},
        "summary": {k: v for k, v in summary.items() if k not in ("evidence", "per_class")} | {"per_class": per_class},
        "evidence": summary["evidence"], "flagged": flagged_list, "quarantineId": quarantine_id,
        "output": {"path": output, "digest": output_digest, "storeDigest": store_digest,
                   "samples": int((~result.flagged).sum()) if result.verdict.passed else 0},
    })
    record_key = store.put_record("screenings", record_name(dataset_key, "screen"), record)
    log_record(store, record_key, home=home)
    body = {"dataset": dataset_key, "kind": samples.kind, "passed": result.verdict.passed,
            "reason": result.verdict.reason, "input_digest": input_digest,
            "model": model_key if samples.kind == "image" else None, "output": output,
            "output_digest": output_digest, "output_store_digest": store_digest, "record": record_key,
            "quarantine_id": quarantine_id, "samples": len(y), "flagged": len(flagged_list),
            "backdoor_classes": [names[c] for c in result.split_classes], "plots": plots,
            "seconds": round(result.seconds, 2), "device": result.device, "per_class": per_class}
    atomic_write(summary_path, json.dumps(body, indent=2).encode())
    return ScreeningOutcome(dataset_key, result.verdict.passed, result.verdict.reason, body, record_key,
                            quarantine_id, plots, output, output_digest)


def probe_samples(home: Path, datasets: "Sequence[tuple[str, ScreenInputs]]") -> tuple[np.ndarray, dict[str, Any]]:
    """Clean probe inputs for the model scan: samples of the attested image dataset it will screen (and train).

    Drawn without replacement by a fixed seed from the first image dataset listed, scaled from its
    declared pixel range; which samples (ids in the sample order) and from which digest is recorded.
    """
    for key, inputs in datasets:
        source, digest, files = read_attested_dataset(home, key)
        samples = load_screen_samples(files, source, inputs)
        if samples.kind != "image":
            continue
        order = np.random.default_rng(0).permutation(len(samples))[:PROBES]
        x = samples.x[order]
        probes: np.ndarray = x[:, 0] if x.shape[1] == 1 else x
        return probes, {"dataset": key, "digest": f"sha256:{digest}", "ids": [int(i) for i in order],
                        "shape": list(samples.x.shape[1:])}
    raise UsageError("the model scan needs an attested image dataset to probe with, and none is screened with "
                     "this model", advice="Ingest an image dataset (scan_profile: images) beside the model.")


MODEL_SCAN_CONFIG = {"regions": 4, "steps": 60, "lr": 0.2, "probes": PROBES, "version": 4}


def scan_model(home: Path, store: ArtifactStore, model_key: str, *, policy: ModelScanPolicy | None = None,
               device: str | None = None, datasets: "Sequence[tuple[str, ScreenInputs]]" = ()) -> ScreeningOutcome:
    """Reverse-engineer a minimal trigger for the attested encoder and judge it by policy.

    The scan is deterministic, so its record is named by the model's digest and the scan
    configuration: the same attested weights are scanned once per store, later runs reuse the record.
    """
    from integrity.scans.poisoning import scan_encoder

    policy = policy or ModelScanPolicy()
    out_root = home / "screened"
    summary_path = out_root / f"{model_key}.json"
    plot = out_root / model_key / "plots" / "reversed-trigger.png"
    digest = _attested_digest(home, model_key)
    try:
        probes, probe_info = probe_samples(home, datasets)
    except CairnError as error:
        reason = f"model scan could not run: {error.summary()}"
        atomic_write(summary_path, json.dumps({"model": model_key, "passed": False, "reason": reason}).encode())
        return ScreeningOutcome(model_key, False, reason)
    config_tag = hashlib.sha256(json.dumps({**MODEL_SCAN_CONFIG, "probes": probe_info}, sort_keys=True)
                                .encode()).hexdigest()[:12]
    scan_name = f"{model_key}-{(digest or 'unknown')[:16]}-{config_tag}"
    cached: dict[str, Any] | None = None
    if digest and plot.is_file():
        try:
            cached = store.get_record("model-scans", scan_name)["predicate"]
        except (CairnError, KeyError):
            cached = None
    if cached is not None:
        verdict = policy.check(float(cached["score"]), str(cached.get("score_kind", "anomaly_index")))
        body = {"model": model_key, "digest": digest, "record": f"records/model-scans/{scan_name}.json",
                "plots": [str(plot)], **{k: v for k, v in cached.items() if k not in ("at", "tool")},
                "passed": verdict.passed, "reason": verdict.reason, "reused": True}
        atomic_write(summary_path, json.dumps(body, indent=2).encode())
        return ScreeningOutcome(model_key, verdict.passed, verdict.reason, body, body["record"], None, [str(plot)])
    try:
        model = _foundation(home, model_key)
        with _shared_cores():
            result = scan_encoder(lambda batch: model.embed_tensor(model.prepare(batch)), probes,
                                  policy=policy, device=model.device, regions=int(MODEL_SCAN_CONFIG["regions"]),
                                  steps=int(MODEL_SCAN_CONFIG["steps"]), lr=float(MODEL_SCAN_CONFIG["lr"]))
    except CairnError as error:
        reason = f"model scan could not run: {error.summary()}"
        atomic_write(summary_path, json.dumps({"model": model_key, "passed": False, "reason": reason}).encode())
        return ScreeningOutcome(model_key, False, reason)
    plots = [str(trigger_plot(plot, result.trigger.mask, result.trigger.pattern,
                              f"{model_key}: smallest reversed trigger (region {result.trigger.region}, "
                              f"anomaly index {result.score:.2f})"))]
    record = stamped(model_key, digest, MODEL_SCAN_PREDICATE_TYPE, {
        "model": model_key, "method": "Neural Cleanse on embedding regions (k-means pseudo-classes)",
        "config": MODEL_SCAN_CONFIG, "probes": probe_info, **result.summary(),
        # the smallest reversed trigger, in the probes' image space: the release gate measures it on the fine-tune
        "trigger": {"region": result.trigger.region, "mask": np.round(result.trigger.mask, 4).tolist(),
                    "pattern": np.round(result.trigger.pattern, 4).tolist()}})
    try:  # records are write-once (the ledger vouches for their bytes): a re-scan gets its own name
        record_key = store.put_record("model-scans", scan_name if digest else record_name(model_key, "scan"),
                                      record)
    except StoreError:
        record_key = store.put_record("model-scans", record_name(model_key, "scan"), record)
    log_record(store, record_key, home=home)
    body = {"model": model_key, "digest": digest, "record": record_key, "plots": plots, "probes": probe_info,
            **result.summary()}
    atomic_write(summary_path, json.dumps(body, indent=2).encode())
    return ScreeningOutcome(model_key, result.verdict.passed, result.verdict.reason, body, record_key, None, plots)
