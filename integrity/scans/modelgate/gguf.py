"""GGUF read to the specification (ggml ``docs/gguf.md``), as gguf-py's ``GGUFWriter`` writes it.

The file is a header (magic, version 2 or 3, tensor and key counts), typed metadata key/value
pairs, tensor infos, padding to ``general.alignment`` and the tensor data. Every value type the
spec defines is parsed (the eleven scalars, booleans as exactly ``0``/``1``, UTF-8 strings, arrays
of every item type, arrays nested up to :data:`MAX_NESTING` deep), little- or big-endian (the
byte order is told by the version field, as gguf-py's reader tells it). Everything is bounded:
counts, string lengths, the metadata region (:data:`MAX_METADATA_BYTES`), the items all arrays
together may hold, tensor ranks and element counts; tensor data must be aligned, lie inside the
file, and tile it exactly (the gaps between tensors, the padding and the end are zero bytes).

What the runtime renders is checked as a chat template: ``tokenizer.chat_template``, the named
templates ``tokenizer.chat_template.<name>`` (gguf-py's ``add_chat_template(list)`` writes them,
with ``tokenizer.chat_templates`` listing the names), any other key that names a chat template,
and any other string value that holds Jinja statements (``{% ... %}``).

:func:`parse_gguf` is the bytes entry point (for fuzzing): it returns a :class:`GGUFFile` or raises
:class:`GGUFFormatError`. :func:`scan_gguf` turns everything into findings and never raises for a
malformed file.
"""

import array
import io
import re
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from integrity.safeio import InputFormatError
from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import Allowlist
from integrity.scans.modelgate.templates import check_chat_template

# ggml tensor types: (elements per block, bytes per block), from ggml.h / gguf-py constants.
# Q8_1 (9) is 36 bytes as ggml defines block_q8_1 (two halves and 32 int8); gguf-py says 40.
GGML_TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
              10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
              16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
              22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
              29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18)}
#: GGUFValueType: struct codes of the scalar types (BOOL is read as a byte and must be 0 or 1).
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
BOOL, STRING, ARRAY, UINT32 = 7, 8, 9, 4
MAX_GGUF_COUNT = 1 << 24  # tensors, keys, items of one array
MAX_METADATA_BYTES = 256 << 20  # header, metadata and tensor infos together
MAX_TOTAL_ITEMS = 1 << 22  # string and array items of all arrays together (each becomes a Python object)
MAX_STRING_BYTES = 64 << 20
MAX_KEY_BYTES = 65535  # the spec's limit on a key
MAX_NESTING = 8
MAX_DIMS = 8
MAX_ALIGNMENT = 1 << 16
CHUNK = 1 << 20
TEMPLATE_KEY = "tokenizer.chat_template"
TEMPLATE_NAMES_KEY = "tokenizer.chat_templates"
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_]+")
_KEY = re.compile(r"[\x21-\x7e]+")


def _typecode(fmt: str) -> str:
    """An ``array`` typecode of the same width and signedness as a struct code."""
    width = struct.calcsize(f"<{fmt}")
    for code in {"B": "B", "b": "b", "H": "H", "h": "h", "I": "IL", "i": "il", "Q": "QL", "q": "ql", "f": "f",
                 "d": "d"}[fmt]:
        if array.array(code).itemsize == width:
            return code
    raise RuntimeError(f"no array typecode for {fmt}")  # pragma: no cover - every CPython platform has one


_TYPECODES = {vtype: _typecode(fmt) for vtype, fmt in SCALARS.items() if vtype != BOOL}


class GGUFFormatError(InputFormatError):
    """The bytes are not a GGUF file the gate can read to the end: a refusal, never a pass."""

    kind = "gguf-malformed"


@dataclass(frozen=True)
class GGUFValue:
    key: str
    vtype: int
    value: Any  # int, float, bool, str, list (strings, nested arrays, booleans) or array.array (numbers)
    offset: int
    item_type: int | None = None


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the contiguous dimension) first
    ttype: int
    offset: int  # relative to the start of the data section
    at: int  # where its info starts in the file


@dataclass
class GGUFFile:
    version: int
    byteorder: str  # "<" or ">"
    alignment: int
    metadata: dict[str, GGUFValue]
    tensors: list[GGUFTensor]
    info_end: int  # the end of the tensor infos
    data_start: int
    #: Problems that do not stop the reading: (offset, rule, detail).
    issues: list[tuple[int | None, str, str]] = field(default_factory=list)

    def issue(self, offset: int | None, rule: str, detail: str) -> None:
        self.issues.append((offset, rule, detail))


