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

Image files are decoded only as what they document: PNG or JPEG **identified by content** (the
magic bytes), opened by Pillow with that one format (never a plugin that shells out, such as EPS
through Ghostscript). Content of any other format, content that disagrees with the suffix, an
animated or multi-picture file and an image over :data:`MAX_IMAGE_PIXELS` are refused naming the
file; sizes are read from the headers and checked, the per-image limit and the folder's total of
decoded bytes (:data:`MAX_DATASET_BYTES`), before any pixel is decoded (:class:`ImageLimits`).
Files are listed as hashing lists them (:func:`dataset_files`): a symbolic link, special file or
unrepresentable name in a dataset folder is refused, never followed.
"""

import csv
import io
import struct
import unicodedata
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from integrity.errors import ArtifactReadError, EmptyArtifactError, UsageError
from integrity.safeio import read_regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
#: Largest image decoded (width x height): 4096 x 4096; a header claiming more is refused undecoded.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Largest total of decoded pixel bytes in one image dataset (its stored dtype, before scaling), unless
#: ``$CAIRN_MAX_IMAGE_BYTES`` says otherwise (:meth:`ImageLimits.configured`).
MAX_DATASET_BYTES = 2 << 30
_SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
#: Modes kept as decoded -> (channels, bytes per channel, numpy dtype); any other mode becomes RGB.
_MODES = {"L": (1, 1, "uint8"), "RGB": (3, 1, "uint8"), "RGBA": (4, 1, "uint8"), "I;16": (1, 2, "uint16"),
          "1": (1, 1, "bool")}
#: What refused content is, for the message (never used to decode).
_OTHER_FORMATS = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"BM", "BMP"),
                  (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"), (b"RIFF", "RIFF/WebP"),
                  (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
                  (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"DDS ", "DDS"), (b"qoif", "QOI"),
                  (b"P1", "PBM"), (b"P2", "PGM"), (b"P3", "PPM"), (b"P4", "PBM"), (b"P5", "PGM"),
                  (b"P6", "PPM"), (b"P7", "PAM"))  # fmt: skip
#: What a damaged PNG or JPEG may raise inside Pillow while it is opened or decoded.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError,
                  zlib.error)
_IMAGE_KEYS = ("images", "x", "X")
_LABEL_KEYS = ("labels", "y", "Y")
#: Pixel ranges a dtype implies on its own (anything else must be declared).
DTYPE_RANGES = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0), "bool": (0.0, 1.0)}


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked on the headers before anything is decoded (see :data:`MAX_IMAGE_PIXELS`)."""

    max_pixels: int = MAX_IMAGE_PIXELS
    max_total_bytes: int = MAX_DATASET_BYTES

    @classmethod
    def configured(cls) -> "ImageLimits":
        """The limits in force: the dataset total from ``$CAIRN_MAX_IMAGE_BYTES`` (or the project file)."""
        from integrity.settings import current

        return cls(max_total_bytes=current().max_image_bytes)


