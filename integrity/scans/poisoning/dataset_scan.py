"""The dataset scan: feature views -> per-sample scores -> flags and a verdict by policy."""

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from integrity.errors import UsageError
from integrity.scans.poisoning.classifier import classifier_disagreement, implausibility
from integrity.scans.poisoning.features import FoundationModel, pick_device
from integrity.scans.poisoning.perturbation import PerturbationScores, perturbation_scores
from integrity.scans.poisoning.policy import PolicyResult, ScanPolicy
from integrity.scans.poisoning.scores import COHERENT_Z, ViewScores, combine, describe, pca_reduce, view_scores
from integrity.scans.poisoning.triggers import shared_extremes

RAW_DIMS = 128  # raw inputs larger than this are PCA-reduced (distances barely change)
FOUNDATION_DIMS = 64


@dataclass(frozen=True)
class DatasetScan:
    """Per-sample scores, flags and the policy's verdict for one dataset."""

    scores: np.ndarray
    flagged: np.ndarray
    verdict: PolicyResult
    views: list[ViewScores]
    labels: np.ndarray
    device: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    #: Label-free evidence of a perturbation after capture (clean-label poisons): see perturbation.py.
    perturbation: PerturbationScores | None = None

    @property
    def split_classes(self) -> list[int]:
        """Classes with a backdoor signature: a residual split in a view, or a trigger on feature values."""
        triggers = {int(c) for c in (self.details.get("feature_triggers") or {})}
        return sorted({c for v in self.views for c in v.split_classes} | triggers)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": len(self.scores),
            "flagged": int(self.flagged.sum()),
            "flagged_fraction": float(self.flagged.mean()) if len(self.flagged) else 0.0,
            "passed": self.verdict.passed,
            "reason": self.verdict.reason,
            "backdoor_classes": self.split_classes,
            "views": [v.view for v in self.views],
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "per_class": {
                int(c): {"samples": int((self.labels == c).sum()),
                         "flagged": int(self.flagged[self.labels == c].sum())}
                for c in np.unique(self.labels)
            },
            "evidence": {**describe(self.views),
                         "perturbation": self.perturbation.details if self.perturbation is not None else None},
            **self.details,
        }


def _as_images(x: np.ndarray) -> bool:
    return x.ndim in (3, 4)