class _Cursor:
    """Reads the head of the file through a growing buffer, never past the file or the metadata bound."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size, self.pos, self.order = handle, size, 0, "<"
        self.buffer = bytearray()
        self.items = 0

    def _need(self, n: int) -> None:
        end = self.pos + n
        if n < 0 or end > self.size:
            raise GGUFFormatError(f"{n} bytes at offset {self.pos} run past the end of the file")
        if end > MAX_METADATA_BYTES:
            raise GGUFFormatError(f"metadata runs past {MAX_METADATA_BYTES} bytes")
        if end > len(self.buffer):
            want = min(self.size, MAX_METADATA_BYTES, max(end, len(self.buffer) + CHUNK)) - len(self.buffer)
            self.handle.seek(len(self.buffer))
            self.buffer += self.handle.read(want)
            if len(self.buffer) < end:
                raise GGUFFormatError("the file is shorter than its size")

    def take(self, n: int) -> bytes:
        self._need(n)
        data = bytes(self.buffer[self.pos:self.pos + n])
        self.pos += n
        return data

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        width = struct.calcsize(self.order + fmt)
        self._need(width)
        values = struct.unpack_from(self.order + fmt, self.buffer, self.pos)
        self.pos += width
        return values

    def raw_string(self, limit: int = MAX_STRING_BYTES) -> bytes:
        (length,) = self.unpack("Q")
        if length > limit:
            raise GGUFFormatError(f"string of {length} bytes at offset {self.pos - 8} (limit {limit})")
        return self.take(length)

    def string(self) -> str:
        at = self.pos
        try:
            return self.raw_string().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"string at offset {at} is not UTF-8: {exc}") from exc

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype == BOOL:
            (byte,) = self.unpack("B")
            if byte > 1:
                raise GGUFFormatError(f"boolean at offset {self.pos - 1} is {byte}, not 0 or 1")
            return bool(byte)
        if vtype in SCALARS:
            return self.unpack(SCALARS[vtype])[0]
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            return self.array(depth)[1]
        raise GGUFFormatError(f"unknown metadata value type {vtype} at offset {self.pos - 4}")

    def array(self, depth: int) -> tuple[int, Any]:
        if depth >= MAX_NESTING:
            raise GGUFFormatError(f"arrays nested deeper than {MAX_NESTING} at offset {self.pos}")
        itype, count = self.unpack("IQ")
        if count > MAX_GGUF_COUNT:
            raise GGUFFormatError(f"array of {count} items at offset {self.pos - 12}")
        if itype == BOOL:
            raw = self.take(count)
            if raw.translate(None, b"\x00\x01"):
                raise GGUFFormatError(f"boolean array before offset {self.pos} holds bytes other than 0 and 1")
            return itype, [bool(b) for b in raw]
        if itype in SCALARS:
            numbers = array.array(_TYPECODES[itype], self.take(struct.calcsize("<" + SCALARS[itype]) * count))
            if self.order != ("<" if sys.byteorder == "little" else ">"):
                numbers.byteswap()
            return itype, numbers
        if itype not in (STRING, ARRAY):
            raise GGUFFormatError(f"unknown array item type {itype} at offset {self.pos - 12}")
        self.items += count
        if self.items > MAX_TOTAL_ITEMS:
            raise GGUFFormatError(f"the arrays hold more than {MAX_TOTAL_ITEMS} strings and arrays together")
        if itype == STRING:  # token texts: bytes a tokenizer reads; an invalid sequence is kept, escaped
            return itype, [self.raw_string().decode("utf-8", "surrogateescape") for _ in range(count)]
        return itype, [self.array(depth + 1)[1] for _ in range(count)]


def _header(cursor: _Cursor) -> tuple[int, int, int]:
    if cursor.take(4) != b"GGUF":
        raise GGUFFormatError("no GGUF magic")
    raw = cursor.take(4)
    (version,) = struct.unpack("<I", raw)
    if version not in (2, 3):
        (swapped,) = struct.unpack(">I", raw)
        if swapped not in (2, 3):
            raise GGUFFormatError(f"GGUF version {version} is not supported (2 and 3 are)")
        cursor.order, version = ">", swapped
    tensors, kvs = cursor.unpack("QQ")
    if tensors > MAX_GGUF_COUNT or kvs > MAX_GGUF_COUNT:
        raise GGUFFormatError(f"implausible counts: {tensors} tensors, {kvs} keys")
    return version, tensors, kvs


def _metadata(cursor: _Cursor, kvs: int, gguf: GGUFFile) -> None:
    for _ in range(kvs):
        at = cursor.pos
        raw_key = cursor.raw_string(MAX_STRING_BYTES)
        key = raw_key.decode("utf-8", "replace")
        if len(raw_key) > MAX_KEY_BYTES or not _KEY.fullmatch(key):
            gguf.issue(at, "gguf.key", f"metadata key {key[:80]!r} is not printable ASCII of at most "
                       f"{MAX_KEY_BYTES} bytes (the spec's rule; look-alike keys are refused)")
        if key in gguf.metadata:
            gguf.issue(at, "gguf.duplicate-key", f"metadata key {key!r} appears twice")
        (vtype,) = cursor.unpack("I")
        if vtype == ARRAY:
            item_type, value = cursor.array(0)
            gguf.metadata.setdefault(key, GGUFValue(key, vtype, value, at, item_type))
        else:
            gguf.metadata.setdefault(key, GGUFValue(key, vtype, cursor.value(vtype), at))
    entry = gguf.metadata.get("general.alignment")
    if entry is not None:
        value = entry.value
        if entry.vtype != UINT32 or value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
            raise GGUFFormatError(f"general.alignment {value!r} is not a uint32 power of two up to {MAX_ALIGNMENT}")
        gguf.alignment = value


def _tensor_infos(cursor: _Cursor, count: int, gguf: GGUFFile) -> None:
    names: set[str] = set()
    for _ in range(count):
        at = cursor.pos
        name = cursor.string()
        if len(name.encode()) > MAX_KEY_BYTES:
            raise GGUFFormatError(f"tensor name of {len(name.encode())} bytes at offset {at}")
        (dims,) = cursor.unpack("I")
        if dims > MAX_DIMS:
            raise GGUFFormatError(f"tensor {name[:80]!r} has {dims} dimensions (limit {MAX_DIMS})")
        shape = cursor.unpack("Q" * dims)
        ttype, offset = cursor.unpack("IQ")
        if name in names:
            gguf.issue(at, "gguf.duplicate-tensor", f"tensor {name!r} appears twice")
        names.add(name)
        gguf.tensors.append(GGUFTensor(name, tuple(shape), ttype, offset, at))


def read_gguf(handle: BinaryIO, size: int) -> GGUFFile:
    """Parse header, metadata and tensor infos, and check the data layout (problems in ``issues``)."""
    cursor = _Cursor(handle, size)
    version, tensors, kvs = _header(cursor)
    gguf = GGUFFile(version, cursor.order, 32, {}, [], 0, 0)
    _metadata(cursor, kvs, gguf)
    _tensor_infos(cursor, tensors, gguf)
    gguf.info_end = cursor.pos
    gguf.data_start = -(-cursor.pos // gguf.alignment) * gguf.alignment
    _layout(handle, size, gguf)
    return gguf


def parse_gguf(data: bytes) -> GGUFFile:
    """Fuzzing entry point: a GGUF file from bytes. Raises :class:`GGUFFormatError` (a ``CairnError``)."""
    return read_gguf(io.BytesIO(data), len(data))


def _zero(handle: BinaryIO, start: int, end: int) -> bool:
    handle.seek(start)
    while start < end:
        chunk = handle.read(min(CHUNK, end - start))
        if not chunk or chunk.strip(b"\x00"):
            return False
        start += len(chunk)
    return True


def _tensor_bytes(tensor: GGUFTensor, gguf: GGUFFile) -> int | None:
    if tensor.ttype not in GGML_TYPES:
        gguf.issue(tensor.at, "gguf.tensor", f"tensor {tensor.name!r} has unknown type {tensor.ttype}")
        return None
    block, block_bytes = GGML_TYPES[tensor.ttype]
    numel = 1
    for dim in tensor.shape:
        numel *= dim
    if numel >= 1 << 63 or any(dim >= 1 << 63 for dim in tensor.shape):
        gguf.issue(tensor.at, "gguf.tensor", f"tensor {tensor.name!r}: {numel} elements overflow int64")
        return None
    row = tensor.shape[0] if tensor.shape else 1  # a 0-dimensional tensor is one element
    if row % block:
        gguf.issue(tensor.at, "gguf.tensor", f"tensor {tensor.name!r}: a row of {row} elements is "
                   f"not a whole number of {block}-element blocks")
        return None
    return numel // block * block_bytes


def _layout(handle: BinaryIO, size: int, gguf: GGUFFile) -> None:
    """Tensor data aligned, in the file, tiling it with zero padding only; nothing after the end."""
    align, start = gguf.alignment, gguf.data_start
    if not gguf.tensors:
        # No tensor data section: writers end the file after the metadata, with or without padding.
        if size not in (gguf.info_end, start) or not _zero(handle, gguf.info_end, size):
            gguf.issue(gguf.info_end, "gguf.trailing-data",
                       f"{size - gguf.info_end} bytes after the metadata of a GGUF file without tensors")
        return
    if start > size or not _zero(handle, gguf.info_end, start):
        gguf.issue(gguf.info_end, "gguf.padding", "the padding before the tensor data is missing or not zero")
        return
    position = 0
    for tensor in sorted(gguf.tensors, key=lambda t: (t.offset, t.name)):
        nbytes = _tensor_bytes(tensor, gguf)
        if nbytes is None:
            continue
        expected = -(-position // align) * align
        if tensor.offset % align:
            gguf.issue(tensor.at, "gguf.offsets", f"tensor {tensor.name!r} at {tensor.offset} is not {align}-aligned")
        elif tensor.offset < expected:
            gguf.issue(tensor.at, "gguf.offsets", f"tensor {tensor.name!r} overlaps the previous tensor")
        elif tensor.offset > expected:
            gguf.issue(tensor.at, "gguf.offsets", f"{tensor.offset - expected} bytes before tensor {tensor.name!r} "
                       "belong to no tensor (hidden data)")
        elif start + tensor.offset > size or not _zero(handle, start + position, start + tensor.offset):
            gguf.issue(start + position, "gguf.padding", f"non-zero padding before tensor {tensor.name!r}")
        position = max(position, tensor.offset + nbytes)
    end, padded = start + position, start + -(-position // align) * align
    if end > size:
        gguf.issue(end, "gguf.truncated", "tensor data runs past the end of the file")
    elif end < size < padded:
        gguf.issue(size, "gguf.padding", "the file ends inside the padding after the last tensor")
    elif size not in (end, padded) or not _zero(handle, end, size):
        gguf.issue(end, "gguf.trailing-data", f"{size - end} bytes after the last tensor are not its zero padding")


# -- chat templates ---------------------------------------------------------------------------------------


def _is_template_key(key: str) -> bool:
    return key != TEMPLATE_NAMES_KEY and (key == TEMPLATE_KEY or key.startswith(f"{TEMPLATE_KEY}.")
                                          or "chat_template" in key.lower())


def _check_template_names(gguf: GGUFFile, where: str, out: Findings) -> None:
    entry = gguf.metadata.get(TEMPLATE_NAMES_KEY)
    if entry is None:
        return
    if entry.vtype != ARRAY or entry.item_type != STRING:
        out.add(where, entry.offset, "gguf.chat-template", f"{TEMPLATE_NAMES_KEY} is not an array of template names")
        return
    for name in entry.value:
        if not _TEMPLATE_NAME.fullmatch(name):
            out.add(where, entry.offset, "gguf.chat-template",
                    f"{TEMPLATE_NAMES_KEY} lists {name[:80]!r}, not a template name (letters, digits, _)")
        elif f"{TEMPLATE_KEY}.{name}" not in gguf.metadata:
            out.add(where, entry.offset, "gguf.chat-template",
                    f"{TEMPLATE_NAMES_KEY} lists {name!r} but there is no {TEMPLATE_KEY}.{name} key")


def check_templates(gguf: GGUFFile, where: str, out: Findings) -> None:
    """Every template a runtime may render passes :func:`check_chat_template`; refusals name the key."""
    _check_template_names(gguf, where, out)
    for key, entry in gguf.metadata.items():
        named = _is_template_key(key)
        if named and entry.vtype != STRING:
            out.add(where, entry.offset, "gguf.chat-template", f"chat template {key!r} is not a string")
            continue
        if not named and not (entry.vtype == STRING and "{%" in entry.value and "%}" in entry.value):
            continue
        verdict = check_chat_template(entry.value)
        if not verdict.safe:
            what = "chat template" if named else "string holding Jinja statements (checked as a chat template)"
            out.add(where, entry.offset, "gguf.chat-template", f"{what} {key!r} refused: {verdict.reason}")


def scan_gguf(handle: BinaryIO, size: int, where: str, allowlist: Allowlist, out: Findings) -> None:
    """Header, metadata, tensor infos and data layout of a GGUF v2/v3 file; chat templates checked."""
    del allowlist  # GGUF holds no callables; kept for the uniform reader signature
    try:
        gguf = read_gguf(handle, size)
    except GGUFFormatError as exc:
        out.add(where, None, "gguf.malformed", f"cannot parse GGUF: {exc.reason}")
        return
    for offset, rule, detail in gguf.issues:
        out.add(where, offset, rule, detail)
    check_templates(gguf, where, out)
