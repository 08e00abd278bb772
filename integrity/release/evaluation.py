"""The release gate: a model is released only if it meets the policy on held-out data.

Measured on the held-out split that training recorded (recomputed from the seed and checked
against the recorded digest), from the attested dataset bytes read again and re-hashed:

* clean accuracy, against ``gate.min_clean_accuracy``;
* the attack success rate of every trigger the poisoning scans reversed or flagged (or that the
  spec lists): the share of held-out images *not* of the target class that the trigger turns
  into the target class, against ``gate.max_attack_success``;
* accuracy under FGSM and PGD (L-infinity, pixel scale) at each of ``gate.epsilons``: reported,
  and held to ``gate.min_robust_accuracy`` at the largest epsilon when the policy sets it.

A model below policy gets a failed :class:`GateResult` whose reasons say why; nothing is released.
"""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity import __version__, safeio
from integrity.errors import ArtifactReadError, UsageError
from integrity.release.inputs import read_attested
from integrity.release.model import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    backbone,
    build_model,
    holdout_split,
    image_dataset,
    indices_digest,
    load_safetensors,
    to_pixels,
)
from integrity.release.spec import GatePolicy
from integrity.release.training import TrainingRun, read_model, select_device
from integrity.storage import record_key
from integrity.trust.signing import atomic_write
from integrity.trust.statements import statement, subject

if TYPE_CHECKING:
    import numpy as np
    import torch

    from integrity.storage import ArtifactStore

EVALUATION_PREDICATE_TYPE = "https://cairn.dev/attestations/evaluation/v1"


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger in the dataset's own image space: ``x' = (1 - mask) * x + mask * pattern``.

    ``pattern`` and ``mask`` are in [0, 1] with the shape of one source image; ``target`` is the
    class the trigger is suspected to force, or None for a trigger reversed from a foundation
    model's embedding region (no class of this dataset): then the worst class counts, the one it
    pushes most held-out images of other classes into. ``source`` says which scan (record) produced it.
    """

    name: str
    target: int | None
    pattern: Any
    mask: Any
    source: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "<trigger>") -> "Trigger":
        import numpy as np

        try:
            pattern = np.asarray(data["pattern"], dtype=np.float32)
            mask = np.asarray(data["mask"], dtype=np.float32)
            target = None if data["target"] is None else int(data["target"])
            name = str(data.get("name") or where)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"a trigger needs name, target, pattern and mask: {exc}", artifact=where) from exc
        if mask.ndim != 2 or pattern.shape[-2:] != mask.shape or pattern.ndim not in (2, 3):
            raise UsageError(f"pattern {pattern.shape} and mask {mask.shape}: the mask is H x W and the pattern "
                             "H x W or C x H x W", artifact=where)
        if pattern.min() < 0 or pattern.max() > 1 or mask.min() < 0 or mask.max() > 1:
            raise UsageError("pattern and mask values must lie in [0, 1]", artifact=where)
        return cls(name, target, pattern, mask, str(data.get("source") or where))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "source": self.source,
                "pattern": self.pattern.tolist(), "mask": self.mask.tolist()}


def scan_triggers(run: "TrainingRun", store: "ArtifactStore", home: "Path | None" = None) -> list[Trigger]:
    """The triggers the foundation-model scans reversed for this run's inputs (from their records).

    A scan record that is referenced but unreadable, or whose trigger is malformed, is an error:
    the gate fails closed rather than skipping a trigger it was meant to measure.
    """
    from integrity.intake.screening import MODEL_SCAN_PREDICATE_TYPE
    from integrity.ledger.transparency import LoggedRecords
    from integrity.release.inputs import referenced_record

    logged = LoggedRecords.for_store(store, home) if any(
        a.ref.stage == "backdoor_scanned" and a.records.get("scans") for a in run.inputs) else None
    triggers = []
    for attested in run.inputs:
        for key in attested.records.get("scans", ()) if attested.ref.stage == "backdoor_scanned" else ():
            record = referenced_record(store, key, "model scan", attested.name, logged)
            if record.get("predicateType") != MODEL_SCAN_PREDICATE_TYPE:
                continue
            found = (record.get("predicate") or {}).get("trigger")
            if found is None:
                continue  # a scan recorded before triggers were kept: nothing to measure
            triggers.append(Trigger.from_dict(
                {"name": f"{attested.name} reversed (region {found.get('region')})", "target": None,
                 "pattern": found.get("pattern"), "mask": found.get("mask"), "source": key}, where=key))
    return triggers


def load_triggers(paths: Sequence[str | Path], *, base: Path | None = None) -> list[Trigger]:
    """Triggers from JSON files (one trigger object, or a list of them, per file)."""
    triggers: list[Trigger] = []
    for item in paths:
        path = Path(item)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            data = safeio.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactReadError(f"unreadable trigger file: {exc}", artifact=path) from exc
        for entry in data if isinstance(data, list) else [data]:
            triggers.append(Trigger.from_dict(entry, where=str(path)))
    return triggers


@dataclass(frozen=True)
class GateResult:
    """What the release gate measured and decided."""

    passed: bool
    reasons: tuple[str, ...]
    clean_accuracy: float
    holdout: int
    attack_success: Mapping[str, float]
    fgsm: Mapping[str, float]
    pgd: Mapping[str, float]
    policy: Mapping[str, Any]
    model_digest: str
    record: Mapping[str, Any] = field(default_factory=dict)
    record_key: str | None = None
    record_path: Path | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_gate(self) -> dict[str, Any]:
        """The ``gates.release_gate`` entry of ``release.json``."""
        return {"passed": self.passed, "reason": self.reason, "clean_accuracy": round(self.clean_accuracy, 4),
                "holdout": self.holdout, "attack_success": dict(self.attack_success), "fgsm_accuracy": dict(self.fgsm),
                "pgd_accuracy": dict(self.pgd), "policy": dict(self.policy), "record": self.record_key}

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(measure, value, threshold, verdict) rows for tables."""
        policy = self.policy
        rows = [("clean accuracy", f"{self.clean_accuracy:.4f}", f">= {policy['min_clean_accuracy']}",
                 "pass" if self.clean_accuracy >= policy["min_clean_accuracy"] else "FAIL")]
        for name, rate in self.attack_success.items():
            rows.append((f"attack success of trigger {name}", f"{rate:.4f}", f"<= {policy['max_attack_success']}",
                         "pass" if rate <= policy["max_attack_success"] else "FAIL"))
        floor = policy.get("min_robust_accuracy")
        largest = max(self.pgd, key=float) if self.pgd else None
        for eps, value in self.fgsm.items():
            rows.append((f"FGSM accuracy eps={eps}", f"{value:.4f}", "reported", "-"))
        for eps, value in self.pgd.items():
            verdict, limit = "-", "reported"
            if floor is not None and eps == largest:
                limit, verdict = f">= {floor}", "pass" if value >= floor else "FAIL"
            rows.append((f"PGD accuracy eps={eps}", f"{value:.4f}", limit, verdict))
        return rows


