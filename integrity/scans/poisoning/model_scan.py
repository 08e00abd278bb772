"""Foundation-model backdoor scan: reverse-engineer a minimal trigger per output region, test for an outlier.

Neural Cleanse (Wang et al., S&P 2019) finds, for every class, the smallest mask ``m`` and pattern
``p`` that send clean inputs ``(1 - m) * x + m * p`` to that class; a backdoor's target class
needs a far smaller mask than the others, and a robust outlier test (anomaly index: the median
absolute deviation of the mask sizes, as in the paper) reveals it. A foundation model is an
*encoder* without this dataset's classes, so the classes are pseudo-classes: the regions of the
encoder's embedding space that clean probe inputs fall into (deterministic k-means), with a
nearest-centroid head. A backdoored encoder maps triggered inputs into one region whatever the
input, so that region's minimal trigger is small: the same outlier test applies.

Scores: with a class head (``classifier=True``), the *mask ratio*, median over smallest mask size
(scale-free; with ten classes it separates backdoored digits backbones from clean ones better than
the MAD-based index, whose denominator is noisy when natural mask sizes vary by class); on a few
embedding regions, where the median of four unevenly reachable regions is itself noisy, Neural
Cleanse's anomaly index of the smallest mask (flags > 2). All regions are searched together in
one batched optimisation; a trigger counts once it moves 80 % of the probes (with ~100 probes,
0.9 inflates natural masks more than backdoor masks). The reversed trigger is kept for the
report. Deterministic: farthest-point initialisation, full-batch Adam, no sampling.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from integrity.scans.poisoning.policy import ModelScanPolicy, PolicyResult

MAD_SCALE = 1.4826
SUCCESS = 0.8  # share of probes a reversed trigger must move (small probe sets: 0.9 overstates natural masks)


@dataclass(frozen=True)
class TriggerSearch:
    """The reversed trigger of the most suspicious region, and every region's minimal mask size."""

    mask: np.ndarray  # H x W in [0, 1]
    pattern: np.ndarray  # H x W (or C x H x W) in [0, 1]
    region: int
    mask_norms: list[float]  # per region: L1 norm of the minimal mask (pixels)
    success: list[float]  # per region: share of probes the reversed trigger moves there


@dataclass(frozen=True)
class ModelScan:
    score: float
    verdict: PolicyResult
    trigger: TriggerSearch
    seconds: float
    kind: str = "anomaly_index"  # what ``score`` is: "mask_ratio" (class head) or "anomaly_index" (regions)

    def summary(self) -> dict[str, Any]:
        norms = np.asarray(self.trigger.mask_norms)
        return {"score": round(self.score, 4), "score_kind": self.kind,
                "anomaly_index": round(anomaly_index(norms), 4), "mask_ratio": round(mask_ratio(norms), 4),
                "passed": self.verdict.passed, "reason": self.verdict.reason,
                "suspect_region": self.trigger.region,
                "mask_norms": [round(v, 3) for v in self.trigger.mask_norms],
                "attack_success": [round(v, 3) for v in self.trigger.success], "seconds": round(self.seconds, 3)}


