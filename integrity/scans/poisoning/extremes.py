"""A table's feature view, robust to extreme cells, and the extreme cells reported on their own.

One cell of 1e19 once decided a whole table's verdict: median/IQR scaling left it at 1e19 IQRs,
float32 distances overflowed, the label classifier bent to it and the flipped labels it was there
to catch passed (or the residual test's SVD failed). Here every cell is judged against its column
before the screen sees it:

* **Extreme** is a cell beyond the column's fences, ``[q25 - FENCE * s, q75 + FENCE * s]`` with
  ``s`` the IQR (where half the column or more shares one value, the median distance of the other
  values from it), or a cell ``MAGNITUDE`` times larger than the column's typical magnitude (its
  90th percentile of absolute values, at least 1), which a handful of identical huge cells cannot
  hide. Natural columns stay well inside: breast cancer's heaviest tail reaches 19 IQRs, digits'
  sparse pixels 42 (standardised), wine, iris and diabetes under 4.
* An extreme cell is **winsorised** to the column's most extreme ordinary value on its side, so it
  moves nothing else. Only a cell beyond ``FLAG_FENCE`` spreads (or the magnitude rule) has its row
  reported (:class:`ExtremeCells`) and flagged by the scan: a natural heavy tail (a count, a lab value
  with a Pareto tail) passes 50 spreads in about one row in 150 per column, which would quarantine a
  clean vendor, but 1,000 spreads in one in several thousand. The cells clipped but not flagged are
  counted in the details (``clipped``), so nothing is changed in silence.
* The view is the median/IQR-scaled table (scale 1 where the IQR is 0, as before), with
  ``|z| > KNEE`` compressed logarithmically: no cell the fences let through dominates a distance.

Everything is computed on the values times 1/4 (exact in binary floating point), so columns near
the float64 limit (1e308) neither overflow in a difference nor in a median.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

FENCE = 50.0
FLAG_FENCE = 1000.0
MAGNITUDE = 1e6
KNEE = 100.0
#: The score of a row with an extreme cell (the scan's default flag threshold is 3.5).
EXTREME_SCORE = 10.0
_QUARTER = 0.25


@dataclass(frozen=True)
class ExtremeCells:
    """The cells beyond their column's bounds: one entry per cell, in row order."""

    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray
    bounds: np.ndarray  # cells x 2: the column's lower and upper bound
    #: Cells beyond ``FENCE`` but within ``FLAG_FENCE``: winsorised in the view, their rows not flagged.
    clipped: int = 0

    @property
    def flagged_rows(self) -> np.ndarray:
        return np.unique(self.rows)

    def describe(self, row: int, names: tuple[str, ...] | list[str] | None = None) -> str:
        """``extreme value in column X: 1e+19 (robust bounds [lo, hi])`` for every extreme cell of ``row``."""
        parts = []
        for i in np.flatnonzero(self.rows == row):
            column = int(self.columns[i])
            name = names[column] if names is not None and column < len(names) else f"#{column}"
            low, high = self.bounds[i]
            parts.append(f"extreme value in column {name}: {self.values[i]:.6g} "
                         f"(robust bounds [{low:.6g}, {high:.6g}])")
        return "; ".join(parts)

    def details(self, names: tuple[str, ...] | list[str] | None = None, limit: int = 50) -> dict[str, Any]:
        cells = [{"row": int(r), "column": names[int(c)] if names is not None and c < len(names) else int(c),
                  "value": float(v), "bounds": [float(b[0]), float(b[1])]}
                 for r, c, v, b in zip(self.rows[:limit], self.columns[:limit], self.values[:limit],
                                       self.bounds[:limit], strict=True)]
        return {"rule": f"beyond the quartiles by {FLAG_FENCE:g} robust spreads, or {MAGNITUDE:g} times the "
                        f"column's typical magnitude (flagged); beyond {FENCE:g} spreads: clipped in the screen's "
                        "view only", "cells": len(self.rows), "rows": len(self.flagged_rows),
                "clipped": self.clipped, "listed": cells}


def _spread(column: np.ndarray, q1: float, median: float, q3: float) -> float:
    """The IQR, or where it is 0 the median distance of the values that differ from the median (0: none)."""
    if q3 > q1:
        return q3 - q1
    away = np.abs(column[column != median] - median)
    return float(np.median(away)) if len(away) >= 3 else 0.0


def _bounds(column: np.ndarray, fence: float) -> tuple[float, float]:
    """The column's bounds at ``fence`` spreads (in the quartered units of ``column``)."""
    q1, median, q3 = (float(q) for q in np.percentile(column, [25, 50, 75]))
    magnitude = max(float(np.percentile(np.abs(column), 90)), _QUARTER) * MAGNITUDE
    spread = _spread(column, q1, median, q3)
    low, high = -magnitude, magnitude
    if spread > 0:
        low, high = max(low, q1 - fence * spread), min(high, q3 + fence * spread)
    return low, high


def find_extremes(x: np.ndarray) -> tuple[ExtremeCells, np.ndarray]:
    """The extreme cells of a finite table, and the table with them winsorised (float64, original units)."""
    quartered = np.asarray(x, dtype=np.float64) * _QUARTER
    winsorised = quartered.copy()
    rows, columns, values, bounds = [], [], [], []
    clipped = 0
    for j in range(quartered.shape[1]):
        column = quartered[:, j]
        low, high = _bounds(column, FENCE)
        outside = (column < low) | (column > high)
        if not outside.any():
            continue
        inside = column[~outside]
        winsorised[outside & (column < low), j] = inside.min() if len(inside) else low
        winsorised[outside & (column > high), j] = inside.max() if len(inside) else high
        low, high = _bounds(column, FLAG_FENCE)
        flagged = (column < low) | (column > high)
        clipped += int((outside & ~flagged).sum())
        for i in np.flatnonzero(flagged):
            rows.append(int(i))
            columns.append(j)
            values.append(float(x[i, j]))
            bounds.append((low / _QUARTER, high / _QUARTER))
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    cells = ExtremeCells(np.asarray(rows, dtype=np.int64)[order], np.asarray(columns, dtype=np.int64)[order],
                         np.asarray(values, dtype=np.float64)[order],
                         np.asarray(bounds, dtype=np.float64).reshape(-1, 2)[order], clipped)
    return cells, winsorised / _QUARTER


def robust_view(x: np.ndarray) -> tuple[np.ndarray, ExtremeCells]:
    """The screen's view of a finite table (float32, N x D) and its extreme cells (see the module doc)."""
    cells, winsorised = find_extremes(x)
    if np.abs(winsorised).max(initial=0.0) < 1e30:  # as the scan always scaled, in float32
        flat = winsorised.astype(np.float32)
        median = np.median(flat, 0)
        scale = np.subtract(*np.percentile(flat, [75, 25], axis=0))
        with np.errstate(over="ignore", invalid="ignore"):
            z = ((flat - median) / np.where(scale > 1e-12, scale, 1.0)).astype(np.float64)
    else:  # a column near the float64 limit: the same scaling on the quartered values, in float64
        quartered = winsorised * _QUARTER
        median = np.median(quartered, 0)
        scale = np.subtract(*np.percentile(quartered, [75, 25], axis=0))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            z = (quartered - median) / np.where(scale > 1e-12 * _QUARTER, scale, _QUARTER)
    z = np.clip(np.nan_to_num(z, nan=0.0), -1e30, 1e30)
    tail = np.abs(z) > KNEE
    z[tail] = np.sign(z[tail]) * (KNEE + np.log1p(np.abs(z[tail]) - KNEE))
    return np.asarray(z, dtype=np.float32), cells
