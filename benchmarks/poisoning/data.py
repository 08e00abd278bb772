"""Datasets for the poisoning benchmark: scikit-learn's digits and breast-cancer, Debian's Fashion-MNIST,
or any ``.npz`` with arrays ``X`` (N x H x W, N x C x H x W, or N x D) and ``y``."""

import gzip
from pathlib import Path

import numpy as np

from integrity.errors import UsageError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailable(UsageError):
    """The dataset is not installed here (the caller skips, saying why)."""

    kind = "data-unavailable"


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) in [0, 1]; raises DataUnavailable without Debian's package."""
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    if not all((FASHION_MNIST / n).is_file() for n in names):
        raise DataUnavailable(f"Fashion-MNIST is not installed ({FASHION_MNIST} missing; "
                              "`apt-get install dataset-fashion-mnist`)")
    xs, ys, xt, yt = (_idx(FASHION_MNIST / n) for n in names)
    return (xs / 255.0).astype(np.float32), ys.astype(np.int64), (xt / 255.0).astype(np.float32), yt.astype(np.int64)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        x, y = np.asarray(data["X"]), np.asarray(data["y"]).astype(np.int64)
    x = x.astype(np.float32)
    if x.ndim in (3, 4) and x.max() > 1.0:
        x = x / 255.0
    return x, y


def load(name: str, *, seed: int = 0, train_size: int | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test arrays for a dataset name or ``.npz`` path (stratified 75/25 split unless official)."""
    from sklearn.model_selection import train_test_split

    if name == "fashion_mnist":
        xs, ys, xt, yt = fashion_mnist()
    else:
        if name == "digits":
            from sklearn.datasets import load_digits

            data = load_digits()
            x, y = (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
        elif name == "breast_cancer":
            from sklearn.datasets import load_breast_cancer

            data = load_breast_cancer()
            x, y = data.data.astype(np.float32), data.target.astype(np.int64)
            x = (x - x.mean(0)) / x.std(0)
        elif name.endswith(".npz"):
            x, y = load_npz(name)
        else:
            raise ValueError(f"unknown dataset {name!r}: digits, breast_cancer, fashion_mnist or a .npz file")
        xs, xt, ys, yt = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    if train_size and train_size < len(ys):
        keep, _ = train_test_split(np.arange(len(ys)), train_size=train_size, stratify=ys, random_state=seed)
        xs, ys = xs[np.sort(keep)], ys[np.sort(keep)]
    return xs, ys, xt, yt
