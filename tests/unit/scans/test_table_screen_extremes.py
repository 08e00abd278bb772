"""The table screen against extreme cells: one 1e19 once let 10 % flipped labels pass (issue 25, item 4).

Breast cancer with 57 of 569 labels flipped (10 %) is quarantined with 47 flips flagged; before the
fix, one cell of 1e19 in ``mean radius`` made it pass (7 flagged), and five made the residual test's
SVD fail. The extreme cells are now winsorised out of the features and reported on their own.
"""

import numpy as np
import pytest

from integrity.errors import ArtifactReadError, UsageError
from integrity.scans.poisoning import scan_dataset
from integrity.scans.poisoning.extremes import EXTREME_SCORE, find_extremes, robust_view
from integrity.scans.tables import features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: (row, column, value): different columns and signs, 1e19 to 1e300.
CELLS = [(0, 0, 1e19), (100, 7, -1e19), (200, 12, 1e300), (300, 20, 1e19), (400, 3, -1e19),
         (10, 29, 1e19), (50, 15, 1e300), (150, 25, -1e19), (250, 1, 1e19), (350, 9, -1e300)]


@pytest.fixture(scope="module")
def flipped() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Breast cancer with 10 % of its labels flipped, and how many flips the screen flags without extreme cells."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    flips = np.random.default_rng(0).choice(len(y), 57, replace=False)
    y = y.copy()
    y[flips] = 1 - y[flips]
    result = scan_dataset(x, y)
    assert not result.verdict.passed
    return x, y, flips, int(result.flagged[flips].sum())


@pytest.mark.parametrize("count", [1, 5, 10])
def test_extreme_cells_do_not_hide_flipped_labels(flipped: tuple[np.ndarray, np.ndarray, np.ndarray, int],
                                                  count: int) -> None:
    x, y, flips, caught = flipped
    assert caught >= 45  # 47 of 57 when measured
    poisoned = x.copy()
    for row, column, value in CELLS[:count]:
        poisoned[row, column] = value
    names = [f"c{j}" for j in range(x.shape[1])]
    result = scan_dataset(poisoned, y, columns=names)
    assert not result.verdict.passed, result.verdict
    assert abs(int(result.flagged[flips].sum()) - caught) <= 2
    rows = sorted(row for row, _, _ in CELLS[:count])
    assert result.extremes is not None and result.extremes.flagged_rows.tolist() == rows
    assert result.flagged[rows].all() and (result.scores[rows] >= EXTREME_SCORE).all()
    row, column, value = CELLS[count - 1]
    assert f"extreme value in column c{column}: {value:.6g} (robust bounds [" in result.extremes.describe(row, names)
    assert result.details["extreme_values"]["rows"] == count and "extreme values" in result.verdict.reason


def test_one_extreme_cell_in_a_clean_table_is_flagged_and_the_table_still_passes() -> None:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    clean = scan_dataset(x, y)
    assert clean.verdict.passed and int(clean.flagged.sum()) == 1 and clean.extremes is not None
    assert len(clean.extremes.rows) == 0 and "extreme_values" not in clean.details  # as before the fix
    x = x.copy()
    x[42, 5] = 1e19
    result = scan_dataset(x, y)
    assert result.verdict.passed and result.flagged[42] and int(result.flagged.sum()) == 2


def _tables() -> list[tuple[str, np.ndarray]]:
    from sklearn import datasets

    found = []
    for name in ("breast_cancer", "wine", "digits", "iris", "diabetes"):
        x = getattr(datasets, f"load_{name}")(return_X_y=True)[0].astype(np.float64)
        found += [(name, x), (f"{name} standardised", (x - x.mean(0)) / (x.std(0) + 1e-9))]
    return found


@pytest.mark.parametrize(("name", "x"), _tables(), ids=[n for n, _ in _tables()])
def test_natural_tables_have_no_extreme_cells(name: str, x: np.ndarray) -> None:
    cells, winsorised = find_extremes(x)
    assert len(cells.rows) == 0, cells.describe(int(cells.rows[0]))
    assert np.array_equal(winsorised, x)


