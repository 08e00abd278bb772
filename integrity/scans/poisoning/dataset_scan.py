"""The dataset scan: feature views -> per-sample scores -> flags and a verdict by policy."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from integrity.errors import UsageError
from integrity.scans.poisoning.classifier import classifier_disagreement, implausibility
from integrity.scans.poisoning.extremes import EXTREME_SCORE, ExtremeCells, robust_view
from integrity.scans.poisoning.features import FoundationModel, pick_device
from integrity.scans.poisoning.perturbation import PerturbationScores, perturbation_scores
from integrity.scans.poisoning.policy import PolicyResult, ScanPolicy
from integrity.scans.poisoning.scores import COHERENT_Z, ViewScores, combine, describe, pca_reduce, view_scores
from integrity.scans.poisoning.triggers import shared_extremes

RAW_DIMS = 128  # raw inputs larger than this are PCA-reduced (distances barely change)
FOUNDATION_DIMS = 64
#: Fewer samples than this give no verdict: a flag rate of a handful of samples means nothing.
MIN_SAMPLES = 10


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
    #: Tables: the cells beyond their column's robust bounds (their rows are flagged): see extremes.py.
    extremes: ExtremeCells | None = None

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
                  foundation_features: np.ndarray | None = None, table: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """The views a scan compares: raw inputs (images in [0, 1] unscaled, so a small trigger cannot
    dominate through standardisation; tables robust-scaled with extreme cells winsorised, or ``table``
    where :func:`~integrity.scans.poisoning.extremes.robust_view` already made it) and the foundation
    model's embedding."""
    views: dict[str, np.ndarray] = {}
    if _as_images(x):
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        views["raw"] = pca_reduce(flat, RAW_DIMS, device=device) if flat.shape[1] > RAW_DIMS else flat
    else:
        views["raw"] = table if table is not None else robust_view(np.asarray(x).reshape(len(x), -1))[0]
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


def _check_input(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y) or len(y) == 0:
        raise UsageError(f"scan needs as many labels as samples (got {len(x)} samples, {len(y)} labels)")
    if len(y) < MIN_SAMPLES:
        raise UsageError(f"too small to screen: {len(y)} samples, need at least {MIN_SAMPLES}",
                         advice="Screen the dataset together with the rest of its drop, or review it by hand.")
    if len(np.unique(y)) < 2:
        raise UsageError("scan needs at least two classes: label consistency compares classes")
    finite = np.isfinite(x.reshape(len(x), -1))
    if not finite.all():
        row, column = (int(v) for v in np.argwhere(~finite)[0])
        raise UsageError(f"scan input has {int((~finite).sum())} NaN or infinite value(s) (first: sample {row}, "
                         f"feature {column}): the screen cannot place them",
                         advice="Fix or blank the cells (a table's blank cells are filled with the column median).")


def _table_evidence(z: np.ndarray, y: np.ndarray, extra: dict[str, Any]
                    ) -> tuple[np.ndarray | None, np.ndarray, dict[int, dict[str, Any]]]:
    """Tables: the out-of-fold classifier's label evidence (classifier.py) and feature-value triggers."""
    label_evidence = None
    found = classifier_disagreement(z, y)
    if found is not None:
        label_evidence, extra["label_classifier"] = found
    trigger_scores, trigger_classes = shared_extremes(z, y)  # triggers on feature values
    if trigger_classes:
        extra["feature_triggers"] = {str(c): v for c, v in trigger_classes.items()}
    return label_evidence, trigger_scores, trigger_classes


def _with_extremes(verdict: PolicyResult, cells: ExtremeCells, columns: Sequence[str] | None) -> PolicyResult:
    if not len(cells.rows):
        return verdict
    first = cells.describe(int(cells.rows[0]), list(columns) if columns is not None else None).split("; ")[0]
    return PolicyResult(verdict.passed, f"{verdict.reason}; {len(cells.flagged_rows)} row(s) with extreme values "
                                        f"flagged on their own (first: {first})")


def scan_dataset(x: np.ndarray, y: np.ndarray, *, foundation: FoundationModel | None = None,
                 policy: ScanPolicy | None = None, device: str | None = None,
                 foundation_features: np.ndarray | None = None, k: int = 20,
                 columns: Sequence[str] | None = None) -> DatasetScan:
    """Score every sample of (x, y), flag by ``policy`` and judge the dataset.

    A table's rows with extreme cells (extremes.py) are flagged whatever their other scores; ``columns``
    names a table's features in the reasons.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    _check_input(x, y)
    policy = policy or ScanPolicy()
    device = pick_device(device)
    started = time.perf_counter()
    table, cells = robust_view(x.reshape(len(x), -1)) if not _as_images(x) else (None, None)
    views = feature_views(x, foundation=foundation, device=device, foundation_features=foundation_features,
                          table=table)
    scored = [view_scores(name, z, y, k=k, device=device) for name, z in views.items()]
    perturbed = perturbation_scores(x, device=device)
    extra: dict[str, Any] = {}
    label_evidence, trigger_scores, trigger_classes = (None, None, {}) if _as_images(x) else \
        _table_evidence(views["raw"], y, extra)
    if label_evidence is not None:
        scored = [_confirmed_by_classifier(v, y, label_evidence) for v in scored]
    # Where the classifier judges labels, it replaces the neighbour test's label evidence; the backdoor
    # rules (residual splits, seeded groups) stay.
    scores = np.maximum(combine(scored, labels=None if label_evidence is None else y), perturbed.combined)
    if label_evidence is not None:
        scores = np.maximum(scores, label_evidence)
    if trigger_scores is not None:
        scores = np.maximum(scores, trigger_scores)
    if cells is not None and len(cells.rows):
        scores[cells.flagged_rows] = np.maximum(scores[cells.flagged_rows], EXTREME_SCORE)
        extra["extreme_values"] = cells.details(list(columns) if columns is not None else None)
    split_classes = sorted({c for v in scored for c in v.split_classes} | set(trigger_classes))
    flagged = policy.flags(scores, y, split_classes)
    if cells is not None:
        flagged[cells.flagged_rows] = True
    verdict = policy.check(int(flagged.sum()), len(y), split_classes)
    verdict = _with_extremes(verdict, cells, columns) if cells is not None else verdict
    return DatasetScan(scores, flagged, verdict, scored, y, device, time.perf_counter() - started,
                       {"policy": {"flag_threshold": policy.flag_threshold,
                                   "max_flagged_fraction": policy.max_flagged_fraction,
                                   "fail_on_backdoor_split": policy.fail_on_backdoor_split,
                                   "backdoor_class_threshold": policy.backdoor_class_threshold}, **extra},
                       perturbed, cells)
