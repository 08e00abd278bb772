"""A dataset as the poisoning screen sees it: samples in a fixed order, features and labels.

The screen, the pipeline's ``screened`` stage and ``cairn screen`` share this one loader, so a
flagged sample's index means the same thing everywhere: its position in the dataset's sample
order, 0-based (the array order; for image folders the ``labels.csv`` order, else the sorted file
names; for tables the row order, several files concatenated in sorted name order).

Two kinds are screened: ``image`` (any array layout, grey or colour, scaled from the declared
pixel range) and ``tabular`` (numeric features from :func:`integrity.scans.tables.features`).
``text`` is recognised so that it can be refused plainly: no text screen is registered yet.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from integrity.errors import ArtifactReadError, UsageError
from integrity.scans.images import IMAGE_SUFFIXES, labels_file, read_images
from integrity.scans.tables import TABLE_FORMATS, features, read_table

KINDS = ("image", "tabular", "text")
IMAGE_FORMATS = ("npy", "npz", "image-folder")


@dataclass(frozen=True)
class Samples:
    kind: str
    x: np.ndarray  # images: N x C x H x W in [0, 1]; tabular: N x D
    labels: np.ndarray  # 0..K-1
    class_names: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def guess_kind(files: Mapping[str, bytes], fmt: str | None = None) -> str:
    """``image`` or ``tabular`` from the catalog format, else from the file names."""
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in TABLE_FORMATS:
        return "tabular"
    names = [n.lower() for n in files]
    if any(n.endswith((".npy", ".npz", *IMAGE_SUFFIXES)) for n in names):
        return "image"
    if any(n.endswith(s) for n in names for suffixes in TABLE_FORMATS.values() for s in suffixes):
        return "tabular"
    raise UsageError(f"cannot tell what kind of dataset {sorted(files)[:5]} is", advice="Pass --kind image|tabular.")


def table_format(files: Mapping[str, bytes], fmt: str | None) -> str:
    if fmt in TABLE_FORMATS:
        return fmt
    found = [f for f, suffixes in TABLE_FORMATS.items() if any(n.lower().endswith(suffixes) for n in files)]
    if len(found) != 1:
        raise UsageError(f"expected the files of one table format, found {found or 'none'}")
    return found[0]


def load_samples(files: Mapping[str, bytes], *, where: str | Path, kind: str | None = None, fmt: str | None = None,
                 labels: tuple[str, bytes] | None = None, label_column: str | None = None,
                 pixel_range: tuple[float, float] | None = None) -> Samples:
    """The samples of a dataset's files (names -> bytes already read and hashed by the caller).

    ``labels`` is a separate labels file (name, bytes) for images stored without them;
    ``label_column`` names the label of a table (required for tables).
    """
    where = Path(where)
    kind = kind or guess_kind(files, fmt)
    if kind not in KINDS:
        raise UsageError(f"unknown dataset kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "text":
        raise UsageError("no poisoning screen is registered for text datasets yet: nothing was screened",
                         artifact=where, advice="Text sources are ingested and validated; a text screen comes later.")
    if kind == "image":
        given = labels_file(labels[1], labels[0], where) if labels is not None else None
        images = read_images(files, where=where, labels=given)
        x, low_high = images.scaled(pixel_range, where=where)
        return Samples("image", x, images.labels, images.class_names,
                       {"layout": images.layout, "dtype": images.dtype, "shape": list(images.shape),
                        "pixel_range": list(low_high), "files": list(images.names)})
    if not label_column:
        raise UsageError("a table's label column is not named", artifact=where,
                         advice="Pass --label-column NAME (or name it in the suite's label.column).")
    table = table_format(files, fmt)
    frame = read_table(files, table, where=where)
    found = features(frame, label_column, where=where)
    return Samples("tabular", found.x, found.labels, found.class_names,
                   {"format": table, "label_column": label_column, "columns": list(found.columns),
                    "skipped_columns": list(found.skipped)})


def check_screenable(samples: Samples, *, where: str | Path) -> None:
    """The screen compares classes: it needs samples, two classes and several samples in each."""
    counts = np.bincount(samples.labels, minlength=len(samples.class_names))
    if len(samples) < 10:
        raise ArtifactReadError(f"{len(samples)} samples: too few to screen (at least 10)", artifact=where)
    present = int((counts > 0).sum())
    if present < 2:
        raise ArtifactReadError(f"one class only ({samples.class_names[int(counts.argmax())]!r}): label "
                                "consistency needs at least two", artifact=where)


def _original_layout(images: Any) -> np.ndarray:
    """An ImageSet's images back in the layout the publisher used (image folders: N x H x W x C or N x H x W)."""
    array: np.ndarray = images.images
    if images.layout == "NHW" or (images.layout == "files" and array.shape[1] == 1):
        return array[:, 0]
    if images.layout in ("NHWC", "files"):
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return array


def write_filtered(files: Mapping[str, bytes], *, where: str | Path, kind: str, fmt: str | None, keep: np.ndarray,
                   folder: Path) -> list[str]:
    """Write the kept samples (by index in the sample order) as a dataset of the same kind into ``folder``.

    Images become ``images.npy`` (the publisher's layout and dtype) + ``labels.npy`` (the labels as
    published); tables become ``table.csv`` (the cells as read). ``sample_ids.npy`` holds each kept
    sample's index in the original order. Returns the written names.
    """
    keep = np.asarray(keep, dtype=np.int64)
    if kind == "image":
        images = read_images(files, where=where)
        names = np.asarray(images.class_names)
        labels: np.ndarray = (names.astype(np.int64) if all(n.lstrip("-").isdigit() for n in images.class_names)
                              else names)[images.labels]
        arrays = {"images.npy": _original_layout(images)[keep], "labels.npy": labels[keep]}
    else:
        frame = read_table(files, table_format(files, fmt), where=where)
        (folder / "table.csv").write_bytes(frame.iloc[keep].to_csv(index=False).encode("utf-8"))
        arrays = {}
    arrays["sample_ids.npy"] = keep
    for name, array in arrays.items():
        with open(folder / name, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return sorted(p.name for p in folder.iterdir())
