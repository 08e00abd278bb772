"""Label disagreement from an out-of-fold classifier: the label-flip evidence for tables.

On tabular features a neighbour test is weak evidence of a flipped label (a few flipped rows near
the class boundary look like their neighbours). Here every sample is scored by a multinomial
logistic regression that never saw it (k-fold), trained a second time without the samples the
first pass found implausible (p(given label) < 0.5), so flipped labels do not bend the boundary
they are judged by. The score is on the scan's threshold scale: ``threshold * ln p / ln p_ref``,
so a sample reaches the default flag threshold (3.5) when the classifier gives its label at most
``p_ref`` = 5 %. Measured: ``benchmarks/results/poisoning-tabular-flips.md``.
"""

import numpy as np

#: The probability of the given label at which a sample reaches the flag threshold.
P_REF = 0.05
THRESHOLD = 3.5


def label_plausibility(z: np.ndarray, y: np.ndarray, *, seed: int = 0, folds: int = 5, passes: int = 2,
                       drop_below: float = 0.5, c: float = 0.5) -> np.ndarray | None:
    """Out-of-fold p(given label) per sample, or None where a class is too small to fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min()))
    if k < 2 or len(labels) < 2:
        return None
    x = np.asarray(z, dtype=np.float64)
    index = {int(v): i for i, v in enumerate(labels)}
    given = np.array([index[int(v)] for v in y])
    keep = np.ones(len(y), dtype=bool)
    plausibility = np.ones(len(y))
    for step in range(passes):
        plausibility = np.zeros(len(y))
        for fold, test in StratifiedKFold(k, shuffle=True, random_state=seed + step).split(x, given):
            train = fold[keep[fold]]
            if len(np.unique(given[train])) < 2:  # dropping left one class: train on the whole fold
                train = fold
            model = LogisticRegression(max_iter=1000, C=c).fit(x[train], given[train])
            proba = model.predict_proba(x[test])
            known = {int(v): i for i, v in enumerate(model.classes_)}
            plausibility[test] = [proba[row, known[g]] if g in known else 0.0 for row, g in enumerate(given[test])]
        keep = plausibility >= drop_below
    return plausibility


def implausibility(plausibility: np.ndarray | float) -> np.ndarray:
    """p(given label) on the scan's threshold scale: ``THRESHOLD`` at ``P_REF``, higher as p falls."""
    return np.asarray(THRESHOLD * np.log(np.clip(plausibility, 1e-12, 1.0)) / np.log(P_REF))


def classifier_disagreement(z: np.ndarray, y: np.ndarray, *, seed: int = 0, folds: int = 5, passes: int = 2,
                            drop_below: float = 0.5) -> tuple[np.ndarray, dict[str, object]] | None:
    """Per-sample score on the threshold scale (higher: the label is less plausible), or None (see above)."""
    plausibility = label_plausibility(z, y, seed=seed, folds=folds, passes=passes, drop_below=drop_below)
    if plausibility is None:
        return None
    folds_used = int(min(folds, np.unique(y, return_counts=True)[1].min()))
    return implausibility(plausibility), {"folds": folds_used, "passes": passes,
                                          "implausible": int((plausibility < drop_below).sum()), "p_ref": P_REF}
