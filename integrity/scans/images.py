"""Image datasets as stored by their publishers: arrays of any size, grey or colour, any dtype, or image folders.

One reader serves validation, screening and training, always from bytes already read (and hashed)
by the caller, so what is checked is what is used. Recognised layouts, in this order:

* ``images.npy`` + ``labels.npy`` (a folder);
* one ``.npz`` with an image array (``images``, ``x`` or ``X``) and a label array (``labels``, ``y``
  or ``Y``); a bare ``.npy`` of images with the labels given separately;
* a folder of PNG/JPEG files with ``labels.csv`` (``file,label``), or one sub-folder per class
  (the folder names are the class names).

Arrays are ``N x H x W`` (grey), ``N x H x W x C`` or ``N x C x H x W`` (C of 1, 3 or 4). Labels may
be integers or text; class names are the sorted distinct labels. The **pixel range** is declared,
never guessed: by the suite (``images.range``), by the caller (``--range``), or by the dtype alone
for ``uint8`` (0..255), ``uint16`` (0..65535) and ``bool``; floats are assumed to be 0..1 only
when every value lies there. A value outside the declared range is an error naming the artifact.
"""

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from integrity.errors import ArtifactReadError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IMAGE_KEYS = ("images", "x", "X")
_LABEL_KEYS = ("labels", "y", "Y")
#: Pixel ranges a dtype implies on its own (anything else must be declared).
DTYPE_RANGES = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0), "bool": (0.0, 1.0)}


