"""The tabular classification recipe (``architecture: tabular-mlp``): an MLP over a table's features.

Trained from scratch (no base model) on attested or screened tables, with the same evidence chain,
training record, gate and provenance as the image recipe. What is released is safetensors plus a
config, never a pickle: the weights hold the standardisation (feature means and deviations as
buffers), the config the feature columns in order (one-hot levels as ``column=level``), the label
column and the class names.

The release gate measures clean accuracy on the held-out split and accuracy under FGSM and PGD in
*standardised* feature space: ``epsilons`` are L-infinity budgets in units of each feature's
standard deviation. Image triggers do not apply to tables and are refused; label flips and
feature-value triggers are the poisoning screen's job, before training.
"""

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity import safeio
from integrity.errors import ArtifactReadError, UsageError
from integrity.release.inputs import AttestedInput, ReadInput, read_attested
from integrity.release.model import MODEL_CONFIG, MODEL_WEIGHTS, holdout_split, indices_digest, load_safetensors
from integrity.release.spec import ReleaseSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from integrity.release.evaluation import GateResult, Trigger
    from integrity.release.training import TrainingRun
    from integrity.storage import ArtifactStore

ARCHITECTURE = "tabular-mlp"


@dataclass(frozen=True)
class TableData:
    x: "np.ndarray"  # N x D float32 features (text cells encoded as in integrity.scans.tables.features)
    labels: "np.ndarray"
    class_names: tuple[str, ...]
    columns: tuple[str, ...]
    skipped: tuple[str, ...]
    label_column: str


def table_dataset(reads: Sequence[ReadInput]) -> TableData:
    """One table from the datasets' hashed bytes (they must share columns and the label column)."""
    import pandas as pd

    from integrity.release.model import suite_of
    from integrity.scans.samples import table_format
    from integrity.scans.tables import TABLE_FORMATS, features, read_table

    frames, labels = [], set()
    for read in reads:
        suite = suite_of(read)
        if suite is None or not suite.label_column:
            raise UsageError(f"{read.input.name}: the tabular recipe needs the label column, named in the dataset's "
                             "suite (label.column)", artifact=read.input.name)
        labels.add(suite.label_column)
        fmt = str(read.input.reading.get("format") or "")
        if fmt not in TABLE_FORMATS or not any(n.lower().endswith(TABLE_FORMATS[fmt]) for n in read.files):
            fmt = table_format(read.files, None)  # the screened copy is one CSV whatever the drop's format
        try:
            frames.append(read_table(read.files, fmt, where=read.input.path))
        except ArtifactReadError as exc:
            raise UsageError(f"the tabular recipe cannot read {read.input.name}: {exc.reason}",
                             artifact=read.input.name) from exc
    if len(labels) != 1:
        raise UsageError(f"the training tables name different label columns: {sorted(labels)}")
    if len({tuple(f.columns) for f in frames}) != 1:
        raise UsageError("the training tables have different columns")
    frame = pd.concat(frames, ignore_index=True)
    label_column = labels.pop()
    if frame.empty:
        raise UsageError("the training tables hold no rows")
    found = features(frame, label_column, where=reads[0].input.path)
    if len(found.class_names) < 2:
        raise UsageError(f"the training data has one class only ({found.class_names[0]!r}): a classifier needs two")
    return TableData(found.x.astype("float32"), found.labels, found.class_names, found.columns, found.skipped,
                     label_column)


def build_mlp(features: int, classes: int, hidden: int) -> "torch.nn.Module":
    """The released module: standardisation buffers (in the weights), then two hidden ReLU layers."""
    import torch

    class TabularMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(features))
            self.register_buffer("std", torch.ones(features))
            self.net = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, classes))

        def standardise(self, x: torch.Tensor) -> torch.Tensor:
            buffers: Any = self._buffers
            result: torch.Tensor = (x - buffers["mean"]) / buffers["std"]
            return result

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.net(self.standardise(x))
            return result

    return TabularMLP()


