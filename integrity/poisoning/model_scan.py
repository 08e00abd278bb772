"""Foundation-model backdoor scan: reverse-engineer a minimal trigger per output region, test for an outlier.

Neural Cleanse (Wang et al., S&P 2019) finds, for every class, the smallest mask ``m`` and pattern
``p`` that send clean inputs ``(1 - m) * x + m * p`` to that class; a backdoor's target class
needs a far smaller mask than the others, and a robust outlier test (anomaly index: the median
absolute deviation of the mask sizes, as in the paper) reveals it. A foundation model is an
*encoder* without this dataset's classes, so the classes are pseudo-classes: the regions of the
encoder's embedding space that clean probe inputs fall into (deterministic k-means), with a
nearest-centroid head. A backdoored encoder maps triggered inputs into one region whatever the
input, so that region's minimal trigger is small: the same outlier test applies. The score is the
anomaly index of the smallest mask (Neural Cleanse flags > 2); the reversed trigger is kept for
the report. Deterministic: farthest-point initialisation, full-batch Adam, no sampling.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from integrity.poisoning.policy import ModelScanPolicy, PolicyResult

MAD_SCALE = 1.4826


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

    def summary(self) -> dict[str, Any]:
        return {"score": round(self.score, 4), "passed": self.verdict.passed, "reason": self.verdict.reason,
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


def anomaly_index(norms: np.ndarray) -> float:
    """How far the smallest mask lies below the others, in robust standard deviations."""
    median = float(np.median(norms))
    mad = float(np.median(np.abs(norms - median))) * MAD_SCALE
    return (median - float(norms.min())) / max(mad, 1e-6 * max(median, 1e-6))


def reverse_engineer_triggers(embed: Callable[[Any], Any], probes: np.ndarray, *, regions: int = 6,
                              steps: int = 60, sparsity: float = 0.01, lr: float = 0.1, device: str = "cpu",
                              classifier: bool = False) -> TriggerSearch:
    """Minimal mask + pattern per embedding region (Neural Cleanse on a nearest-centroid head).

    ``classifier=True``: ``embed`` already returns class logits; its classes are the regions.
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

    norms, success, masks, patterns = [], [], [], []
    for region in range(regions):
        others = torch.as_tensor(assigned != region, device=device)
        inputs = x[others] if int(others.sum()) > 0 else x
        target = torch.full((len(inputs),), region, device=device, dtype=torch.long)
        mask_logit = torch.full((1, 1, height, width), -3.0, device=device, requires_grad=True)
        pattern_logit = torch.zeros((1, channels, height, width), device=device, requires_grad=True)
        optimiser = torch.optim.Adam([mask_logit, pattern_logit], lr=lr)
        best = (float(height * width), 0.0, torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach())
        weight = sparsity
        for _ in range(steps):
            optimiser.zero_grad()
            mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
            out = logits(embed((1 - mask) * inputs + mask * pattern))
            loss = torch.nn.functional.cross_entropy(out, target) + weight * mask.sum()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            with torch.no_grad():
                hit = float((out.argmax(1) == target).float().mean())
                size = float(mask.sum())
            if hit >= 0.9 and size < best[0]:
                best = (size, hit, mask.detach().clone(), pattern.detach().clone())
            # Neural Cleanse's schedule: press for a smaller mask while the trigger works, relax when not
            weight = weight * 1.2 if hit >= 0.9 else max(weight / 1.2, sparsity / 100)
        if best[1] == 0.0:  # never reached: record the full-image budget
            with torch.no_grad():
                mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
                hit = float((logits(embed((1 - mask) * inputs + mask * pattern)).argmax(1) == target).float().mean())
            best = (float(height * width), hit, mask.detach(), pattern.detach())
        norms.append(best[0])
        success.append(best[1])
        masks.append(best[2][0, 0].cpu().numpy())
        patterns.append(best[3][0].squeeze(0).cpu().numpy())
    suspect = int(np.argmin(norms))
    return TriggerSearch(masks[suspect], patterns[suspect], suspect, norms, success)


def scan_encoder(embed: Callable[[Any], Any], probes: np.ndarray, *, policy: ModelScanPolicy | None = None,
                 regions: int = 6, steps: int = 60, device: str = "cpu", classifier: bool = False,
                 lr: float = 0.1) -> ModelScan:
    """Score an encoder (``embed``: N x C x H x W tensors in [0, 1] -> N x D) for an implanted backdoor."""
    started = time.perf_counter()
    policy = policy or ModelScanPolicy()
    trigger = reverse_engineer_triggers(embed, probes, regions=regions, steps=steps, device=device,
                                        classifier=classifier, lr=lr)
    score = anomaly_index(np.asarray(trigger.mask_norms))
    return ModelScan(score, policy.check(score), trigger, time.perf_counter() - started)
