"""The one safetensors reader: the training loader and the poisoning scans' feature loader share it."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from integrity.errors import ArtifactReadError
from integrity.scans.poisoning.features import read_safetensors
from integrity.scans.safetensors import parse_safetensors


def _blob(header: dict, body: bytes = b"", *, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(("data", "message"), [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 1 << 60) + b"{}", "out of bounds"),
    (_blob({}, raw_header=b'{"w": 1, "w": 2}'), "not JSON"),
    (_blob({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "inconsistent"),
    (_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8), "inconsistent"),
    (_blob({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8), "malformed"),
    (_blob({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6), "overlap"),
    (_blob({"__metadata__": {"k": 1}, **GOOD}, b"\0" * 8), "__metadata__"),
    (_blob({}, raw_header=b"[1, 2]"), "not an object"),
])
def test_every_malformed_file_is_refused_by_both_loaders(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ArtifactReadError, match=message):
        parse_safetensors(data)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ArtifactReadError, match=message):
        read_safetensors(path)
    pytest.importorskip("torch")
    from integrity.release.model import load_safetensors

    with pytest.raises(ArtifactReadError, match=message):
        load_safetensors(data)


def test_both_loaders_read_the_same_values(tmp_path: Path) -> None:
    import torch

    from integrity.release.model import load_safetensors, safetensors_bytes

    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, -2], dtype=torch.int64),
               "empty": torch.zeros((0, 4))}
    blob = safetensors_bytes(tensors, {"format": "pt"})
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    via_torch, via_numpy = load_safetensors(blob), read_safetensors(path)
    for name, tensor in tensors.items():
        assert torch.equal(via_torch[name], tensor)
        assert np.array_equal(via_numpy[name], tensor.numpy())
    assert parse_safetensors(blob)[1] == {"format": "pt"}
