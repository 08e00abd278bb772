"""Perturbation scores: is a (correctly labelled) image one that something optimised, not one that was captured?

Clean-label poisons (Poison Frogs' feature collision) are correctly labelled images with a small
perturbation that drags their foundation-model features onto a target instance of another class.
Label-consistency tests see them only as long as their features still sit among the other class;
when many poisons share a base class they support each other as neighbours and look consistent.
What they cannot hide is the perturbation itself, which shows in two label-free ways:

* **Encoding residual** (forensics on the value alphabet): captured images are stored quantised
  (8-bit, or scikit-learn's digits on 17 grey levels), so every clean sample's values come from a
  small alphabet shared by the whole dataset; a perturbation optimised in floating point leaves
  values no other sample uses. A sample with at least two off-alphabet values is an encoding
  anomaly (score :data:`ENCODING_SCORE`). The test is active only where the dataset is quantised
  (the alphabet is small and almost every sample lies on it); it is evaded by an attacker who
  rounds the poison to the grid, which is what the next score is for.
* **Off-manifold energy** (Hendrycks and Gimpel 2017): gradient-crafted perturbations put abnormal
  energy into the low-variance principal components of the input distribution, where natural
  images have almost none. A sample's score is the norm of its whitened coordinates beyond the
  components that explain 95 % of the variance (eigenvalues floored at 1e-3 of the largest),
  on a log scale and robust-z scored over the dataset; it is rescaled so that the policy's flag
  bar sits at :data:`OFF_MANIFOLD_Z` robust SDs, because natural outliers give this statistic a
  heavier clean tail than the neighbourhood scores have. It counts only at or above the bar and
  is capped just above it (:data:`OFF_MANIFOLD_CAP`), so it adds flags without reordering the
  label-consistency evidence below the bar.

Both are deterministic (exact counts; float64 eigendecomposition) and cheap next to the embedding.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENCODING_SCORE = 6.0  # an encoding anomaly is strong evidence: far above the flag bar
ALPHABET_MIN_SHARE = 0.005  # a value belongs to the alphabet when this share of samples (and >= 3) use it
MAX_ALPHABET = 4096  # more distinct common values than this: the data is not quantised, the test is off
MIN_ON_GRID = 0.5  # a majority of samples must lie wholly on the alphabet for the test to apply
OFF_MANIFOLD_VARIANCE = 0.95
OFF_MANIFOLD_FLOOR = 1e-3
OFF_MANIFOLD_Z = 5.0  # robust z of the off-manifold statistic that maps onto the policy's flag bar
FLAG_BAR = 3.5  # the default policy's flag threshold, which OFF_MANIFOLD_Z is mapped onto
OFF_MANIFOLD_CAP = 4.5  # off-manifold evidence ranks just above the bar, below strong label evidence
MAX_DIMS = 4096  # larger inputs skip the off-manifold test (the covariance would be D x D)


@dataclass(frozen=True)
class PerturbationScores:
    """Label-free evidence that a sample was perturbed after capture."""

    encoding: np.ndarray  # ENCODING_SCORE for encoding anomalies, -inf otherwise (or when the test is off)
    off_manifold: np.ndarray  # rescaled robust z of the off-manifold energy (-inf when the test is off)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def combined(self) -> np.ndarray:
        result: np.ndarray = np.maximum(self.encoding, self.off_manifold)
        return result


def encoding_residual(flat: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Per sample, the number of values outside the dataset's common value alphabet (None: test off)."""
    import torch

    n = len(flat)
    values = torch.as_tensor(np.ascontiguousarray(flat, dtype=np.float32)).reshape(-1)
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    need = max(3, int(np.ceil(ALPHABET_MIN_SHARE * n)))
    common = counts >= need
    alphabet = int(common.sum())
    if alphabet > MAX_ALPHABET or alphabet == 0:
        return np.zeros(n, dtype=np.int64), {"active": False, "alphabet": alphabet,
                                              "why": "the values are not quantised to a small alphabet"}
    off = (~common[inverse]).reshape(n, -1).sum(1).numpy()
    on_grid = float((off <= 1).mean())
    if on_grid < MIN_ON_GRID:
        return np.zeros(n, dtype=np.int64), {"active": False, "alphabet": alphabet, "on_grid": round(on_grid, 4),
                                              "why": "too few samples lie on one value alphabet"}
    return off.astype(np.int64), {"active": True, "alphabet": alphabet, "on_grid": round(on_grid, 4),
                                  "anomalies": int((off >= 2).sum())}


def off_manifold_energy(flat: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Robust z of log ||whitened minor-component coordinates|| (Hendrycks and Gimpel 2017)."""
    import torch

    from integrity.scans.poisoning.scores import robust_z

    data = torch.as_tensor(np.asarray(flat, dtype=np.float64), device=device)
    data = data - data.mean(0)
    cov = data.T @ data / max(1, data.shape[0] - 1)
    eigenvalues, vectors = torch.linalg.eigh(cov)
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0.0), vectors.flip(1)
    explained = torch.cumsum(eigenvalues, 0) / eigenvalues.sum().clamp_min(1e-300)
    start = int(torch.searchsorted(explained, torch.tensor(OFF_MANIFOLD_VARIANCE, dtype=explained.dtype,
                                                               device=device)))
    start = min(start + 1, data.shape[1] - 1)
    floor = eigenvalues[0].clamp_min(1e-300) * OFF_MANIFOLD_FLOOR
    whitened = (data @ vectors[:, start:]) ** 2 / torch.maximum(eigenvalues[start:], floor)
    energy = whitened.sum(1).clamp_min(1e-300).sqrt().log().cpu().numpy()
    result: np.ndarray = robust_z(energy)
    return result


def perturbation_scores(x: np.ndarray, *, device: str = "cpu") -> PerturbationScores:
    """Encoding-residual and off-manifold scores for images (tabular data: both tests off)."""
    n = len(x)
    off = np.full(n, -np.inf)
    if x.ndim not in (3, 4):
        return PerturbationScores(off, off.copy(), {"active": False, "why": "not images"})
    flat = np.asarray(x).reshape(n, -1)
    counts, encoding_details = encoding_residual(flat)
    encoding = np.where(counts >= 2, ENCODING_SCORE, -np.inf) if encoding_details["active"] else off.copy()
    if flat.shape[1] <= MAX_DIMS and n > flat.shape[1] // 4:
        # Evidence only at or above the bar, and capped just above it: below the bar this statistic's
        # heavy clean tail would crowd the ranking of the label-consistency scores (label flips), and
        # above it a natural outlier should not outrank strong label evidence.
        manifold = off_manifold_energy(flat, device=device) * (FLAG_BAR / OFF_MANIFOLD_Z)
        manifold = np.where(manifold >= FLAG_BAR, np.minimum(manifold, OFF_MANIFOLD_CAP), -np.inf)
        manifold_details: dict[str, Any] = {"active": True, "flagged_at_default_bar": int((manifold >= FLAG_BAR).sum())}
    else:
        manifold = off.copy()
        manifold_details = {"active": False, "why": f"{flat.shape[1]} input dimensions for {n} samples"}
    return PerturbationScores(encoding, manifold, {"encoding": encoding_details, "off_manifold": manifold_details})