def train_tabular(spec: ReleaseSpec, inputs: Sequence[AttestedInput], work_dir: str | Path, *,
                  run_id: str | None = None, store: "ArtifactStore | None" = None,
                  log: Callable[[str], None] | None = None) -> "TrainingRun":
    """Train the MLP on the attested tables; writes the model and the training record like every recipe."""
    import numpy as np
    import torch

    from integrity.release.training import make_optimizer, run_epoch, seed_everything, select_device, write_run

    say = log or (lambda message: None)
    if spec.base_model is not None:
        raise UsageError(f"{ARCHITECTURE} trains from scratch: remove base_model ({spec.base_model.ref}) from the "
                         "release spec", artifact=spec.path)
    datasets = [i for i in inputs if i.ref.role == "training-data"]
    if not datasets or any(d.kind != "dataset" for d in datasets):
        raise UsageError("the tabular recipe needs at least one dataset source")
    params = spec.training
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    started, clock = datetime.now(UTC), time.monotonic()
    reads = [read_attested(d) for d in datasets]
    data = table_dataset(reads)
    seeds = seed_everything(params.seed)
    device, device_info = select_device()
    train_idx, holdout_idx = holdout_split(data.labels, params.holdout_fraction, params.seed)
    say(f"training {ARCHITECTURE} on {device_info['type']} from {', '.join(d.name for d in datasets)}: "
        f"{len(train_idx)} rows, {data.x.shape[1]} features, {len(data.class_names)} classes")
    model = build_mlp(data.x.shape[1], len(data.class_names), params.hidden_units)
    x_train = torch.as_tensor(data.x[train_idx])
    mean, std = x_train.mean(0), x_train.std(0) if len(train_idx) > 1 else torch.ones(data.x.shape[1])
    model.get_buffer("mean").copy_(mean)
    model.get_buffer("std").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    model.to(device)
    optimizer = make_optimizer(params, model.parameters())
    generator = torch.Generator().manual_seed(params.seed)
    features, labels = torch.as_tensor(data.x), torch.as_tensor(data.labels)
    order_base = torch.as_tensor(train_idx)
    steps, correct, seen = 0, 0, 0
    losses: list[float] = []
    for epoch in range(params.epochs):
        model.train()
        order = order_base[torch.randperm(len(order_base), generator=generator)]
        steps, correct, seen = run_epoch(model, optimizer, features, labels, order, params, device, losses, steps)
        if params.max_steps is not None and steps >= params.max_steps:
            break
        if (epoch + 1) % max(1, params.epochs // 5) == 0:
            say(f"epoch {epoch + 1}/{params.epochs}: {steps} steps, last loss {losses[-1]:.4f}")
    model.eval()
    from importlib.metadata import version

    config = {
        "architecture": ARCHITECTURE, "recipe": "tabular-classification",
        "framework": {"library": "torch", "version": version("torch"), "state_dict_prefix": "", "head": "net.4"},
        "num_classes": len(data.class_names), "class_names": list(data.class_names),
        "input": {"features": list(data.columns), "dtype": "float32"},
        "preprocessing": {"label_column": data.label_column, "skipped_columns": list(data.skipped),
                          "text_columns": "one-hot, one feature per 'column=level'",
                          "missing": "numeric blanks filled with the column median",
                          "standardise": "(x - mean) / std, both stored in the weights"},
        "hidden_units": params.hidden_units, "model": spec.model,
    }
    tensors = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return write_run(spec, run_id, work_dir, tensors=tensors, config=config, used=list(zip(datasets, reads,
                     strict=True)), base=None, seeds=seeds,
                     data={"examples": len(data.labels), "train": len(train_idx), "holdout": len(holdout_idx),
                           "holdoutDigest": indices_digest(holdout_idx), "classes": list(data.class_names),
                           "features": len(data.columns), "labelColumn": data.label_column},
                     result={"steps": steps, "finalLoss": losses[-1] if losses else None,
                             "meanLossLastEpoch": float(np.mean(losses[-max(1, len(train_idx) // params.batch_size):]))
                             if losses else None, "trainAccuracy": correct / max(1, seen)},
                     device_info=device_info, started=started, clock=clock, store=store, say=say)


def _attack(model: Any, z: "torch.Tensor", y: "torch.Tensor", eps: float, steps: int) -> "torch.Tensor":
    """L-infinity PGD (``steps`` 1 = FGSM) on standardised features, from the clean point."""
    import torch
    import torch.nn.functional as F

    adversarial = z.clone()
    step = eps if steps == 1 else 2.5 * eps / steps
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model.net(adversarial), y)
        (grad,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = torch.min(torch.max(adversarial + step * grad.sign(), z - eps), z + eps)
    return adversarial.detach()


def evaluate_tabular(run: "TrainingRun", policy: Any, *, triggers: "Sequence[Trigger]" = (),
                     store: "ArtifactStore | None" = None, log: Callable[[str], None] | None = None) -> "GateResult":
    """The release gate for a table model: held-out accuracy, FGSM and PGD in standardised feature space."""
    import torch

    from integrity.release.evaluation import decide, training_reads
    from integrity.release.training import read_model, select_device

    say = log or (lambda message: None)
    clock = time.monotonic()
    if triggers:
        raise UsageError(f"image triggers ({', '.join(t.name for t in triggers)}) do not apply to a table model",
                         advice="Remove gate.triggers from the release spec; the poisoning screen checks tables.")
    files = read_model(run)
    config = safeio.loads(files[MODEL_CONFIG])
    hyper = run.predicate["hyperparameters"]
    reads = training_reads(run)
    data = table_dataset(reads)
    if list(data.columns) != list(config["input"]["features"]):
        raise UsageError("the tables' features differ from those the model was trained on", artifact=run.record_path)
    _, holdout = holdout_split(data.labels, float(hyper["holdout_fraction"]), int(hyper["seed"]))
    if indices_digest(holdout) != run.predicate["data"]["holdoutDigest"]:
        raise UsageError("the held-out split differs from the one recorded at training", artifact=run.record_path)
    device, device_info = select_device()
    model: Any = build_mlp(len(data.columns), int(config["num_classes"]), int(config["hidden_units"]))
    model.load_state_dict(load_safetensors(files[MODEL_WEIGHTS], where=run.model_dir / MODEL_WEIGHTS))
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = torch.as_tensor(data.x[holdout]).to(device)
    y = torch.as_tensor(data.labels[holdout]).to(device)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        z = model.standardise(x)
    count = min(policy.adversarial_samples, len(holdout))
    fgsm, pgd = {}, {}
    for eps in policy.epsilons:
        one_step = _attack(model, z[:count], y[:count], eps, 1)
        several = _attack(model, z[:count], y[:count], eps, policy.pgd_steps)
        with torch.no_grad():
            fgsm[f"{eps:g}"] = float((model.net(one_step).argmax(1) == y[:count]).float().mean())
            pgd[f"{eps:g}"] = float((model.net(several).argmax(1) == y[:count]).float().mean())
    say(f"clean accuracy {clean:.4f} on {len(holdout)} held-out rows; FGSM {fgsm}, PGD {pgd}")
    return decide(run, policy, clean=clean, holdout=holdout, attack={}, triggers=(), fgsm=fgsm, pgd=pgd,
                  adversarial_samples=count, reads=reads, device_info=device_info, clock=clock, store=store,
                  model_name=str(config.get("model", "model")),
                  extra={"epsilonUnits": "standard deviations of each feature (standardised space)"})
