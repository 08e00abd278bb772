"""The one safetensors reader for weights Cairn loads (after the model-file gate passed them).

Strict and bounded: the header length must fit the file and 100 MB, the header must be one JSON
object without duplicate keys, every tensor needs a known dtype, a non-negative shape and offsets that
lie inside the data, match the shape exactly and never overlap. Anything else is an
:class:`~integrity.errors.ArtifactReadError` naming the file. Nothing is executed, and nothing is
allocated before the bounds are known. The gate's own check is
:func:`integrity.scans.modelgate.tensors.scan_safetensors`; this module reads what the gate allowed.
"""

import itertools
from dataclasses import dataclass
from pathlib import Path

from integrity import safeio
from integrity.errors import ArtifactReadError

#: Most bytes a safetensors header may have (the format's reference implementation uses the same bound).
MAX_HEADER_BYTES = 100_000_000
#: dtype name -> bytes per element.
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1}


@dataclass(frozen=True)
class RawTensor:
    dtype: str
    shape: tuple[int, ...]
    data: memoryview  # exactly the tensor's bytes, little-endian

    @property
    def count(self) -> int:
        total = 1
        for dim in self.shape:
            total *= dim
        return total


def parse_safetensors(data: bytes, *, where: str | Path = "<safetensors>") -> tuple[dict[str, RawTensor],
                                                                                      dict[str, str]]:
    """(tensors by name, ``__metadata__``) of a safetensors blob, strictly checked."""
    if len(data) < 8:
        raise ArtifactReadError("not a safetensors file (too short)", artifact=where)
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > MAX_HEADER_BYTES:
        raise ArtifactReadError("safetensors header length is out of bounds", artifact=where)
    try:
        header = safeio.loads(data[8:8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactReadError(f"safetensors header is not JSON: {exc}", artifact=where) from exc
    if not isinstance(header, dict):
        raise ArtifactReadError("safetensors header is not an object", artifact=where)
    body = memoryview(data)[8 + size:]
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArtifactReadError("safetensors __metadata__ must map names to strings", artifact=where)
    tensors: dict[str, RawTensor] = {}
    spans = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(meta["dtype"])
            itemsize = ITEM_SIZES[dtype]
            shape = tuple(int(s) for s in meta["shape"])
            start, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactReadError(f"tensor {name!r} has a malformed header entry", artifact=where) from exc
        raw = RawTensor(dtype, shape, body[start:end] if 0 <= start <= end <= len(body) else body[0:0])
        if (any(d < 0 for d in shape) or not 0 <= start <= end <= len(body)
                or end - start != raw.count * itemsize):
            raise ArtifactReadError(f"tensor {name!r} has inconsistent offsets or shape", artifact=where)
        spans.append((start, end))
        tensors[name] = raw
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start < end:
            raise ArtifactReadError("tensors overlap in the safetensors data", artifact=where)
    return tensors, {str(k): str(v) for k, v in metadata.items()}