def _accuracy(model: "torch.nn.Module", pixels: "torch.Tensor", labels: "torch.Tensor", device: "torch.device"
              ) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for start in range(0, len(pixels), 256):
            x = pixels[start:start + 256].to(device)
            correct += int((model(x).argmax(1).cpu() == labels[start:start + 256]).sum())
    return correct / max(1, len(pixels))


def _input_gradient(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
    import torch
    import torch.nn.functional as F

    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm_accuracy(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", epsilons: Sequence[float]
                  ) -> dict[str, float]:
    """Fast gradient sign method: one gradient, one step of size eps per budget."""
    import torch

    grad_sign = _input_gradient(model, x, y).sign()
    results = {}
    with torch.no_grad():
        for eps in epsilons:
            adversarial = (x + eps * grad_sign).clamp(0, 1)
            results[f"{eps:g}"] = float((model(adversarial).argmax(1) == y).float().mean())
    return results


def pgd_accuracy(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", epsilons: Sequence[float],
                 steps: int) -> dict[str, float]:
    """Projected gradient descent (L-infinity), deterministic start at the clean image."""
    import torch

    results = {}
    for eps in epsilons:
        step = 2.5 * eps / steps
        adversarial = x.clone()
        for _ in range(steps):
            grad = _input_gradient(model, adversarial, y)
            with torch.no_grad():
                adversarial = torch.min(torch.max(adversarial + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            results[f"{eps:g}"] = float((model(adversarial).argmax(1) == y).float().mean())
    return results


def trigger_success(model: "torch.nn.Module", images: "np.ndarray", labels: "np.ndarray", trigger: Trigger,
                    size: int, device: "torch.device") -> float:
    """Share of held-out images not of the target class that the trigger flips to the target class.

    Without a target (a trigger reversed from an encoder region), the largest such share over classes.
    A reversed trigger of another image size is resized to the dataset's (bilinear); one named in the
    release spec must match exactly.
    """
    import numpy as np
    import torch

    pattern, mask = trigger.pattern, trigger.mask
    planes = pattern if pattern.ndim == 3 else pattern[None]
    channels = images.shape[1]
    if len(planes) != channels:  # a colour trigger on grey images: its mean; a grey one on colour: every channel
        planes = planes.mean(0, keepdims=True) if channels == 1 else np.repeat(planes.mean(0, keepdims=True),
                                                                               channels, 0)
    plane = tuple(images.shape[-2:])
    if mask.shape != plane:
        if trigger.target is not None:
            raise UsageError(f"trigger {trigger.name} has shape {mask.shape}, the images {plane}",
                             artifact=trigger.source)
        both = torch.as_tensor(np.concatenate([planes, mask[None]])[None], dtype=torch.float32)
        resized = torch.nn.functional.interpolate(both, size=plane, mode="bilinear", align_corners=False)[0]
        planes, mask = resized[:-1].clamp(0, 1).numpy(), resized[-1].clamp(0, 1).numpy()
    pattern = planes
    stamped = (1 - mask) * images.astype(np.float32) + mask * pattern  # the mask stamps every channel
    pixels = to_pixels(stamped, size)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(pixels), 256):
            predicted.append(model(pixels[start:start + 256].to(device)).argmax(1).cpu().numpy())
    outcome = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
    classes = [trigger.target] if trigger.target is not None else sorted({int(v) for v in np.unique(labels)})
    rates = []
    for target in classes:
        others = labels != target
        rates.append(float((outcome[others] == target).mean()) if others.any() else 0.0)
    return max(rates) if rates else 0.0


def training_reads(run: TrainingRun) -> list[Any]:
    """The run's attested datasets, read and hashed again, each checked to be what the model was trained on."""
    datasets = [i for i in run.inputs if i.ref.role == "training-data"]
    if not datasets:
        raise UsageError("evaluation needs the training run's attested datasets", artifact=run.record_path)
    reads = [read_attested(d) for d in datasets]
    recorded = {i["name"]: i["bytesRead"]["digest"] for i in run.predicate["inputs"]}
    for read in reads:
        if recorded.get(read.input.name) != f"sha256:{read.digest}":
            raise UsageError(f"{read.input.name} is not the dataset this model was trained on",
                             artifact=read.input.path)
    return reads


def evaluate(
    run: TrainingRun,
    policy: GatePolicy,
    *,
    triggers: Sequence[Trigger] = (),
    store: "ArtifactStore | None" = None,
    log: Callable[[str], None] | None = None,
) -> GateResult:
    """Measure the trained model on its held-out split and decide the release gate."""
    import torch

    say = log or (lambda message: None)
    clock = time.monotonic()
    files = read_model(run)  # re-hashed against the training record
    config = safeio.loads(files[MODEL_CONFIG])
    predicate = run.predicate
    hyper = predicate["hyperparameters"]
    reads = training_reads(run)
    data = image_dataset(reads)
    _, holdout = holdout_split(data.labels, float(hyper["holdout_fraction"]), int(hyper["seed"]))
    if indices_digest(holdout) != predicate["data"]["holdoutDigest"]:
        raise UsageError("the held-out split differs from the one recorded at training", artifact=run.record_path)
    device, device_info = select_device()
    size = int(config["input"]["shape"][-1])
    model = build_model(config["architecture"], int(config["num_classes"]), size)
    backbone(model).load_state_dict(load_safetensors(files[MODEL_WEIGHTS], where=run.model_dir / MODEL_WEIGHTS))
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    images, labels = data.images[holdout], data.labels[holdout]
    pixels = to_pixels(images, size)
    targets = torch.as_tensor(labels)
    clean = _accuracy(model, pixels, targets, device)
    say(f"clean accuracy {clean:.4f} on {len(holdout)} held-out images")
    attack = {t.name: trigger_success(model, images, labels, t, size, device) for t in triggers}
    count = min(policy.adversarial_samples, len(holdout))
    x, y = pixels[:count].to(device), targets[:count].to(device)
    fgsm = fgsm_accuracy(model, x, y, policy.epsilons)
    pgd = pgd_accuracy(model, x, y, policy.epsilons, policy.pgd_steps)
    say(f"FGSM {fgsm}, PGD {pgd} on {count} images")

    return decide(run, policy, clean=clean, holdout=holdout, attack=attack, triggers=triggers, fgsm=fgsm, pgd=pgd,
                  adversarial_samples=count, reads=reads, device_info=device_info, clock=clock, store=store,
                  model_name=str(config.get("model", "model")))


def decide(run: TrainingRun, policy: GatePolicy, *, clean: float, holdout: "np.ndarray", attack: Mapping[str, float],
           triggers: Sequence[Trigger], fgsm: Mapping[str, float], pgd: Mapping[str, float],
           adversarial_samples: int, reads: Sequence[Any], device_info: Mapping[str, Any], clock: float,
           store: "ArtifactStore | None", model_name: str, extra: Mapping[str, Any] | None = None) -> GateResult:
    """The gate's decision from what a recipe measured, and its evaluation record (every recipe ends here)."""
    reasons = []
    if clean < policy.min_clean_accuracy:
        reasons.append(f"clean accuracy {clean:.4f} is below the policy minimum {policy.min_clean_accuracy}")
    for name, rate in attack.items():
        if rate > policy.max_attack_success:
            reasons.append(f"trigger {name} succeeds on {rate:.1%} of held-out samples (policy allows "
                           f"{policy.max_attack_success:.1%})")
    if policy.min_robust_accuracy is not None and pgd:
        largest = max(pgd, key=float)
        if pgd[largest] < policy.min_robust_accuracy:
            reasons.append(f"PGD accuracy {pgd[largest]:.4f} at eps={largest} is below {policy.min_robust_accuracy}")
    passed = not reasons
    if passed:
        reasons.append(f"clean accuracy {clean:.4f} >= {policy.min_clean_accuracy}; "
                       f"{len(attack)} trigger(s) within {policy.max_attack_success:.1%}")
    record: dict[str, Any] = statement([subject("model", run.model_digest)], EVALUATION_PREDICATE_TYPE, {
            "runId": run.run_id, "passed": passed, "reasons": reasons, "policy": policy.as_dict(),
            "cleanAccuracy": clean, "holdout": len(holdout), "holdoutDigest": indices_digest(holdout),
            "attackSuccess": dict(attack), "triggers": [{"name": t.name, "target": t.target, "source": t.source}
                                                        for t in triggers],
            "fgsmAccuracy": dict(fgsm), "pgdAccuracy": dict(pgd), "adversarialSamples": adversarial_samples,
            "pgdSteps": policy.pgd_steps, "datasets": {r.input.name: f"sha256:{r.digest}" for r in reads},
            "device": dict(device_info), "evaluatedAt": datetime.now(UTC).isoformat(),
            "seconds": round(time.monotonic() - clock, 2), "tool": {"name": "cairn", "version": __version__},
            **(extra or {}),
        })
    key = None
    if store is not None:
        name = f"{model_name}-{run.run_id}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
        key = record_key("evaluations", name)
        record["predicate"]["recordKey"] = key
        store.put_record("evaluations", name, record)
    path = run.record_path.parent / "evaluation.json"
    atomic_write(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return GateResult(passed, tuple(reasons), clean, len(holdout), dict(attack), dict(fgsm), dict(pgd),
                      policy.as_dict(), run.model_digest, record, key, path)


def load_gate_result(path: str | Path) -> GateResult:
    """A gate result from the ``evaluation.json`` an evaluation wrote."""
    try:
        record = safeio.loads(Path(path).read_text(encoding="utf-8"))
        p = record["predicate"]
        return GateResult(bool(p["passed"]), tuple(p["reasons"]), float(p["cleanAccuracy"]), int(p["holdout"]),
                          dict(p["attackSuccess"]), dict(p["fgsmAccuracy"]), dict(p["pgdAccuracy"]), dict(p["policy"]),
                          str(record["subject"][0]["digest"]["sha256"]), record, p.get("recordKey"), Path(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactReadError(f"unreadable evaluation record: {exc}", artifact=path) from exc