def _kmeans(features: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Deterministic k-means (farthest-point initialisation); returns the centroids."""
    centres = [features[0]]
    for _ in range(1, k):
        distance = np.min([((features - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(features[int(np.argmax(distance))])
    centroids = np.stack(centres)
    for _ in range(iterations):
        assign = np.argmin(((features[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        updated = np.stack([features[assign == j].mean(0) if np.any(assign == j) else centroids[j] for j in range(k)])
        if np.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


def mask_ratio(norms: np.ndarray) -> float:
    """How many times smaller the smallest mask is than the median one (scale-free; 1 = no outlier)."""
    return float(np.median(norms)) / max(float(np.min(norms)), 1e-6)


def anomaly_index(norms: np.ndarray) -> float:
    """How far the smallest mask lies below the others, in robust standard deviations."""
    median = float(np.median(norms))
    mad = float(np.median(np.abs(norms - median))) * MAD_SCALE
    return (median - float(norms.min())) / max(mad, 1e-6 * max(median, 1e-6))


def reverse_engineer_triggers(embed: Callable[[Any], Any], probes: np.ndarray, *, regions: int = 6,
                              steps: int = 60, sparsity: float = 0.01, lr: float = 0.1, device: str = "cpu",
                              classifier: bool = False, success: float = SUCCESS) -> TriggerSearch:
    """Minimal mask + pattern per embedding region (Neural Cleanse on a nearest-centroid head).

    ``classifier=True``: ``embed`` already returns class logits; its classes are the regions.
    All regions are optimised together (one batched forward pass per step; each region keeps its
    own mask, pattern and sparsity weight, so the result is that of independent searches). A mask
    counts once its trigger sends ``success`` of the probes from other regions to its region.
    """
    import torch

    x = torch.as_tensor(np.asarray(probes, dtype=np.float32), device=device)
    if x.ndim == 3:
        x = x[:, None]
    _, channels, height, width = x.shape
    with torch.no_grad():
        clean = embed(x).double().cpu().numpy()
    if classifier:
        regions = clean.shape[1]
        assigned = clean.argmax(1)

        def logits(features: Any) -> Any:
            return features
    else:
        centroids_np = _kmeans(clean, regions)
        assigned = np.argmin(((clean[:, None] - centroids_np[None]) ** 2).sum(-1), axis=1)
        scale = float(np.median(((clean - centroids_np[assigned]) ** 2).sum(1))) or 1.0
        centroids = torch.as_tensor(centroids_np, dtype=torch.float32, device=device)

        def logits(features: Any) -> Any:
            return -torch.cdist(features.float(), centroids) ** 2 / scale

    # probes already in a region do not count for it (with none elsewhere, all of them count)
    others = torch.as_tensor(assigned[None, :] != np.arange(regions)[:, None], device=device)
    others[others.sum(1) == 0] = True
    counted = others.to(torch.float32)
    per_region = counted.sum(1)
    target = torch.arange(regions, device=device).repeat_interleave(len(x))
    mask_logit = torch.full((regions, 1, height, width), -3.0, device=device, requires_grad=True)
    pattern_logit = torch.zeros((regions, channels, height, width), device=device, requires_grad=True)
    optimiser = torch.optim.Adam([mask_logit, pattern_logit], lr=lr)
    weight = torch.full((regions,), sparsity, device=device)
    best_size = torch.full((regions,), float(height * width), device=device)
    best_hit = torch.zeros(regions, device=device)
    best_mask = torch.sigmoid(mask_logit).detach().clone()
    best_pattern = torch.sigmoid(pattern_logit).detach().clone()
    for _ in range(steps):
        optimiser.zero_grad()
        mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        stamped = (1 - mask[:, None]) * x[None] + mask[:, None] * pattern[:, None]
        out = logits(embed(stamped.reshape(-1, channels, height, width)))
        loss_each = torch.nn.functional.cross_entropy(out, target, reduction="none").reshape(regions, -1)
        size = mask.reshape(regions, -1).sum(1)
        loss = ((loss_each * counted).sum(1) / per_region + weight * size).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        with torch.no_grad():
            hit = ((out.argmax(1) == target).reshape(regions, -1).to(torch.float32) * counted).sum(1) / per_region
            better = (hit >= success) & (size < best_size)
            best_size = torch.where(better, size, best_size)
            best_hit = torch.where(better, hit, best_hit)
            best_mask[better] = mask[better]
            best_pattern[better] = pattern[better]
            # Neural Cleanse's schedule: press for a smaller mask while the trigger works, relax when not
            weight = torch.where(hit >= success, weight * 1.2, torch.clamp(weight / 1.2, min=sparsity / 100))
    with torch.no_grad():  # regions never reached keep the full-image budget and the last trigger's success
        mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        stamped = (1 - mask[:, None]) * x[None] + mask[:, None] * pattern[:, None]
        hit = ((logits(embed(stamped.reshape(-1, channels, height, width))).argmax(1) == target)
               .reshape(regions, -1).to(torch.float32) * counted).sum(1) / per_region
        never = best_hit == 0
        best_hit = torch.where(never, hit, best_hit)
        best_mask[never] = mask[never]
        best_pattern[never] = pattern[never]
    norms = [float(v) for v in best_size.cpu()]
    suspect = int(np.argmin(norms))
    return TriggerSearch(best_mask[suspect, 0].cpu().numpy(), best_pattern[suspect].squeeze(0).cpu().numpy(),
                         suspect, norms, [float(v) for v in best_hit.cpu()])


def scan_encoder(embed: Callable[[Any], Any], probes: np.ndarray, *, policy: ModelScanPolicy | None = None,
                 regions: int = 6, steps: int = 60, device: str = "cpu", classifier: bool = False,
                 lr: float = 0.1) -> ModelScan:
    """Score an encoder (``embed``: N x C x H x W tensors in [0, 1] -> N x D) for an implanted backdoor."""
    started = time.perf_counter()
    policy = policy or ModelScanPolicy()
    trigger = reverse_engineer_triggers(embed, probes, regions=regions, steps=steps, device=device,
                                        classifier=classifier, lr=lr)
    norms = np.asarray(trigger.mask_norms)
    kind = "mask_ratio" if classifier else "anomaly_index"
    score = mask_ratio(norms) if classifier else anomaly_index(norms)
    return ModelScan(score, policy.check(score, kind), trigger, time.perf_counter() - started, kind)
