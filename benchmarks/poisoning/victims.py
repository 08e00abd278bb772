"""Small models the benchmark trains: the victim classifier (retrained after filtering, and the model
ART's defences read activations from) and the backbones of the model-level benchmark."""

from typing import Any

import numpy as np


def make_cnn(shape: tuple[int, ...], classes: int) -> Any:
    """A small CNN (images) or MLP (tabular) as a plain ``nn.Sequential``: trunk, then a linear head.

    The last top-level module is the logits layer, as in most user code: what ART reads by default.
    """
    import torch.nn as nn

    if len(shape) == 1:
        return nn.Sequential(nn.Linear(shape[0], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes))
    channels, height, _ = shape
    pool = 2 if height >= 16 else 1
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (height // pool // 2) ** 2, 64), nn.ReLU(),
        nn.Linear(64, classes),
    )


def as_input(x: np.ndarray) -> np.ndarray:
    """N x H x W -> N x 1 x H x W float32; N x C x H x W and tabular N x D unchanged."""
    x = np.asarray(x, dtype=np.float32)
    return x[:, None] if x.ndim == 3 else x


def train(x: np.ndarray, y: np.ndarray, classes: int, *, seed: int, epochs: int | None = None,
          device: str = "cpu", batch_size: int = 128) -> Any:
    import torch

    torch.manual_seed(seed)
    data = torch.as_tensor(as_input(x), device=device)
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
    model = make_cnn(tuple(data.shape[1:]), classes).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    epochs = epochs or (15 if len(y) < 5000 else 5)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(data[batch]), labels[batch])
            loss.backward()
            optimiser.step()
    return model.eval()


def predict(model: Any, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    import torch

    with torch.no_grad():
        data = torch.as_tensor(as_input(x), device=device)
        out = torch.cat([model(data[i:i + 2048]).argmax(1) for i in range(0, len(data), 2048)])
    result: np.ndarray = out.cpu().numpy()
    return result


def penultimate(model: Any) -> Any:
    """The trunk (everything but the logits layer): its output is the penultimate-layer activation."""
    import torch.nn as nn

    return nn.Sequential(*list(model.children())[:-1])