def feature_views(x: np.ndarray, *, foundation: FoundationModel | None, device: str,
                  foundation_features: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The views a scan compares: raw inputs (images in [0, 1] unscaled, so a small trigger cannot
    dominate through standardisation; tabular robust-scaled) and the foundation model's embedding."""
    views: dict[str, np.ndarray] = {}
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if _as_images(x):
        views["raw"] = pca_reduce(flat, RAW_DIMS, device=device) if flat.shape[1] > RAW_DIMS else flat
    else:
        median = np.median(flat, 0)
        scale = np.subtract(*np.percentile(flat, [75, 25], axis=0))
        views["raw"] = (flat - median) / np.where(scale > 1e-12, scale, 1.0)
    if foundation_features is None and foundation is not None and _as_images(x):
        foundation_features = foundation.embed(x)
    if foundation_features is not None:
        views["foundation"] = pca_reduce(foundation_features, FOUNDATION_DIMS, device=device, standardize=True)
    return views


#: A group's labels are plausible to the label classifier when its median row gets p(label) >= 0.5.
_PLAUSIBLE_SCORE = float(implausibility(0.5))


def _confirmed_by_classifier(view: ViewScores, y: np.ndarray, label_evidence: np.ndarray) -> ViewScores:
    """Tables: keep a neighbour-test backdoor signature only where the label classifier doubts the group too.

    Two rules name a group: "label-inconsistent group" (it looks like other classes) and "coherent
    residual group" (a few members share a residual, as a stamped trigger would). In a small class
    (fewer members than the neighbour test's k) a natural sub-group looks inconsistent to the
    neighbour test alone, because its same-label neighbours run out; a class with a few
    near-identical rows (a writing style, a template) shares a residual. The out-of-fold classifier
    has neither bias, so a group whose labels it finds plausible is not a backdoor signature (the
    split's scores go too). Feature-value triggers (triggers.py) are judged on their own.
    """
    split = view.split.copy()
    kept = dict(view.split_classes)
    stats = {c: dict(v) for c, v in view.class_stats.items()}
    for label, found in view.split_classes.items():
        members = y == label
        if found.get("rule") == "label-inconsistent group":
            group = members & (view.split >= 3.0)
        elif found.get("rule") == "coherent residual group":
            group = members & (view.seeded >= COHERENT_Z)
        else:
            continue
        if group.any() and float(np.median(label_evidence[group])) < _PLAUSIBLE_SCORE:
            split[members] = -np.inf
            del kept[label]
            stats.setdefault(label, {})["dismissed"] = "the label classifier finds the group's labels plausible"
    return replace(view, split=split, split_classes=kept, class_stats=stats)


def scan_dataset(x: np.ndarray, y: np.ndarray, *, foundation: FoundationModel | None = None,
                 policy: ScanPolicy | None = None, device: str | None = None,
                 foundation_features: np.ndarray | None = None, k: int = 20) -> DatasetScan:
    """Score every sample of (x, y), flag by ``policy`` and judge the dataset."""
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y) or len(y) == 0:
        raise UsageError(f"scan needs as many labels as samples (got {len(x)} samples, {len(y)} labels)")
    if len(np.unique(y)) < 2:
        raise UsageError("scan needs at least two classes: label consistency compares classes")
    if not np.all(np.isfinite(x)):
        raise UsageError("scan input has NaN or infinite values")
    policy = policy or ScanPolicy()
    device = pick_device(device)
    started = time.perf_counter()
    views = feature_views(x, foundation=foundation, device=device, foundation_features=foundation_features)
    scored = [view_scores(name, z, y, k=k, device=device) for name, z in views.items()]
    perturbed = perturbation_scores(x, device=device)
    extra: dict[str, Any] = {}
    label_evidence = None
    trigger_scores: np.ndarray | None = None
    trigger_classes: dict[int, dict[str, Any]] = {}
    if not _as_images(x):  # tables: an out-of-fold classifier judges each label (classifier.py)
        found = classifier_disagreement(views["raw"], y)
        if found is not None:
            label_evidence, extra["label_classifier"] = found
        trigger_scores, trigger_classes = shared_extremes(views["raw"], y)  # triggers on feature values
        if trigger_classes:
            extra["feature_triggers"] = {str(c): v for c, v in trigger_classes.items()}
    if label_evidence is not None:
        scored = [_confirmed_by_classifier(v, y, label_evidence) for v in scored]
    # Where the classifier judges labels, it replaces the neighbour test's label evidence; the backdoor
    # rules (residual splits, seeded groups) stay.
    scores = np.maximum(combine(scored, labels=None if label_evidence is None else y), perturbed.combined)
    if label_evidence is not None:
        scores = np.maximum(scores, label_evidence)
    if trigger_scores is not None:
        scores = np.maximum(scores, trigger_scores)
    split_classes = sorted({c for v in scored for c in v.split_classes} | set(trigger_classes))
    flagged = policy.flags(scores, y, split_classes)
    verdict = policy.check(int(flagged.sum()), len(y), split_classes)
    return DatasetScan(scores, flagged, verdict, scored, y, device, time.perf_counter() - started,
                       {"policy": {"flag_threshold": policy.flag_threshold,
                                   "max_flagged_fraction": policy.max_flagged_fraction,
                                   "fail_on_backdoor_split": policy.fail_on_backdoor_split,
                                   "backdoor_class_threshold": policy.backdoor_class_threshold}, **extra},
                       perturbed)
