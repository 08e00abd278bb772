"""Tables as publishers ship them: CSV, TSV, JSON Lines or Parquet, in one file or several.

One reader serves validation, screening and training, from bytes the caller already read (and
hashed). Every cell is read as **text** first, so a numeric column whose cells became
``"1,234.5"`` is reported as type drift rather than silently coerced (datasets.py). Several files
of one format are one table, concatenated in sorted file-name order (the sample order, 0-based,
that screening reports); they must share their columns.

For the poisoning screen, :func:`features` turns a table into a numeric matrix: numeric columns
as they are (blanks filled with the column median), text columns with at most
:data:`MAX_LEVELS` distinct values one-hot encoded, other text columns left out (and named).
A column is numeric when at least :data:`NUMERIC_SHARE` of its non-blank cells are numbers; a cell
of such a column that is not a finite number (``abc``, ``inf``, ``nan``, ``1e400``) is refused, named
by column and row: one stray cell would otherwise turn the column into text and hide it from the screen.
"""

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from integrity.errors import ArtifactReadError

#: Table format -> the file suffixes it reads.
TABLE_FORMATS: dict[str, tuple[str, ...]] = {
    "csv": (".csv",), "tsv": (".tsv", ".tab"), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet", ".pq"),
}  # fmt: skip
MAX_LEVELS = 32
#: The share of a column's non-blank cells that must be numbers for the column to be numeric.
NUMERIC_SHARE = 0.9
_NAN_WORDS = ("nan", "+nan", "-nan")


def table_files(files: Mapping[str, bytes], fmt: str, where: Path) -> list[str]:
    suffixes = TABLE_FORMATS[fmt]
    found = sorted((n for n in files if n.lower().endswith(suffixes)), key=lambda n: tuple(n.split("/")))
    if not found:
        raise ArtifactReadError(f"no {fmt} file ({', '.join(suffixes)}) in the drop; found {sorted(files)[:5]}",
                                artifact=where)
    return found


def _one(data: bytes, name: str, fmt: str, where: Path) -> Any:
    import pandas as pd

    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, sep="," if fmt == "csv" else "\t")
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
            return frame.apply(lambda column: column.map(_text))
        rows = []
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"line {number} is not a JSON object")
            rows.append({k: _text(v) for k, v in row.items()})
        return pd.DataFrame(rows).fillna("")
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, ImportError) as exc:
        raise ArtifactReadError(f"{name}: not a parseable {fmt} table: {exc}", artifact=where / name
                                if name != where.name else where) from exc


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, float) else str(value)


def read_table(files: Mapping[str, bytes], fmt: str, *, where: str | Path) -> Any:
    """One text-valued DataFrame from every ``fmt`` file of a dataset (several: concatenated)."""
    import pandas as pd

    where = Path(where)
    if fmt not in TABLE_FORMATS:
        raise ArtifactReadError(f"{fmt!r} is not a table format ({', '.join(TABLE_FORMATS)})", artifact=where)
    names = table_files(files, fmt, where)
    frames = [_one(files[n], n, fmt, where) for n in names]
    columns = list(frames[0].columns)
    for name, frame in zip(names[1:], frames[1:], strict=True):
        if list(frame.columns) != columns:
            raise ArtifactReadError(f"{name} has the columns {list(frame.columns)[:8]}, {names[0]} has "
                                    f"{columns[:8]}: the files of one table must share their columns", artifact=where)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@dataclass(frozen=True)
class Features:
    """A table as the screen sees it: numeric features, labels 0..K-1 and what was left out."""

    x: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    columns: tuple[str, ...]
    skipped: tuple[str, ...]


def _numeric(text: Any, column: str, where: str | Path) -> np.ndarray | None:
    """A numeric column's values (blanks: the median), None for a text column; refuses cells that are not finite."""
    import pandas as pd

    given = (text != "").to_numpy()
    values: np.ndarray = np.array(pd.to_numeric(text.where(given), errors="coerce"), dtype=np.float64)
    numbers = ~np.isnan(values) | text.str.lower().isin(_NAN_WORDS).to_numpy()
    if not given.any() or numbers[given].mean() < NUMERIC_SHARE:
        return None
    bad = np.flatnonzero(given & ~np.isfinite(values))
    if len(bad):
        shown = ", ".join(f"row {int(r)}: {str(text.iloc[r])[:24]!r}" for r in bad[:5])
        raise ArtifactReadError(f"column {column!r} is numeric but {len(bad)} cell(s) are not finite numbers "
                                f"({shown}{', ...' if len(bad) > 5 else ''}): the screen cannot place them",
                                artifact=where, advice="Fix the cells, or blank them (a blank cell is filled with "
                                                       "the column median); rows are numbered from 0.")
    if not given.all():  # the median of the quartered values: no overflow near the float64 limit
        values[~given] = 4.0 * float(np.median(values[given] * 0.25))
    return values


def features(frame: Any, label_column: str, *, where: str | Path = "<table>") -> Features:
    """Numeric features and labels of a table (text cells, as :func:`read_table` returns them)."""
    import pandas as pd

    if label_column not in frame.columns:
        raise ArtifactReadError(f"no label column {label_column!r} (columns: {list(frame.columns)[:10]})",
                                artifact=where)
    raw = frame[label_column].astype(str).str.strip()
    if (raw == "").any():
        raise ArtifactReadError(f"{int((raw == '').sum())} rows have no label in {label_column!r}", artifact=where)
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all() and np.isfinite(numeric).all() and (numeric == numeric.round()).all():
        values = sorted({int(v) for v in numeric})
        index: dict[Any, int] = {v: i for i, v in enumerate(values)}
        labels = np.asarray([index[int(v)] for v in numeric], dtype=np.int64)
        names = tuple(str(v) for v in values)
    else:
        names = tuple(sorted(set(raw)))
        index = {n: i for i, n in enumerate(names)}
        labels = np.asarray([index[v] for v in raw], dtype=np.int64)
    parts, used, skipped = [], [], []
    for column in frame.columns:
        if column == label_column:
            continue
        text = frame[column].astype(str).str.strip()
        filled = _numeric(text, str(column), where)
        if filled is not None:
            parts.append(filled[:, None])
            used.append(str(column))
            continue
        levels = sorted(set(text))
        if 1 < len(levels) <= MAX_LEVELS:
            parts.append(np.stack([(text == level).to_numpy(dtype=np.float64) for level in levels], axis=1))
            used += [f"{column}={level}" for level in levels]
        else:
            skipped.append(str(column))
    if not parts:
        raise ArtifactReadError(f"no usable feature columns besides {label_column!r} (left out: {skipped[:8]})",
                                artifact=where)
    x = np.concatenate(parts, axis=1)
    return Features(x, labels, names, tuple(used), tuple(skipped))