@dataclass(frozen=True)
class ImageSet:
    """Images as ``N x C x H x W`` raw values, integer labels 0..K-1 and the class names behind them."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    layout: str  # how the publisher stored them: NHW, NHWC, NCHW or files
    dtype: str
    names: tuple[str, ...] = ()  # file names, for image folders (the sample order)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.images.shape[1:])

    def scaled(self, pixel_range: tuple[float, float] | None, *, where: str | Path = "<images>"
               ) -> tuple[np.ndarray, tuple[float, float]]:
        """``N x C x H x W`` float32 in [0, 1] by the declared range (see :func:`declared_range`), and that range."""
        low, high = declared_range(self.images, pixel_range, self.dtype, where=where)
        return ((self.images.astype(np.float32) - low) / (high - low)).astype(np.float32), (low, high)


def declared_range(images: np.ndarray, pixel_range: tuple[float, float] | None, dtype: str, *,
                   where: str | Path = "<images>") -> tuple[float, float]:
    """The range the values are scaled from, and a check that every value lies in it."""
    if pixel_range is not None:
        low, high = float(pixel_range[0]), float(pixel_range[1])
        if not np.isfinite([low, high]).all() or high <= low:
            raise UsageError(f"pixel range {pixel_range} must be two finite numbers, low < high", artifact=where)
    elif dtype in DTYPE_RANGES:
        low, high = DTYPE_RANGES[dtype]
    elif dtype.startswith("float") and images.size and float(images.min()) >= 0 and float(images.max()) <= 1:
        low, high = 0.0, 1.0
    else:
        seen = f"{float(images.min()):g}..{float(images.max()):g}" if images.size else "no values"
        raise UsageError(f"the pixel range of {dtype} images ({seen}) is not implied by their dtype",
                         artifact=where,
                         advice="Declare it: the suite's images.range (e.g. [0, 16]) or --range LOW:HIGH.")
    if images.size:
        if not np.all(np.isfinite(images)):
            raise ArtifactReadError("images hold NaN or infinite values", artifact=where)
        found_low, found_high = float(images.min()), float(images.max())
        if found_low < low or found_high > high:
            raise ArtifactReadError(f"pixel values {found_low:g}..{found_high:g} lie outside the declared range "
                                    f"{low:g}..{high:g}", artifact=where)
    return low, high


def parse_range(text: str | None) -> tuple[float, float] | None:
    """``LOW:HIGH`` (the CLI's ``--range``) as two numbers."""
    if not text:
        return None
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError as exc:
        raise UsageError(f"--range must be LOW:HIGH, e.g. 0:255 (got {text!r})") from exc
    return low, high


def _array(data: bytes, name: str, where: Path) -> np.ndarray:
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refused, never loaded
        raise ArtifactReadError(f"{name}: refused ({exc})", artifact=where) from exc
    except OSError as exc:
        raise ArtifactReadError(f"{name}: not a numpy array ({exc})", artifact=where) from exc
    if isinstance(array, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of .npy bytes never returns one
        raise ArtifactReadError(f"{name}: unexpected archive", artifact=where)
    return array


def _npz(data: bytes, name: str, where: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            keys = list(archive.files)
            image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
            label_key = next((k for k in _LABEL_KEYS if k in keys), None)
            if image_key is None:
                raise ArtifactReadError(f"{name} holds {keys}; expected an image array named one of {_IMAGE_KEYS}",
                                        artifact=where)
            images = np.asarray(archive[image_key])
            labels = np.asarray(archive[label_key]) if label_key else None
    except ValueError as exc:
        raise ArtifactReadError(f"{name}: refused ({exc})", artifact=where) from exc
    except (OSError, EOFError) as exc:
        raise ArtifactReadError(f"{name}: not a readable .npz ({exc})", artifact=where) from exc
    return images, labels


def _channels_first(images: np.ndarray, where: Path) -> tuple[np.ndarray, str]:
    if images.ndim == 3:
        return images[:, None], "NHW"
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), "NHWC"
    if images.ndim == 4 and images.shape[1] in (1, 3, 4):
        return images, "NCHW"
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), "NHWC"
    raise ArtifactReadError(f"images of shape {images.shape}: expected N x H x W, N x H x W x C or N x C x H x W "
                            "with 1, 3 or 4 channels", artifact=where)


def _labels(raw: Any, count: int, where: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    labels = np.asarray(raw)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise ArtifactReadError(f"{count} images but labels of shape {labels.shape}", artifact=where)
    if labels.dtype.kind in "iub":
        classes = sorted({int(v) for v in np.unique(labels)})
        index = {c: i for i, c in enumerate(classes)}
        mapped = np.fromiter((index[int(v)] for v in labels), dtype=np.int64, count=len(labels))
        return mapped, tuple(str(c) for c in classes)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise ArtifactReadError("labels are fractional numbers; expected classes", artifact=where)
        return _labels(labels.astype(np.int64), count, where)
    text = [str(v).strip() for v in labels.tolist()]
    if any(not t for t in text):
        raise ArtifactReadError("a label is empty", artifact=where)
    names = sorted(set(text))
    positions = {n: i for i, n in enumerate(names)}
    return np.asarray([positions[t] for t in text], dtype=np.int64), tuple(names)


def labels_file(data: bytes, name: str, where: Path) -> np.ndarray:
    """Labels given apart from the images: ``.npy``, or text with one label per line (``.txt``/``.csv``)."""
    if name.endswith(".npy"):
        return _array(data, name, where)
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ArtifactReadError(f"{name}: labels are not UTF-8 text", artifact=where) from exc
    if lines and lines[0].lower() in ("label", "labels", "y", "target", "class"):
        lines = lines[1:]
    return np.asarray(lines)


def _decode(data: bytes, name: str, where: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened if opened.mode in ("L", "RGB", "RGBA", "I;16", "1") else opened.convert("RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ArtifactReadError(f"{name}: not a readable image ({exc})", artifact=where) from exc


def _folder(files: Mapping[str, bytes], where: Path) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    pictures = sorted(n for n in files if n.lower().endswith(IMAGE_SUFFIXES))
    if "labels.csv" in files:
        try:
            rows = list(csv.DictReader(io.StringIO(files["labels.csv"].decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ArtifactReadError(f"labels.csv: unreadable ({exc})", artifact=where) from exc
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise ArtifactReadError("labels.csv needs the columns file,label", artifact=where)
        order = [r["file"].strip() for r in rows]
        missing = sorted(set(order) - set(pictures))
        unlabelled = sorted(set(pictures) - set(order))
        if missing or unlabelled or len(set(order)) != len(order):
            raise ArtifactReadError(f"labels.csv and the images disagree: listed but absent {missing[:5]}, present "
                                    f"but unlisted {unlabelled[:5]}, or a file listed twice", artifact=where)
        labels: Any = [r["label"] for r in rows]
    else:
        if any("/" not in n for n in pictures):
            raise ArtifactReadError("an image folder needs labels.csv (file,label) or one sub-folder per class",
                                    artifact=where)
        order = pictures
        labels = [n.split("/", 1)[0] for n in pictures]
    if not order:
        raise ArtifactReadError("no PNG or JPEG images in the folder", artifact=where)
    decoded = [_decode(files[n], n, where) for n in order]
    shapes = {d.shape for d in decoded}
    if len(shapes) != 1:
        raise ArtifactReadError(f"the images differ in size or channels: {sorted(shapes)[:4]}", artifact=where)
    return np.stack(decoded), np.asarray(labels), tuple(order)


def read_images(files: Mapping[str, bytes], *, where: str | Path, labels: np.ndarray | None = None) -> ImageSet:
    """An :class:`ImageSet` from a dataset's files (relative names -> bytes already read)."""
    where = Path(where)
    names: tuple[str, ...] = ()
    raw_labels: Any = labels
    npz = [n for n in files if n.endswith(".npz")]
    if "images.npy" in files:
        images = _array(files["images.npy"], "images.npy", where)
        if raw_labels is None:
            if "labels.npy" not in files:
                raise ArtifactReadError("images.npy without labels.npy", artifact=where)
            raw_labels = _array(files["labels.npy"], "labels.npy", where)
    elif len(npz) == 1:
        images, found = _npz(files[npz[0]], npz[0], where)
        raw_labels = found if raw_labels is None else raw_labels
    elif len(npz) > 1:
        raise ArtifactReadError(f"several .npz files {sorted(npz)[:4]}: expected one", artifact=where)
    elif any(n.lower().endswith(IMAGE_SUFFIXES) for n in files):
        images, found_labels, names = _folder(files, where)
        raw_labels = found_labels if raw_labels is None else raw_labels
    elif len(files) == 1 and next(iter(files)).endswith(".npy"):
        name = next(iter(files))
        images = _array(files[name], name, where)
    else:
        raise ArtifactReadError(f"not an image dataset: expected images.npy + labels.npy, one .npz, or PNG/JPEG "
                                f"files; found {sorted(files)[:5]}", artifact=where)
    if raw_labels is None:
        raise ArtifactReadError("the images have no labels", artifact=where,
                                advice="Add labels.npy / a label array / labels.csv, or pass --labels FILE.")
    if images.dtype.kind not in "iufb":
        raise ArtifactReadError(f"images of dtype {images.dtype}: expected numbers", artifact=where)
    if len(images) == 0:
        raise ArtifactReadError("the dataset holds no images", artifact=where)
    dtype = str(images.dtype)
    chw, layout = _channels_first(images, where)
    mapped, classes = _labels(raw_labels, len(images), where)
    return ImageSet(chw, mapped, classes, "files" if names else layout, dtype, names)


def read_files(path: str | Path) -> dict[str, bytes]:
    """Every regular file under ``path`` (or the file itself), by relative posix name."""
    root = Path(path)
    try:
        if root.is_file():
            return {root.name: root.read_bytes()}
        if not root.is_dir():
            raise ArtifactReadError("no such file or folder", artifact=root)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and not p.name.startswith(".")}
    except OSError as exc:
        raise ArtifactReadError(f"cannot read: {exc.strerror or exc}", artifact=root) from exc
