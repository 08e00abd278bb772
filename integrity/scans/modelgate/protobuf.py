"""A minimal protocol-buffers wire-format reader (enough for ONNX and TensorFlow SavedModel).

It decodes fields without generated classes or the protobuf runtime, so inspecting a model never
imports the framework that would load it. Malformed wire data raises :class:`WireError`.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not valid protobuf wire format."""


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    value: Any  # int for VARINT/FIXED*, memoryview for LEN
    offset: int  # offset of the field's tag in the outermost buffer


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    for index in range(10):
        if pos + index >= end:
            raise WireError(f"varint runs past the end at {pos}")
        byte = data[pos + index]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + index + 1
        shift += 7
    raise WireError(f"varint longer than 10 bytes at {pos}")


def fields(data: bytes | memoryview, base: int = 0) -> Iterator[Field]:
    """Every field of one message, in order; ``base`` is the message's offset in the file."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        tag_at = pos
        key, pos = _varint(view, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at {base + tag_at}")
        if wire == VARINT:
            value, pos = _varint(view, pos, end)
            yield Field(number, wire, value, base + tag_at)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise WireError(f"fixed field runs past the end at {base + tag_at}")
            yield Field(number, wire, int.from_bytes(view[pos:pos + size], "little"), base + tag_at)
            pos += size
        elif wire == LEN:
            length, pos = _varint(view, pos, end)
            if pos + length > end:
                raise WireError(f"field {number} of {length} bytes runs past the end at {base + tag_at}")
            yield Field(number, wire, view[pos:pos + length], base + pos)
            pos += length
        else:
            raise WireError(f"unsupported wire type {wire} (groups) at {base + tag_at}")


def text(value: memoryview) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"string field is not UTF-8: {exc}") from exc


def matches(data: bytes | memoryview, schema: dict[int, int], required: set[int]) -> bool:
    """Does the message parse, with only the given field numbers and wire types, and the required ones?"""
    seen: set[int] = set()
    try:
        for f in fields(data):
            if schema.get(f.number) != f.wire:
                return False
            seen.add(f.number)
    except WireError:
        return False
    return required <= seen
