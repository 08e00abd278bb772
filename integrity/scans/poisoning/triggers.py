"""Backdoor triggers on feature values (tables): rows that share an exact, extreme value.

A tabular trigger stamps the same value into a few features of every poisoned row and relabels the
rows to the attacker's class. Natural continuous features rarely repeat an extreme value exactly,
so the scan looks for (feature, value) pairs that (1) lie far from the feature's median, (2) recur in
at least ``min_share`` of the rows, (3) carry one label almost only, and (4) mark rows that a
classifier trained *without* those features finds implausible under that label: they look like
another class apart from the stamped values. (4) is what separates a trigger from a natural
saturation value (a capped sensor) that one class happens to reach. Groups that pass all four are a
backdoor signature; their rows score 6 (the scan's flag threshold is 3.5).
"""

from typing import Any

import numpy as np

EXTREME = 1.5  # robust-scaled units (median / IQR): about 2 standard deviations beyond the median
MIN_DISTINCT = 20  # columns with fewer distinct values (one-hot, counts, categories) repeat by nature
PURITY = 0.9
IMPLAUSIBLE = 0.5
MAX_GROUPS = 10  # the largest candidate groups are judged (each costs one k-fold fit)


def shared_extremes(z: np.ndarray, y: np.ndarray, *, min_share: float = 0.005, seed: int = 0
                    ) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
    """Per-sample scores (-inf where nothing is found) and the classes with a trigger signature."""
    from integrity.scans.poisoning.classifier import label_plausibility

    z = np.asarray(z, dtype=np.float64)
    scores = np.full(len(y), -np.inf)
    min_rows = max(3, int(np.ceil(min_share * len(y))))
    groups: list[tuple[int, float, np.ndarray, int]] = []
    for column in range(z.shape[1]):
        values, counts = np.unique(z[:, column], return_counts=True)
        if len(values) < MIN_DISTINCT:
            continue
        for value, count in zip(values, counts, strict=True):
            if count < min_rows or abs(value) < EXTREME:
                continue
            rows = np.flatnonzero(z[:, column] == value)
            labels, per_label = np.unique(y[rows], return_counts=True)
            if per_label.max() / len(rows) >= PURITY:
                groups.append((column, float(value), rows, int(labels[per_label.argmax()])))
    if not groups:
        return scores, {}
    by_rows: dict[bytes, tuple[np.ndarray, int, list[tuple[int, float]]]] = {}
    for column, value, rows, label in groups:  # the columns of one trigger mark the same rows: judge once
        by_rows.setdefault(rows.tobytes(), (rows, label, []))[2].append((column, value))
    found: dict[int, dict[str, Any]] = {}
    for rows, label, marks in sorted(by_rows.values(), key=lambda g: -len(g[0]))[:MAX_GROUPS]:
        members = rows[y[rows] == label]
        # Judge the rows without every column they share one value in (the whole stamp, even the part
        # below the extreme bar), so the classifier cannot read the trigger itself.
        stamped = np.flatnonzero(np.all(z[members] == z[members[0]], axis=0))
        rest = np.delete(z, stamped, axis=1)
        plausibility = label_plausibility(rest, y, seed=seed, passes=1) if rest.shape[1] else None
        if plausibility is None:
            continue
        share = float((plausibility[members] < IMPLAUSIBLE).mean())
        if share < 0.5:
            continue  # a natural repeated value: the rows look like their own class without it
        scores[members] = 6.0
        signature = found.setdefault(label, {"rule": "shared extreme feature values", "members": 0, "groups": []})
        signature["groups"].append({"features": [int(c) for c in stamped], "values": [round(v, 4) for _, v in marks],
                                "rows": len(members), "implausible_without_them": round(share, 3)})
        signature["members"] = int(max(signature["members"], len(members)))
    return scores, found
