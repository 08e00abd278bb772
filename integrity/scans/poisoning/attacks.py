"""Poisoning attacks, injected on purpose: the benchmark, the tests and the demo's poisoned drop use them.

Every attack takes training arrays and returns poisoned copies plus the indices it touched,
deterministically for a seed. Images are float arrays in [0, 1] shaped N x H x W or N x C x H x W;
tabular data is N x D (features standardised by the caller). ``rate`` is the fraction of the
*training set* that is poisoned (so all-to-one BadNets at 10 % on ten balanced classes makes
about half of the target class poisons, as in BackdoorBench).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ATTACKS = ("label_flip", "label_flip_pair", "badnets", "badnets_single", "blended", "clean_label",
           "clean_label_quantised")
BACKDOOR_ATTACKS = ("badnets", "badnets_single", "blended")


@dataclass(frozen=True)
class Poisoned:
    """Poisoned training data and what the attacker did (ground truth for scoring a defence)."""

    x: np.ndarray
    y: np.ndarray
    poison: np.ndarray  # bool mask over the training samples
    attack: str
    rate: float
    target: int | None = None
    source: int | None = None
    #: Apply the trigger to clean inputs (backdoor attacks): used to measure attack success.
    trigger: Callable[[np.ndarray], np.ndarray] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _count(rate: float, n: int) -> int:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    return max(1, round(rate * n))


def patch_trigger(x: np.ndarray, *, size: int | None = None, value: float = 1.0) -> np.ndarray:
    """BadNets: a small checkerboard patch in the bottom-right corner (tabular: a few features set high)."""
    out = x.copy()
    if out.ndim == 2:  # tabular: the last ``size`` features pushed to an extreme value
        width = size or max(2, out.shape[1] // 10)
        out[:, -width:] = value * 4.0
        return out
    h, w = out.shape[-2:]
    side = size or max(3, round(min(h, w) / 10))
    margin = 1 if min(h, w) > 8 else 0
    board = np.indices((side, side)).sum(0) % 2 == 0
    out[..., h - side - margin:h - margin, w - side - margin:w - margin] = np.where(board, value, 0.0)
    return out


def blend_trigger(x: np.ndarray, pattern: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    """Blended: mix a fixed random pattern into the whole input."""
    return ((1.0 - alpha) * x + alpha * pattern).astype(x.dtype)


def snap_to_alphabet(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Round ``values`` to the nearest value ``reference`` uses (its 8-bit grid when it uses more than 256)."""
    alphabet = np.unique(reference)
    if len(alphabet) > 256:
        alphabet = np.linspace(0.0, 1.0, 256, dtype=reference.dtype)
    right = np.clip(np.searchsorted(alphabet, values), 1, len(alphabet) - 1)
    left = right - 1
    nearer_left = np.abs(values - alphabet[left]) <= np.abs(alphabet[right] - values)
    snapped: np.ndarray = np.where(nearer_left, alphabet[left], alphabet[right]).astype(values.dtype)
    return snapped