def test_columns_without_spread_and_near_the_float64_limit() -> None:
    rng = np.random.default_rng(3)
    x = np.c_[rng.normal(size=(200, 3)), np.full(200, 5.0), np.full(200, 5.0), np.full(200, 5.0),
              rng.uniform(-1, 1, 200) * 1.7e308, np.full(200, 1.7e308)]
    x[7, 4] = 6.0  # one natural deviation in a constant column: not extreme
    x[9, 5] = 1e19  # one huge cell in a constant column
    x[[11, 12, 13, 14], 3] = 1e19  # four identical huge cells: the magnitude rule, not the spread
    cells, _ = find_extremes(x)
    assert sorted(cells.flagged_rows.tolist()) == [9, 11, 12, 13, 14]
    z, _ = robust_view(x)
    assert np.isfinite(z).all() and np.abs(z).max() < 1e3


def test_non_finite_and_stray_cells_are_refused_by_column_and_row() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [str(v) for v in range(20)], "label": ["0", "1"] * 10})
    for cell in ("inf", "-inf", "nan", "NaN", "1e400", "abc"):
        bad = frame.copy()
        bad.loc[3, "a"] = cell
        with pytest.raises(ArtifactReadError, match=rf"column 'a' is numeric .* \(row 3: '{cell}'\)"):
            features(bad, "label")
    minus_zero = frame.copy()
    minus_zero["a"] = ["-0", "0"] * 10
    assert (features(minus_zero, "label").x == 0).all()
    huge = frame.copy()
    huge["a"] = ["1.7e308"] * 19 + [""]  # the blank's median fill must not overflow
    assert np.isfinite(features(huge, "label").x).all()
    labels = frame.copy()
    labels.loc[0, "label"] = "inf"  # once int(inf): an OverflowError
    assert features(labels, "label").class_names == ("0", "1", "inf")
    with pytest.raises(UsageError, match=r"NaN or infinite value.*sample 3, feature 1"):
        scan_dataset(np.c_[np.zeros(20), np.r_[np.zeros(3), np.inf, np.zeros(16)]], np.arange(20) % 2)


def test_small_and_many_class_tables_get_a_verdict_or_a_clear_refusal() -> None:
    rng = np.random.default_rng(0)
    for n in (10, 16, 21):  # fewer samples than the neighbour test's k = 20 once died in topk
        result = scan_dataset(rng.normal(size=(n, 4)), np.arange(n) % 2)
        assert result.verdict.reason and np.isfinite(result.scores).all()
    with pytest.raises(UsageError, match="too small to screen: 3 samples, need at least 10"):
        scan_dataset(rng.normal(size=(3, 4)), np.array([0, 1, 0]))
    with pytest.raises(UsageError, match="at least two classes"):
        scan_dataset(rng.normal(size=(30, 4)), np.zeros(30, dtype=np.int64))
    many = scan_dataset(rng.normal(size=(600, 4)), rng.integers(0, 500, 600))
    assert len(many.scores) == 600 and many.verdict.reason


@pytest.mark.parametrize("rows", [150, 300, 1000, 5000])
def test_natural_heavy_tails_are_clipped_in_the_view_but_never_flagged(rows: int) -> None:
    """Counts and lab values with Pareto or log-normal tails pass 50 spreads now and then; flagging those
    rows would quarantine a clean vendor, so only the far fence (or the magnitude rule) flags."""
    rng = np.random.default_rng(rows)
    x = np.column_stack([rng.pareto(1.0, rows) + 1, rng.pareto(1.2, rows) + 1, rng.lognormal(0, 2, rows),
                         rng.lognormal(0, 2.5, rows), rng.poisson(0.3, rows).astype(float) * 1000])
    cells, _ = find_extremes(x)
    assert len(cells.flagged_rows) <= 1 + rows // 1000  # far below any flag budget (2 % by default)
    assert cells.clipped > len(cells.rows)  # the 50-spread fence clips more than it flags
    x[7, 2] = 1e19  # a planted cell is still flagged
    assert 7 in find_extremes(x)[0].flagged_rows
