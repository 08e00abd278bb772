"""What fine-tuning trains on and what it trains: image data from attested arrays, the backbone, safetensors weights."""

import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity.errors import ArtifactReadError, UsageError
from integrity.release.inputs import ReadInput
from integrity.release.spec import ReleaseSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

MODEL_WEIGHTS = "model.safetensors"


MODEL_CONFIG = "config.json"


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


_ST_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


def load_safetensors(data: bytes, *, where: str | Path = "<safetensors>") -> dict[str, "torch.Tensor"]:
    """Tensors of a safetensors blob (already hashed), read by the one strict reader."""
    import torch

    from integrity.scans.safetensors import parse_safetensors

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise UsageError("safetensors loading needs a little-endian machine")
    parsed, _ = parse_safetensors(data, where=where)
    tensors: dict[str, torch.Tensor] = {}
    for name, raw in parsed.items():
        dtype = dtypes[raw.dtype]
        tensors[name] = (torch.frombuffer(bytearray(raw.data), dtype=dtype, count=raw.count).reshape(raw.shape)
                         if raw.count else torch.empty(raw.shape, dtype=dtype))
    return tensors


def safetensors_bytes(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize tensors as safetensors (little-endian, 8-byte aligned header)."""
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob + b"".join(chunks)


@dataclass(frozen=True)
class ImageData:
    images: "np.ndarray"  # (N, C, H, W) float32 in [0, 1], scaled from the declared pixel range
    labels: "np.ndarray"  # (N,) int64, indices into class_names
    pixel_range: tuple[float, float]
    class_names: tuple[str, ...]


def suite_of(read: ReadInput) -> Any:
    """The expectation suite the input was validated against (refused if it changed since)."""
    from integrity.scans.expectations import load_suite

    path = read.input.reading.get("suite")
    if not path:
        return None
    suite = load_suite(Path(path))
    if suite.digest != read.input.reading.get("suite_digest"):
        raise UsageError(f"{read.input.name}: its suite changed since it was validated ({suite.digest}, validated "
                         f"with {read.input.reading.get('suite_digest')})", artifact=path,
                         advice="Ingest the source again so that it is validated against the suite in force.")
    return suite


def _ordered(names: set[str]) -> list[str]:
    """Class names in the order a user expects: numerically when every name is a number."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def image_dataset(reads: Sequence[ReadInput]) -> ImageData:
    """Images and labels of image datasets (any layout the image reader knows), parsed from the hashed bytes.

    Pixel values are scaled from the range each dataset's suite declares (``images.range``), else the
    range its dtype implies; class names come from the data (several datasets: joined by name).
    """
    import numpy as np

    from integrity.scans.images import read_images

    scaled, named, ranges = [], [], []
    for read in reads:
        suite = suite_of(read)
        try:
            images = read_images(read.files, where=read.input.path)
        except ArtifactReadError as exc:
            raise UsageError(f"the image recipe cannot read {read.input.name}: {exc.reason}",
                             artifact=read.input.name) from exc
        pixel_range = suite.pixel_range if suite is not None else None
        values, declared = images.scaled(pixel_range, where=read.input.path)
        scaled.append(values)
        ranges.append(declared)
        named.append(np.asarray(images.class_names)[images.labels])
    if len({i.shape[1:] for i in scaled}) != 1:
        raise UsageError(f"the training datasets have different image shapes: {sorted({i.shape[1:] for i in scaled})}")
    stacked = np.concatenate(scaled)
    names = np.concatenate(named)
    classes = _ordered({str(n) for n in names})
    if len(stacked) == 0:
        raise UsageError("the training datasets hold no images")
    if len(classes) < 2:
        raise UsageError(f"the training data has one class only ({classes[0]!r}): a classifier needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.asarray([index[str(n)] for n in names], dtype=np.int64)
    low = min(r[0] for r in ranges)
    high = max(r[1] for r in ranges)
    return ImageData(stacked, labels, (low, high), tuple(classes))


def holdout_split(labels: "np.ndarray", fraction: float, seed: int) -> tuple["np.ndarray", "np.ndarray"]:
    """A stratified, seeded split into (train, holdout) indices; evaluation recomputes the same split.

    Every class needs a sample on each side: a class too small for that is an error, not an empty split.
    """
    import numpy as np

    counts = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    small = sorted(c for c, n in counts.items() if n < 2)
    if len(labels) == 0 or small:
        raise UsageError(f"cannot split {len(labels)} samples into training and held-out data: class(es) "
                         f"{small} have fewer than 2 samples", advice="Add data, or drop the class from the dataset.")

    rng = np.random.default_rng(seed)
    train, holdout = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        cut = max(1, round(len(members) * fraction))
        holdout.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def indices_digest(indices: "np.ndarray") -> str:
    import numpy as np

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def to_pixels(images: "np.ndarray", size: int) -> "torch.Tensor":
    """Scaled (N, C, H, W) images in [0, 1] -> (N, 3, size, size): bilinearly resized, grey replicated to RGB,
    an alpha channel dropped."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(images, dtype=torch.float32)
    if tensor.shape[1] == 4:
        tensor = tensor[:, :3]
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return tensor.repeat(1, 3, 1, 1) if tensor.shape[1] == 1 else tensor


#: A training recipe's model: (architecture name, classes, image size) -> the module trained and served.
ModelFactory = Callable[[str, int, int], "torch.nn.Module"]
_ARCHITECTURES: dict[str, ModelFactory] = {}


def register_architecture(name: str, factory: ModelFactory) -> None:
    """Let release specs name ``architecture: name`` (see docs/extending.md)."""
    _ARCHITECTURES[name] = factory


def architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def build_model(architecture: str, num_classes: int, image_size: int) -> "torch.nn.Module":
    """The model of a registered architecture (the release spec's ``architecture``)."""
    factory = _ARCHITECTURES.get(architecture)
    if factory is None:
        raise UsageError(f"unknown architecture {architecture!r} (registered: {', '.join(architectures())})")
    return factory(architecture, num_classes, image_size)


def _registered_backbone(architecture: str, num_classes: int, image_size: int) -> "torch.nn.Module":
    """The classifier as trained and served: ImageNet normalization, then the registered backbone."""
    import torch

    from integrity.scans.poisoning.backbones import get_backbone

    class Normalized(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            buffers: Any = self._buffers
            result: torch.Tensor = self.net((pixels - buffers["mean"]) / buffers["std"])
            return result

    try:
        net = get_backbone(architecture).build(num_classes, image_size)
    except (ValueError, ArtifactReadError) as exc:
        raise UsageError(f"unknown architecture {architecture!r}: {exc}") from exc
    return Normalized(net)


def backbone(model: "torch.nn.Module") -> Any:
    """The backbone inside the normalizing wrapper (its state dict is what is released)."""
    return model.get_submodule("net")


def head_prefix(architecture: str) -> str:
    from integrity.scans.poisoning.backbones import get_backbone

    return get_backbone(architecture).head


def load_backbone(model: "torch.nn.Module", weights: Mapping[str, "torch.Tensor"], where: str,
                  architecture: str = "efficientnet-lite0") -> list[str]:
    """Load pretrained weights into everything but the new classifier head; returns the head's keys."""
    head = head_prefix(architecture)
    net = backbone(model)
    own = net.state_dict()
    pretrained = {k: v for k, v in weights.items() if not k.startswith(head)}
    missing = sorted(set(own) - set(pretrained))
    unexpected = sorted(set(pretrained) - set(own))
    mismatched = sorted(k for k in set(own) & set(pretrained) if own[k].shape != pretrained[k].shape)
    if unexpected or mismatched or any(not k.startswith(head) for k in missing):
        raise UsageError(f"the base model's weights do not fit {architecture} (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]})", artifact=where,
                         advice="Name the base model's architecture in the release spec (architecture:).")
    net.load_state_dict(pretrained, strict=False)
    return missing


def model_config(spec: ReleaseSpec, data: ImageData, source_shape: Sequence[int]) -> dict[str, Any]:
    from importlib.metadata import version

    from integrity.scans.poisoning.backbones import get_backbone

    found = get_backbone(spec.architecture)
    library = found.library
    return {
        "architecture": spec.architecture,
        "framework": {"library": library, "version": version(library),
                      "state_dict_prefix": "", "head": found.head.rstrip(".")},
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "input": {"shape": [3, spec.training.image_size, spec.training.image_size], "dtype": "float32",
                  "range": [0.0, 1.0]},
        "preprocessing": {
            "source_shape": list(source_shape),
            "scale": f"from the declared range {data.pixel_range[0]:g}..{data.pixel_range[1]:g} to 0..1",
            "resize": {"mode": "bilinear", "align_corners": False, "size": spec.training.image_size},
            "channels": {1: "greyscale replicated to 3", 3: "RGB", 4: "RGB (alpha dropped)"}[int(source_shape[0])],
            "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
        "model": spec.model,
    }


def _register_backbones() -> None:
    from integrity.scans.poisoning.backbones import backbones

    for name in backbones():
        register_architecture(name, _registered_backbone)


_register_backbones()
