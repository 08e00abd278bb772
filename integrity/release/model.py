"""What fine-tuning trains on and what it trains: image data from attested arrays, the backbone, safetensors weights."""

import hashlib
import io
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
    images: "np.ndarray"  # (N, H, W) raw values
    labels: "np.ndarray"  # (N,) int64
    pixel_max: float
    class_names: tuple[str, ...]


def image_dataset(reads: Sequence[ReadInput]) -> ImageData:
    """Images and labels from ``images.npy`` + ``labels.npy`` datasets (parsed from the hashed bytes)."""
    import numpy as np

    images, labels = [], []
    for read in reads:
        try:
            batch = np.load(io.BytesIO(read.files["images.npy"]), allow_pickle=False)
            targets = np.load(io.BytesIO(read.files["labels.npy"]), allow_pickle=False)
        except KeyError as exc:
            raise UsageError(f"the fine-tuning recipe needs an image dataset (images.npy + labels.npy); "
                             f"{read.input.name} has {', '.join(sorted(read.files))}",
                             artifact=read.input.name) from exc
        except ValueError as exc:
            raise ArtifactReadError(f"unreadable npy data: {exc}", artifact=read.input.name) from exc
        if batch.ndim != 3 or targets.ndim != 1 or len(batch) != len(targets):
            raise ArtifactReadError(f"expected images (N, H, W) and labels (N,), got {batch.shape} and "
                                    f"{targets.shape}", artifact=read.input.name)
        images.append(batch)
        labels.append(targets.astype(np.int64))
    if len({i.shape[1:] for i in images}) != 1:
        raise UsageError("the training datasets have different image shapes")
    stacked = np.concatenate(images)
    joined = np.concatenate(labels)
    classes = sorted(int(c) for c in np.unique(joined))
    if classes != list(range(len(classes))):
        raise UsageError(f"labels must be 0..K-1, found {classes}")
    pixel_max = 16.0 if float(stacked.max()) <= 16 else 255.0
    return ImageData(stacked, joined, pixel_max, tuple(str(c) for c in classes))


def holdout_split(labels: "np.ndarray", fraction: float, seed: int) -> tuple["np.ndarray", "np.ndarray"]:
    """A stratified, seeded split into (train, holdout) indices; evaluation recomputes the same split."""
    import numpy as np

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


def to_pixels(images: "np.ndarray", pixel_max: float, size: int) -> "torch.Tensor":
    """Raw images -> (N, 3, size, size) in [0, 1]: scaled, bilinearly upsampled, grey replicated to RGB."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / pixel_max
    tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return tensor.repeat(1, 3, 1, 1)


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


def _efficientnet_lite(architecture: str, num_classes: int, image_size: int) -> "torch.nn.Module":
    """The classifier as trained and served: ImageNet normalization, then EfficientNet-Lite."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

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
        net = EfficientNet.from_name(architecture, num_classes=num_classes, image_size=image_size)
    except ValueError as exc:
        raise UsageError(f"unknown architecture {architecture!r}: {exc}") from exc
    return Normalized(net)


def backbone(model: "torch.nn.Module") -> Any:
    """The EfficientNet inside the normalizing wrapper (its state dict is what is released)."""
    return model.get_submodule("net")


def load_backbone(model: "torch.nn.Module", weights: Mapping[str, "torch.Tensor"], where: str) -> list[str]:
    """Load pretrained weights into everything but the new classifier head; returns the head's keys."""
    net = backbone(model)
    own = net.state_dict()
    pretrained = {k: v for k, v in weights.items() if not k.startswith("_fc.")}
    missing = sorted(set(own) - set(pretrained))
    unexpected = sorted(set(pretrained) - set(own))
    mismatched = sorted(k for k in set(own) & set(pretrained) if own[k].shape != pretrained[k].shape)
    if unexpected or mismatched or any(not k.startswith("_fc.") for k in missing):
        raise UsageError(f"the base model's weights do not fit the architecture (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]})", artifact=where)
    net.load_state_dict(pretrained, strict=False)
    return missing


def model_config(spec: ReleaseSpec, data: ImageData, source_shape: Sequence[int]) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "architecture": spec.architecture,
        "framework": {"library": "efficientnet-lite-pytorch", "version": version("efficientnet-lite-pytorch"),
                      "state_dict_prefix": "", "head": "_fc"},
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "input": {"shape": [3, spec.training.image_size, spec.training.image_size], "dtype": "float32",
                  "range": [0.0, 1.0]},
        "preprocessing": {
            "source_shape": list(source_shape),
            "scale": f"divide by {data.pixel_max:g}",
            "resize": {"mode": "bilinear", "align_corners": False, "size": spec.training.image_size},
            "channels": "greyscale replicated to 3",
            "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
        "model": spec.model,
    }


for _size in range(5):
    register_architecture(f"efficientnet-lite{_size}", _efficientnet_lite)
