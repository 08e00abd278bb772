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
import json
import os
import platform
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity import __version__, safeio
from integrity.errors import ArtifactReadError, UsageError
from integrity.release.inputs import AttestedInput, InputChangedError, ReadInput, _root_digest, read_attested
from integrity.release.model import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    backbone,
    build_model,
    holdout_split,
    image_dataset,
    indices_digest,
    load_backbone,
    load_safetensors,
    model_config,
    safetensors_bytes,
    to_pixels,
)
from integrity.release.spec import ReleaseSpec, TrainingParams
from integrity.trust.hashing import sha256_file
from integrity.trust.signing import atomic_write
from integrity.trust.statements import statement

if TYPE_CHECKING:
    import torch

    from integrity.storage import ArtifactStore

TRAINING_PREDICATE_TYPE = "https://cairn.dev/attestations/training/v1"


# -- inputs ---------------------------------------------------------------------------------------------


# -- reading exactly the attested bytes ------------------------------------------------------------------


# -- safetensors from and to bytes -------------------------------------------------------------------------


# -- data -------------------------------------------------------------------------------------------------


# -- the model --------------------------------------------------------------------------------------------


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


def make_optimizer(params: TrainingParams, trainable: Any) -> "torch.optim.Optimizer":
    """The spec's optimizer over ``trainable`` (every recipe builds it the same way)."""
    import torch

    if params.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)
    return torch.optim.SGD(trainable, lr=params.learning_rate, momentum=0.9, weight_decay=params.weight_decay)


def run_epoch(model: "torch.nn.Module", optimizer: "torch.optim.Optimizer", inputs: "torch.Tensor",
              labels: "torch.Tensor", order: "torch.Tensor", params: TrainingParams, device: "torch.device",
              losses: list[float], steps: int, *, skip_single: bool = False) -> tuple[int, int, int]:
    """One pass over ``order`` in batches; returns (steps so far, correct, seen) and appends each loss.

    ``skip_single``: a trailing batch of one is skipped (batch normalisation cannot train on one sample).
    Stops early at ``params.max_steps``.
    """
    import torch.nn.functional as F

    correct = seen = 0
    for start in range(0, len(order), params.batch_size):
        batch = order[start:start + params.batch_size]
        if skip_single and len(batch) < 2 < len(order):
            continue
        x, y = inputs[batch].to(device), labels[batch].to(device)
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
    return steps, correct, seen


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
    pixels = to_pixels(data.images, params.image_size)
    labels = torch.as_tensor(data.labels)
    model = build_model(spec.architecture, len(data.class_names), params.image_size)
    new_head = load_backbone(model, weights, str(base.path / weights_name), spec.architecture)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = params.batchnorm_momentum
    net = backbone(model)
    from integrity.scans.poisoning.backbones import get_backbone

    frozen = get_backbone(spec.architecture).frozen(net, params.freeze_blocks)
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    model.to(device)
    optimizer = make_optimizer(params, [p for p in model.parameters() if p.requires_grad])
    generator = torch.Generator().manual_seed(params.seed)
    train_tensor = torch.as_tensor(train_idx)
    steps = 0
    losses: list[float] = []
    correct = seen = 0
    for epoch in range(params.epochs):
        model.train()
        for module in frozen:
            module.eval()
        # running accuracy of the last epoch (no extra pass over the data)
        order = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
        steps, correct, seen = run_epoch(model, optimizer, pixels, labels, order, params, device, losses, steps,
                                         skip_single=True)
        say(f"epoch {epoch + 1}/{params.epochs}: {steps} steps, last loss {losses[-1]:.4f}")
        if params.max_steps is not None and steps >= params.max_steps:
            break
    model.eval()
    train_accuracy = correct / max(1, seen)

    state = {k: v for k, v in net.state_dict().items()}
    config = model_config(spec, data, data.images.shape[1:])
    return write_run(spec, run_id, work_dir, tensors=state, config=config,
                     used=list(zip([base, *datasets], [base_read, *data_reads], strict=True)),
                     base={"file": weights_name, "newHead": new_head, "frozen": params.freeze_blocks},
                     seeds=seeds, data={"examples": len(data.labels), "train": len(train_idx),
                                        "holdout": len(holdout_idx), "holdoutDigest": indices_digest(holdout_idx),
                                        "classes": list(data.class_names), "pixelRange": list(data.pixel_range),
                                        "imageShape": list(data.images.shape[1:])},
                     result={"steps": steps, "finalLoss": losses[-1] if losses else None,
                             "meanLossLastEpoch": float(np.mean(losses[-max(1, len(train_idx) // params.batch_size):]))
                             if losses else None, "trainAccuracy": train_accuracy},
                     device_info=device_info, started=started, clock=clock, store=store, say=say)


def write_run(spec: ReleaseSpec, run_id: str, work_dir: str | Path, *, tensors: Mapping[str, "torch.Tensor"],
              config: Mapping[str, Any], used: Sequence[tuple[AttestedInput, ReadInput]],
              base: Mapping[str, Any] | None, seeds: Mapping[str, int], data: Mapping[str, Any],
              result: Mapping[str, Any], device_info: Mapping[str, Any], started: datetime, clock: float,
              store: "ArtifactStore | None", say: Callable[[str], None]) -> TrainingRun:
    """Write the model (safetensors + config) and the training record beside their final place, then rename
    them in; every recipe ends here, so every release has the same record."""
    run_dir = Path(work_dir) / run_id
    staging = Path(work_dir) / f".{run_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "model").mkdir(parents=True)
    atomic_write(staging / "model" / MODEL_WEIGHTS, safetensors_bytes(tensors, {"format": "pt", "model": spec.model}))
    atomic_write(staging / "model" / MODEL_CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    files = {name: sha256_file(staging / "model" / name) for name in (MODEL_CONFIG, MODEL_WEIGHTS)}
    model_digest = _root_digest(files)
    finished = datetime.now(UTC)
    record: dict[str, Any] = statement(
        [{"name": f"model/{name}", "digest": {"sha256": digest}} for name, digest in sorted(files.items())],
        TRAINING_PREDICATE_TYPE, {
            "runId": run_id,
            "model": spec.model,
            "modelDigest": f"sha256:{model_digest}",
            "spec": spec.describe(),
            "inputs": [{**i.entry(), "bytesRead": {"digest": f"sha256:{r.digest}", "files": dict(r.digests)}}
                       for i, r in used],
            "baseWeights": dict(base) if base is not None else None,
            "hyperparameters": spec.training.as_dict(),
            "seeds": dict(seeds),
            "data": dict(data),
            "result": dict(result),
            "device": dict(device_info),
            "code": code_version(),
            "libraries": library_versions(),
            "startedOn": started.isoformat(),
            "finishedOn": finished.isoformat(),
            "seconds": round(time.monotonic() - clock, 2),
            "tool": {"name": "cairn", "version": __version__},
        })
    atomic_write(staging / "training.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    if run_dir.exists():
        raise UsageError(f"training run {run_id} already exists", artifact=run_dir)
    os.rename(staging, run_dir)
    key = store.put_record("trainings", f"{spec.model}-{run_id}", record) if store is not None else None
    say(f"trained {result.get('steps')} steps in {round(time.monotonic() - clock, 1)} s; model sha256:{model_digest}")
    return TrainingRun(run_id, run_dir / "model", model_digest, files, record, run_dir / "training.json", key,
                       tuple(i for i, _ in used))


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
