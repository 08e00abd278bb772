"""Policies that turn per-sample scores and model-scan scores into flags and verdicts.

Small composable objects in the style of the trust policy: ``check()`` returns a result with a
reason, and an empty or nonsensical policy fails rather than passes.
"""

from dataclasses import dataclass

import numpy as np

from integrity.errors import UsageError


@dataclass(frozen=True)
class PolicyResult:
    passed: bool
    reason: str


@dataclass(frozen=True)
class ScanPolicy:
    """Flag samples whose score reaches ``flag_threshold``; fail the dataset when too many are flagged
    or when a class shows a backdoor split (poisons from other classes sharing a trigger)."""

    flag_threshold: float = 3.5
    max_flagged_fraction: float = 0.02
    fail_on_backdoor_split: bool = True
    #: In a class that carries a backdoor signature the trigger is established, so suspicious members
    #: are removed at a lower bar: a handful of poisons left behind is enough to keep a backdoor alive.
    backdoor_class_threshold: float = 2.5

    def __post_init__(self) -> None:
        if not np.isfinite(self.flag_threshold):
            raise UsageError("scan policy: flag_threshold must be a finite number")
        if not 0.0 <= self.max_flagged_fraction < 1.0:
            raise UsageError("scan policy: max_flagged_fraction must be in [0, 1)")

    def flags(self, scores: np.ndarray, labels: np.ndarray | None = None,
              backdoor_classes: list[int] | None = None) -> np.ndarray:
        flagged: np.ndarray = np.asarray(scores) >= self.flag_threshold
        if labels is not None and backdoor_classes:
            in_backdoor_class = np.isin(labels, backdoor_classes)
            flagged |= in_backdoor_class & (np.asarray(scores) >= self.backdoor_class_threshold)
        return flagged

    def check(self, flagged: int, total: int, split_classes: list[int]) -> PolicyResult:
        if total <= 0:
            return PolicyResult(False, "nothing was scanned: an empty dataset proves nothing")
        fraction = flagged / total
        if self.fail_on_backdoor_split and split_classes:
            return PolicyResult(False, f"backdoor signature in class(es) {', '.join(map(str, split_classes))}: "
                                       f"a group of samples shares a trigger-like residual and is label-inconsistent; "
                                       f"{flagged}/{total} samples flagged ({fraction:.1%})")
        if fraction > self.max_flagged_fraction:
            return PolicyResult(False, f"{flagged}/{total} samples flagged ({fraction:.1%}), over the policy's "
                                       f"{self.max_flagged_fraction:.1%}")
        return PolicyResult(True, f"{flagged}/{total} samples flagged ({fraction:.1%}), within the policy's "
                                  f"{self.max_flagged_fraction:.1%}; no backdoor signature")


@dataclass(frozen=True)
class ModelScanPolicy:
    """A model is suspected backdoored when one class (or embedding region) needs a far smaller trigger.

    Two scores, by what the scan can see: with the model's own class head, how many times smaller
    the smallest reversed mask is than the median one (``max_mask_ratio``); on embedding regions of
    an encoder without a head (few, unevenly reachable regions), Neural Cleanse's anomaly index
    (``max_score``, the paper's threshold of 2).
    """

    max_score: float = 2.0
    max_mask_ratio: float = 1.5

    def check(self, score: float, kind: str = "anomaly_index") -> PolicyResult:
        if not np.isfinite(score):
            return PolicyResult(False, "the model scan produced no usable score")
        if kind not in ("anomaly_index", "mask_ratio"):
            return PolicyResult(False, f"unknown model-scan score kind {kind!r}")
        bar = self.max_mask_ratio if kind == "mask_ratio" else self.max_score
        name = "mask ratio" if kind == "mask_ratio" else "anomaly index"
        if score >= bar:
            return PolicyResult(False, f"backdoor suspected: {name} {score:.3f} >= {bar:.3f}")
        return PolicyResult(True, f"no backdoor found: {name} {score:.3f} < {bar:.3f}")