@dataclass(frozen=True)
class ImageSet:
    """Images as ``N x C x H x W`` raw values, integer labels 0..K-1 and the class names behind them."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    layout: str  # how the publisher stored them: NHW, NHWC, NCHW or files
    dtype: str
    names: tuple[str, ...] = ()  # file names, for image folders (the sample order)
    read: tuple[str, ...] = ()  # every file the reader read (labels included): the rest it never looked at

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.images.shape[1:])

    def scaled(self, pixel_range: tuple[float, float] | None, *, where: str | Path = "<images>"
               ) -> tuple[np.ndarray, tuple[float, float]]:
        """``N x C x H x W`` float32 in [0, 1] by the declared range (see :func:`declared_range`), and that range."""
        low, high = declared_range(self.images, pixel_range, self.dtype, where=where)
        scaled = self.images.astype(np.float32)  # one float copy, scaled in place
        scaled -= np.float32(low)
        scaled /= np.float32(high - low)
        return scaled, (low, high)


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
    except (ValueError, MemoryError) as exc:  # object arrays need pickle: refused, never loaded
        raise ArtifactReadError(f"{name}: refused ({exc})", artifact=where) from exc
    except OSError as exc:
        raise ArtifactReadError(f"{name}: not a numpy array ({exc})", artifact=where) from exc
    if isinstance(array, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of .npy bytes never returns one
        raise ArtifactReadError(f"{name}: unexpected archive", artifact=where)
    return array


def _npz(data: bytes, name: str, where: Path, limits: ImageLimits) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            keys = list(archive.files)
            image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
            label_key = next((k for k in _LABEL_KEYS if k in keys), None)
            if image_key is None:
                raise ArtifactReadError(f"{name} holds {keys}; expected an image array named one of {_IMAGE_KEYS}",
                                        artifact=where)
            wanted = {image_key, f"{image_key}.npy", *((label_key, f"{label_key}.npy") if label_key else ())}
            declared = sum(i.file_size for i in archive.zip.infolist() if i.filename in wanted)
            if declared > limits.max_total_bytes:  # a compressed bomb: refused before it is inflated
                raise ArtifactReadError(f"{name}: its arrays inflate to {declared} bytes, over the "
                                        f"{limits.max_total_bytes} byte limit: refused", artifact=where)
            images = np.asarray(archive[image_key])
            labels = np.asarray(archive[label_key]) if label_key else None
    except (ValueError, MemoryError) as exc:
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


@dataclass(frozen=True)
class ImageHeader:
    """What a PNG or JPEG header says, before its pixels are decoded."""

    format: str  # PNG or JPEG, from the content
    width: int
    height: int
    mode: str  # Pillow's mode as stored; decoded as it is if in _MODES, else as RGB

    @property
    def shape(self) -> tuple[int, ...]:
        channels = _MODES.get(self.mode, _MODES["RGB"])[0]
        return (self.height, self.width) if channels == 1 else (self.height, self.width, channels)

    @property
    def dtype(self) -> str:
        return _MODES.get(self.mode, _MODES["RGB"])[2]

    @property
    def nbytes(self) -> int:
        channels, size, _ = _MODES.get(self.mode, _MODES["RGB"])
        return self.width * self.height * channels * size


def content_format(data: bytes) -> str | None:
    """``PNG`` or ``JPEG`` by the magic bytes, else None (the suffix never decides)."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    return None


def _what(data: bytes) -> str:
    if not data:
        return "an empty file"
    found = next((kind for magic, kind in _OTHER_FORMATS if data.startswith(magic)), None)
    return f"{found} content" if found else f"content starting {data[:8]!r}"


def _open(data: bytes, fmt: str) -> Any:
    """Pillow's lazy open with the one format the content was identified as (headers only)."""
    from PIL import Image

    return Image.open(io.BytesIO(data), formats=[fmt])