def inject(x: np.ndarray, y: np.ndarray, attack: str, rate: float, *, seed: int = 0, target: int = 0,
           num_classes: int | None = None, collide: Callable[..., np.ndarray] | None = None) -> Poisoned:
    """Poison ``rate`` of (x, y) with ``attack``; ``collide`` crafts clean-label poisons (see features)."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    rng = np.random.default_rng(seed)
    x, y = x.copy(), y.copy()
    k = int(num_classes or (int(y.max()) + 1))
    n = _count(rate, len(y))
    mask = np.zeros(len(y), dtype=bool)
    if attack == "label_flip":
        chosen = rng.choice(len(y), n, replace=False)
        y[chosen] = (y[chosen] + rng.integers(1, k, n)) % k
        mask[chosen] = True
        return Poisoned(x, y, mask, attack, rate)
    if attack == "label_flip_pair":
        chosen = rng.choice(len(y), n, replace=False)
        y[chosen] = (y[chosen] + 1) % k
        mask[chosen] = True
        return Poisoned(x, y, mask, attack, rate)
    if attack in BACKDOOR_ATTACKS:
        source = None
        if attack == "badnets_single":
            source = int((target + 1) % k)
            pool = np.flatnonzero(y == source)
            if n > len(pool):
                raise ValueError(f"badnets_single: {n} poisons wanted but the source class has {len(pool)} samples")
        else:
            pool = np.flatnonzero(y != target)
        chosen = rng.choice(pool, n, replace=False)
        if attack == "blended":
            pattern = rng.random(x.shape[1:]).astype(x.dtype)
            if x.ndim == 2:
                pattern = (pattern * 4.0 - 2.0).astype(x.dtype)

            def trigger(batch: np.ndarray) -> np.ndarray:
                return blend_trigger(batch, pattern)
        else:
            def trigger(batch: np.ndarray) -> np.ndarray:
                return patch_trigger(batch)
        x[chosen] = trigger(x[chosen])
        y[chosen] = target
        mask[chosen] = True
        return Poisoned(x, y, mask, attack, rate, target=target, source=source, trigger=trigger)
    # clean_label(_quantised): feature collision (Poison Frogs): correctly labelled base images of class ``base``,
    # perturbed so their foundation-model features collide with a target instance of class ``target``.
    if collide is None:
        raise ValueError("clean_label needs a feature-collision crafter (collide=...)")
    base_class = int((target + 1) % k)
    pool = np.flatnonzero(y == base_class)
    n = min(n, len(pool))
    chosen = rng.choice(pool, n, replace=False)
    targets_pool = np.flatnonzero(y == target)
    group = 5  # poisons per target instance (Poison Frogs' multi-poison setting, small groups)
    aims = rng.choice(targets_pool, -(-n // group), replace=False)
    aim_for = np.repeat(aims, group)[:n]
    crafted = collide(x[chosen], x[aim_for], seed=seed)
    if attack == "clean_label_quantised":  # an adaptive attacker stores the poisons in the data's own encoding
        crafted = snap_to_alphabet(crafted, x)
    changed = float((crafted != x[chosen]).reshape(n, -1).sum(1).mean())
    x[chosen] = crafted
    mask[chosen] = True
    # The target instances are the attacker's test inputs, not training data: take them out.
    keep = np.ones(len(y), dtype=bool)
    keep[aims] = False
    return Poisoned(x[keep], y[keep], mask[keep], attack, rate, target=target, source=base_class,
                    details={"target_instances": x[aims], "base_class": base_class,
                             "values_changed_per_poison": changed})


def feature_collision(embed: Callable[[Any], Any], prepare: Callable[[Any], Any], *, steps: int = 80,
                      beta: float = 0.25, lr: float = 0.02) -> Callable[..., np.ndarray]:
    """A Poison Frogs crafter: move each base image until its embedding collides with its target's.

    Minimises ||f(p) - f(t)||^2 / ||f(t)||^2 + beta * ||p - b||^2 / D over p in [0, 1] with Adam,
    so poisons stay close to their (correctly labelled) base images in input space.
    """
    import torch

    def collide(bases: np.ndarray, targets: np.ndarray, *, seed: int = 0) -> np.ndarray:
        torch.manual_seed(seed)
        base = torch.as_tensor(bases, dtype=torch.float32)
        with torch.no_grad():
            aim = embed(prepare(torch.as_tensor(targets, dtype=torch.float32)))
        poison = base.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([poison], lr=lr)
        scale = (aim * aim).sum(1).clamp_min(1e-6)
        for _ in range(steps):
            optimiser.zero_grad()
            feats = embed(prepare(poison.clamp(0.0, 1.0)))
            loss = (((feats - aim) ** 2).sum(1) / scale).sum() + beta * ((poison - base) ** 2).flatten(1).mean(1).sum()
            loss.backward()
            optimiser.step()
        result: np.ndarray = poison.detach().clamp(0.0, 1.0).cpu().numpy().astype(bases.dtype)
        return result

    return collide
