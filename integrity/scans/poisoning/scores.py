"""Per-sample poisoning scores, computed batched in torch (CUDA when present, CPU otherwise).

Two scores per feature view, both label-aware but computed in a space the labels did not shape
(raw inputs, or a foundation model that never saw this dataset):

* **Neighbourhood label consistency** (deep k-NN, Peri et al. 2020, as a distance ratio): the mean
  distance to the k nearest samples with the *same* label over the mean distance to the k nearest
  samples with *other* labels. A flipped label, a backdoored input (an image of class s with a
  trigger, labelled t) and a feature-collision poison (its embedding sits among another class)
  are all closer to other labels than to their own. Robust z-scored over the dataset.
* **Residual split test** for backdoors whose poisons come from many source classes, where a
  per-class rank-1 spectral signature or 2-means activation clustering fails because the poisons
  look like nine different classes and, at high rates, support each other as neighbours. Each
  sample's *residual* is its feature vector minus the mean of its nearest other-label neighbours:
  subtracting the content a poison shares with its source class leaves the trigger, common to
  every poison whatever its source. Per class, the residuals are projected on their top
  principal direction and split in two (1-D 2-means); a class is *split* when the two groups are
  far apart and one group is markedly less label-consistent. Members of that group score by
  their position along the split.

The scores are deterministic: no random initialisation anywhere; float32 on the device, reductions
that decide flags in float64 on the host. CPU and CUDA agree to about 1e-4 (see docs/poisoning.md).
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAD_SCALE = 1.4826
#: The seeded score from which a member counts in a "coherent residual group".
COHERENT_Z = 6.0


@dataclass(frozen=True)
class ViewScores:
    """Scores of one feature view."""

    view: str
    consistency: np.ndarray  # robust z of log(same-label / other-label neighbour distance)
    seeded: np.ndarray  # robust z (within class) of the residual's agreement with the class's suspects
    split: np.ndarray  # position along a backdoor split: 3 at the split boundary (-inf outside split classes)
    split_classes: dict[int, dict[str, Any]] = field(default_factory=dict)
    class_stats: dict[int, dict[str, Any]] = field(default_factory=dict)


def robust_z(values: np.ndarray) -> np.ndarray:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * MAD_SCALE
    return (values - median) / (mad if mad > 1e-12 else 1.0)


def pca_reduce(x: np.ndarray, dims: int, *, device: str = "cpu", standardize: bool = False) -> np.ndarray:
    """Exact PCA (eigendecomposition of the covariance in float64): deterministic across devices."""
    import torch

    data = torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)
    data = data - data.mean(0)
    if standardize:
        data = data / data.std(0).clamp_min(1e-6)
    if data.shape[1] <= dims:
        return data.cpu().numpy()
    cov = data.T @ data / max(1, data.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)
    basis = vectors[:, -dims:].flip(1)
    # fix each component's sign so results do not depend on the eigensolver
    signs = torch.sign(basis[basis.abs().argmax(0), torch.arange(dims, device=device)])
    projected: np.ndarray = (data @ (basis * signs)).cpu().numpy()
    return projected


def _neighbours(z: np.ndarray, y: np.ndarray, k: int, device: str, chunk: int = 2048
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean distance to k same-label and k other-label neighbours, and the other-label neighbour ids."""
    import torch

    data = torch.as_tensor(z, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, device=device)
    norms = (data * data).sum(1)
    n = len(y)
    same_mean = np.empty(n)
    other_mean = np.empty(n)
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    k_same = max(1, min(k, int(present.min().item()) - 1))
    # A small dataset has fewer than k samples of other labels (a 16-image set, k = 20): take them all.
    k = max(1, min(k, n - int(present.max().item())))
    other_ids = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        d2 = (norms[rows, None] + norms[None, :] - 2.0 * data[rows] @ data.T).clamp_min(0.0)
        index = torch.arange(rows.start, rows.stop, device=device)
        d2[index - start, index] = float("inf")
        same = labels[rows, None] == labels[None, :]
        inf = torch.full_like(d2, float("inf"))
        d_same = torch.where(same, d2, inf).topk(k_same, dim=1, largest=False).values
        d_other, ids = torch.where(same, inf, d2).topk(k, dim=1, largest=False)
        same_mean[rows] = d_same.sqrt().mean(1).double().cpu().numpy()
        other_mean[rows] = d_other.sqrt().mean(1).double().cpu().numpy()
        other_ids[rows] = ids.cpu().numpy()
    return same_mean, other_mean, other_ids


def _two_means_1d(values: np.ndarray) -> np.ndarray:
    """Deterministic 1-D 2-means (initialised at the quartiles); True = the upper group."""
    low, high = np.quantile(values, [0.25, 0.75])
    upper: np.ndarray = values > (low + high) / 2
    for _ in range(100):
        if upper.all() or not upper.any():
            break
        low, high = values[~upper].mean(), values[upper].mean()
        new = values > (low + high) / 2
        if np.array_equal(new, upper):
            break
        upper = new
    return upper


