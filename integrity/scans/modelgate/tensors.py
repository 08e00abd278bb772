"""Formats that hold only tensors: safetensors, NumPy ``.npy`` (GGUF: :mod:`.gguf`), checked byte for byte.

None of them can run code when read, so the gate checks that they are exactly what they claim:
headers in bounds, known dtypes, data regions that tile the file without gaps, overlaps or
trailing bytes (where a second payload could hide), and no Python objects inside.
"""

import ast
import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.gguf import scan_gguf

__all__ = ["loader_json", "scan_gguf", "scan_npy", "scan_safetensors", "strict_json"]  # scan_gguf: moved to .gguf

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# Bits per element of every safetensors dtype.
SAFETENSORS_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
                    "U8": 8, "BOOL": 8, "U16": 16, "U32": 32, "U64": 64, "F8_E4M3": 8, "F8_E5M2": 8,
                    "F8_E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4, "C64": 64, "C128": 128}
NPY_KINDS = set("biufcSUVMm")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys")
    return dict(pairs)


def strict_json(raw: bytes) -> Any:
    """JSON as a strict reader sees it: UTF-8, no NaN/Infinity, no duplicate keys (ambiguous to loaders)."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_object)


def loader_json(raw: bytes) -> tuple[Any, str | None]:
    """(what ``json.loads`` reads, why a strict reader disagrees or None); raises if the loader cannot read it.

    Loaders (Keras, transformers) read configs with ``json.loads``: NaN is accepted and the last of
    duplicated keys wins. The gate applies its rules to that reading and refuses any disagreement.
    """
    lenient = json.loads(raw.decode("utf-8"))
    try:
        strict = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return lenient, str(exc)
    if json.dumps(strict, sort_keys=True) != json.dumps(lenient, sort_keys=True):
        return lenient, "the strict and the lenient reading differ"
    return lenient, None


def scan_safetensors(path: Path, where: str, out: Findings) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > MAX_SAFETENSORS_HEADER or 8 + header_size > size or header_size < 2:
            out.add(where, 0, "safetensors.header-size", f"header size {header_size} out of bounds")
            return
        raw = handle.read(header_size)
    try:
        header = strict_json(raw.rstrip(b" "))
    except (ValueError, UnicodeDecodeError) as exc:
        out.add(where, 8, "safetensors.header-json", f"header is not strict JSON: {exc}")
        return
    if not isinstance(header, dict):
        out.add(where, 8, "safetensors.header-json", "header is not an object")
        return
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                out.add(where, 8, "safetensors.metadata", "__metadata__ must map strings to strings")
            continue
        try:
            if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
                raise TypeError
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
                raise TypeError
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
                raise TypeError
            begin, end = offsets
            numel = 1
            for dim in shape:
                numel *= dim
            bits = SAFETENSORS_BITS.get(dtype) if isinstance(dtype, str) else None
            if bits is None or begin < 0 or end < begin or (end - begin) * 8 != numel * bits:
                out.add(where, 8, "safetensors.tensor", f"tensor {name!r}: unknown dtype or wrong byte size")
            spans.append((begin, end, name))
        except (TypeError, ValueError):
            out.add(where, 8, "safetensors.tensor", f"tensor {name!r}: malformed entry")
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            out.add(where, 8 + header_size + begin, "safetensors.offsets", f"tensor {name!r} overlaps or leaves a gap")
        position = max(position, end)
    if 8 + header_size + position != size:
        out.add(where, 8 + header_size + position, "safetensors.trailing-data",
                f"data region ends at {8 + header_size + position}, the file at {size}")


def _npy_itemsize(descr: Any) -> int | None:
    """Bytes per element of an ``.npy`` dtype description; -1 if it holds Python objects."""
    if isinstance(descr, str):
        text = descr.lstrip("<>|=")
        if not text:
            return None
        kind, digits = text[0], text[1:].split("[")[0]
        if kind == "O":
            return -1
        if kind not in NPY_KINDS or (digits and not (digits.isascii() and digits.isdigit())):
            return None
        if kind == "b":
            return 1
        if kind in "Mm":
            return 8
        return int(digits) * (4 if kind == "U" else 1) if digits else None
    if isinstance(descr, list):  # structured dtype: [(name, descr[, shape]), ...]
        total = 0
        for entry in descr:
            if not isinstance(entry, tuple) or len(entry) not in (2, 3):
                return None
            size = _npy_itemsize(entry[1])
            if size is None or size == -1:
                return size
            count = 1
            if len(entry) == 3:
                if not isinstance(entry[2], tuple) or not all(type(d) is int and d >= 0 for d in entry[2]):
                    return None
                for d in entry[2]:
                    count *= d
            total += size * count
        return total
    return None


def scan_npy(handle: BinaryIO, size: int, where: str, out: Findings) -> None:
    head = handle.read(8)
    major = head[6] if len(head) == 8 else 0
    if major not in (1, 2, 3) or head[7] != 0:
        out.add(where, 6, "npy.header", f"unknown .npy version {head[6:8]!r}")
        return
    raw = handle.read(2 if major == 1 else 4)
    if len(raw) != (2 if major == 1 else 4):
        out.add(where, 8, "npy.header", "the file ends inside the header length")
        return
    length = struct.unpack("<H" if major == 1 else "<I", raw)[0]
    start = 8 + len(raw) + length
    if start > size or length > 1 << 20:
        out.add(where, 8, "npy.header", "header runs past the end of the file")
        return
    try:
        header = ast.literal_eval(handle.read(length).decode("utf-8" if major == 3 else "latin-1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        out.add(where, 10, "npy.header", f"unparseable header: {exc}")
        return
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        out.add(where, 10, "npy.header", "header must have exactly descr, fortran_order and shape")
        return
    itemsize = _npy_itemsize(header["descr"])
    shape = header["shape"]
    if itemsize == -1:
        out.add(where, 10, "npy.object-dtype",
                f"dtype {header['descr']!r} holds Python objects: numpy.load would call pickle.load", "pickle.load")
        return
    if itemsize is None or not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        out.add(where, 10, "npy.header", f"dtype {header['descr']!r} or shape {shape!r} not understood")
        return
    nbytes = itemsize
    for d in shape:
        nbytes *= d
    if start + nbytes != size:
        out.add(where, start, "npy.size", f"array data is {size - start} bytes, the header says {nbytes}")