def image_header(data: bytes, name: str = "<image>", *, where: str | Path | None = None,
                 limits: ImageLimits | None = None) -> ImageHeader:
    """Identify a PNG/JPEG by content and read its header; refuse anything else, or an image too large to decode.

    Raises :class:`ArtifactReadError` naming ``name`` (nothing is decoded here)."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or ImageLimits.configured()
    fmt = content_format(data)
    if fmt is None:
        raise ArtifactReadError(f"{name}: {_what(data)}, not PNG or JPEG: refused undecoded", artifact=where)
    suffix = Path(name).suffix.lower()
    if suffix in _SUFFIX_FORMATS and _SUFFIX_FORMATS[suffix] != fmt:
        raise ArtifactReadError(f"{name}: {fmt} content under a {suffix} name: refused (the name and the "
                                "content must agree)", artifact=where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(data, fmt) as opened:
                width, height = (int(v) for v in opened.size)
                header = ImageHeader(fmt, width, height, str(opened.mode))
                frames = int(getattr(opened, "n_frames", 1))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            *_DECODE_ERRORS) as exc:
        raise ArtifactReadError(f"{name}: not a readable {fmt} ({exc})", artifact=where) from exc
    if frames != 1:
        raise ArtifactReadError(f"{name}: an animated or multi-picture {fmt} ({frames} frames): refused",
                                artifact=where)
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise ArtifactReadError(f"{name}: {width} x {height} pixels, outside 1..{limits.max_pixels} pixels: "
                                "refused undecoded (a decompression bomb?)", artifact=where)
    return header


def _pixels(data: bytes, header: ImageHeader, name: str, where: str | Path | None) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(data, header.format) as opened:
                opened.load()
                image = opened if opened.mode in _MODES else opened.convert("RGB")
                array = np.asarray(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, *_DECODE_ERRORS) as exc:
        raise ArtifactReadError(f"{name}: not a readable {header.format} ({exc})", artifact=where) from exc
    if array.shape != header.shape or str(array.dtype) != header.dtype:
        raise ArtifactReadError(f"{name}: decoded as {array.shape} {array.dtype}, its header said "
                                f"{header.shape} {header.dtype}", artifact=where)
    return array


def decode_image(data: bytes, name: str = "<image>", *, where: str | Path | None = None,
                 limits: ImageLimits | None = None) -> np.ndarray:
    """One PNG/JPEG (identified by content) as ``H x W`` or ``H x W x C``; checked before it is decoded.

    Every refusal is an :class:`ArtifactReadError` naming ``name`` (the fuzz entry point of the decoder)."""
    return _pixels(data, image_header(data, name, where=where, limits=limits), name, where)


def _folder_order(files: Mapping[str, bytes], where: Path) -> tuple[list[str], list[str]]:
    """The image files in sample order and their labels (``labels.csv``, else the sub-folder names)."""
    pictures = sorted(n for n in files if n.lower().endswith(IMAGE_SUFFIXES))
    if "labels.csv" in files:
        try:
            rows = list(csv.DictReader(io.StringIO(files["labels.csv"].decode("utf-8"))))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ArtifactReadError(f"labels.csv: unreadable ({exc})", artifact=where) from exc
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise ArtifactReadError("labels.csv needs the columns file,label", artifact=where)
        order = [(r["file"] or "").strip() for r in rows]
        missing = sorted(set(order) - set(pictures))
        unlabelled = sorted(set(pictures) - set(order))
        if missing or unlabelled or len(set(order)) != len(order):
            raise ArtifactReadError(f"labels.csv and the images disagree: listed but absent {missing[:5]}, present "
                                    f"but unlisted {unlabelled[:5]}, or a file listed twice", artifact=where)
        labels = [r["label"] if isinstance(r["label"], str) else "" for r in rows]
    else:
        if any("/" not in n for n in pictures):
            raise ArtifactReadError("an image folder needs labels.csv (file,label) or one sub-folder per class",
                                    artifact=where)
        order = pictures
        labels = [n.split("/", 1)[0] for n in pictures]
    for kind, values in (("file", order), ("class", labels)):
        distinct = set(values)
        if len({unicodedata.normalize("NFC", v) for v in distinct}) != len(distinct):
            raise ArtifactReadError(f"two {kind} names differ only in their Unicode normalisation (NFC/NFD): "
                                    "refused, they would read as one", artifact=where)
    if not order:
        raise ArtifactReadError("no PNG or JPEG images in the folder", artifact=where)
    return order, labels


def _folder(files: Mapping[str, bytes], where: Path, limits: ImageLimits
            ) -> tuple[np.ndarray, Any, tuple[str, ...]]:
    """Every header checked (size, agreement, the folder's total) before one pixel is decoded, into one array."""
    order, labels = _folder_order(files, where)
    headers = [image_header(files[n], n, where=where, limits=limits) for n in order]
    kinds = sorted({(h.shape, h.dtype) for h in headers})
    if len(kinds) != 1:
        raise ArtifactReadError(f"the images differ in size, channels or bit depth: {kinds[:4]}", artifact=where)
    total = sum(h.nbytes for h in headers)
    if total > limits.max_total_bytes:
        raise ArtifactReadError(f"{len(order)} images decode to {total} bytes, over the {limits.max_total_bytes} "
                                "byte limit of a folder: refused undecoded", artifact=where)
    images = np.empty((len(order), *headers[0].shape), dtype=headers[0].dtype)
    for index, (name, header) in enumerate(zip(order, headers, strict=True)):
        images[index] = _pixels(files[name], header, name, where)
    return images, np.asarray(labels), tuple(order)


def read_images(files: Mapping[str, bytes], *, where: str | Path, labels: np.ndarray | None = None,
                limits: ImageLimits | None = None) -> ImageSet:
    """An :class:`ImageSet` from a dataset's files (relative names -> bytes already read).

    ``ImageSet.read`` names the files it read; every refusal is a :class:`CairnError` (the fuzz entry
    point of the whole reader: ``read_images({"a/x.png": data, "b/y.png": data}, where="fuzz")``)."""
    where = Path(where)
    limits = limits or ImageLimits.configured()
    names: tuple[str, ...] = ()
    raw_labels: Any = labels
    npz = [n for n in files if n.endswith(".npz")]
    if "images.npy" in files:
        images = _array(files["images.npy"], "images.npy", where)
        read: tuple[str, ...] = ("images.npy",)
        if raw_labels is None:
            if "labels.npy" not in files:
                raise ArtifactReadError("images.npy without labels.npy", artifact=where)
            raw_labels = _array(files["labels.npy"], "labels.npy", where)
            read += ("labels.npy",)
    elif len(npz) == 1:
        images, found = _npz(files[npz[0]], npz[0], where, limits)
        raw_labels, read = found if raw_labels is None else raw_labels, (npz[0],)
    elif len(npz) > 1:
        raise ArtifactReadError(f"several .npz files {sorted(npz)[:4]}: expected one", artifact=where)
    elif any(n.lower().endswith(IMAGE_SUFFIXES) for n in files):
        images, found_labels, names = _folder(files, where, limits)
        raw_labels = found_labels if raw_labels is None else raw_labels
        read = (*names, "labels.csv") if "labels.csv" in files else names
    elif len(files) == 1 and next(iter(files)).endswith(".npy"):
        name = next(iter(files))
        images, read = _array(files[name], name, where), (name,)
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
    return ImageSet(chw, mapped, classes, "files" if names else layout, dtype, names, read)


def dataset_files(path: str | Path) -> dict[str, Path]:
    """Every file of a dataset by relative posix name, listed as hashing lists (and signs) them.

    A symbolic link (to a file or a folder, inside or outside), a special file (FIFO, device,
    socket) or an unrepresentable name is refused with hashing's :class:`UnsafePathError`; names
    hashing leaves out of every manifest (``.git`` and the like) are left out here too. A file is
    listed as ``{its name: path}``."""
    from integrity.trust.hashing import HashingConfig, list_files

    root = Path(path)
    if not root.is_symlink() and not root.exists():
        raise ArtifactReadError("no such file or folder", artifact=root)
    try:
        entries = list_files(root, HashingConfig())
    except EmptyArtifactError:
        return {}  # an empty folder: each reader says what it expected
    if len(entries) == 1 and entries[0].relative == ".":
        return {root.name: root}
    return {entry.relative: entry.absolute for entry in entries}


def read_files(path: str | Path) -> dict[str, bytes]:
    """The bytes of every file of :func:`dataset_files` (regular files only, never through a link)."""
    return {name: read_regular_file(file, what=name, max_bytes=1 << 62, error=ArtifactReadError)
            for name, file in dataset_files(path).items()}