def _seeded_agreement(residual: Any, consistency: np.ndarray, seed_z: float) -> np.ndarray:
    """How strongly each residual points where the class's least label-consistent members point.

    The suspects' summed residual estimates a shared trigger; each sample is compared with the sum
    *without itself* (leave-one-out), so a suspect in a clean class, whose residual shares nothing
    with the others, gains nothing from having been a suspect.
    """
    import torch

    suspects = torch.as_tensor(consistency >= seed_z, device=residual.device)
    if int(suspects.sum()) < 3:
        return np.zeros(len(consistency))
    total = residual[suspects].sum(0)
    loo = total[None, :] - residual * suspects[:, None].to(residual.dtype)
    agreement = (residual * loo).sum(1) / loo.norm(dim=1).clamp_min(1e-12)
    result: np.ndarray = robust_z(agreement.cpu().numpy())
    return result


def view_scores(view: str, z: np.ndarray, y: np.ndarray, *, k: int = 20, residual_k: int = 3,
                min_separation: float = 4.0, min_gain: float = 1.0, min_group: float = 0.1, max_share: float = 0.6,
                seed_z: float = 1.5, coherent_z: float = COHERENT_Z, device: str = "cpu") -> ViewScores:
    """Consistency and residual-split scores for one view (``z``: N x D features)."""
    import torch

    z = np.asarray(z, dtype=np.float32)
    same, other, other_ids = _neighbours(z, y, k, device)
    consistency = robust_z(np.log(np.maximum(same, 1e-12) / np.maximum(other, 1e-12)))
    split = np.full(len(y), -np.inf)
    seeded = np.full(len(y), -np.inf)
    splits: dict[int, dict[str, Any]] = {}
    stats: dict[int, dict[str, Any]] = {}
    data = torch.as_tensor(z, dtype=torch.float64, device=device)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 8:
            continue
        ids = torch.as_tensor(other_ids[members, :residual_k], device=device)
        residual = data[torch.as_tensor(members, device=device)] - data[ids].mean(1)
        residual = residual - residual.mean(0)
        seeded[members] = _seeded_agreement(residual, consistency[members], seed_z)
        # A low-rate backdoor: too few poisons to split the class, but a coherent group of them
        # shares a residual (the trigger) far beyond what a clean class shows.
        coherent = int((seeded[members] >= coherent_z).sum())
        if coherent >= max(5, 0.03 * len(members)):
            splits[int(label)] = {"rule": "coherent residual group", "members": coherent, "size": len(members)}
        _, _, vh = torch.linalg.svd(residual, full_matrices=False)
        direction = vh[0] * torch.sign(vh[0][vh[0].abs().argmax()])
        position = (residual @ direction).cpu().numpy()
        upper = _two_means_1d(position)
        if upper.all() or not upper.any():
            continue
        pooled = float(np.sqrt(0.5 * (position[upper].var() + position[~upper].var()))) or 1e-12
        separation = float(position[upper].mean() - position[~upper].mean()) / pooled
        gain_upper = float(consistency[members][upper].mean() - consistency[members][~upper].mean())
        gain = abs(gain_upper)
        suspicious = upper if gain_upper > 0 else ~upper
        # A split needs a real group on each side: a handful of odd samples is not a backdoor
        # (they are still scored by the consistency test).
        big_enough = min(int(upper.sum()), int((~upper).sum())) >= max(8, min_group * len(members))
        stats[int(label)] = {"separation": separation, "gain": gain, "size": len(members)}
        if not big_enough:
            continue
        if separation >= min_separation and gain >= min_gain:
            rule = "label-inconsistent group"  # many-source poisons: they look like other classes
        elif separation >= 2 * min_separation:
            # Single-source poisons support each other as neighbours, so the consistency gap is
            # small or even reversed; but the trigger splits the class far more widely than any
            # natural sub-style does, and the poisons are the minority of their labelled class.
            rule = "wide split, smaller group"
            suspicious = upper if upper.sum() < (~upper).sum() else ~upper
        else:
            continue
        stats[int(label)].update({"suspicious": int(suspicious.sum()), "rule": rule})
        if suspicious.mean() > max_share:
            continue  # a "poison group" that is most of its class is a natural sub-style, not an attack
        # 3 at the boundary between the groups, 6 at the suspicious group's centre, 0 at the other's
        centre_s, centre_c = position[suspicious].mean(), position[~suspicious].mean()
        half = abs(centre_s - centre_c) / 2
        split[members] = 3.0 + 3.0 * (position - (centre_s + centre_c) / 2) * np.sign(centre_s - centre_c) / half
        splits[int(label)] = {**splits.get(int(label), {}), **stats[int(label)]}
    return ViewScores(view, consistency, seeded, split, splits, stats)


def combine(views: list[ViewScores], *, labels: np.ndarray | None = None) -> np.ndarray:
    """One score per sample: the strongest evidence any view gives (robust-z units).

    With ``labels`` (a classifier judges labels instead, see classifier.py) the neighbour test's label
    evidence is left out, and the seeded-group score counts only in classes that show a backdoor
    signature: on its own it is a per-class z that clean tables reach too.
    """
    if labels is None:
        parts = [np.maximum(np.maximum(v.consistency, v.split), v.seeded) for v in views]
    else:
        parts = [np.maximum(v.split, np.where(np.isin(labels, list(v.split_classes)), v.seeded, -np.inf))
                 for v in views]
    combined: np.ndarray = np.max(np.stack(parts), axis=0)
    return combined


def describe(views: list[ViewScores]) -> dict[str, Any]:
    return {v.view: {"split_classes": v.split_classes, "class_stats": v.class_stats} for v in views}
