"""Keras models: ``.keras`` archives and legacy HDF5 ``.h5`` files.

Keras rebuilds a model by importing the ``module`` and ``class_name`` written in its config, and
a ``Lambda`` layer carries marshalled Python bytecode. The gate reads the config without Keras
(the HDF5 root-group attributes through a minimal HDF5 reader) and refuses Lambda layers, custom
objects, registered names from outside Keras, and modules or class names not on the allowlist.
"""

import re
import struct
from collections.abc import Iterator
from typing import Any

from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import Allowlist
from integrity.scans.modelgate.tensors import loader_json

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CONFIG_ATTRIBUTES = ("model_config", "training_config")
# Raw markers of code in a Keras config, searched over the whole file as a second line of defence.
_RAW_MARKERS = re.compile(rb'"class_name"\s*:\s*"(Lambda|TFOpLambda|SlicingOpLambda|__lambda__)"|"function_type"')


def check_config(config: Any, where: str, offset: int | None, allowlist: Allowlist, out: Findings) -> int:
    """Walk a Keras config tree; every object must be a Keras built-in on the allowlist."""
    checked = 0
    stack: list[tuple[Any, str]] = [(config, "")]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, list):
            stack += [(item, f"{trail}[{i}]") for i, item in enumerate(node)]
            continue
        if not isinstance(node, dict):
            continue
        stack += [(value, f"{trail}.{key}") for key, value in node.items()]
        if "function_type" in node or ("function" in node and isinstance(node.get("function"), (list, dict))):
            out.add(where, offset, "keras.lambda", f"{trail or 'config'} carries a serialized Python function")
        if "class_name" not in node:
            continue
        checked += 1
        class_name, module = node.get("class_name"), node.get("module")
        registered = node.get("registered_name")
        label = f"{trail or 'config'}: {module + '.' if isinstance(module, str) else ''}{class_name}"
        if not isinstance(class_name, str):
            out.add(where, offset, "keras.custom-object", f"{label} has a non-string class_name")
        elif class_name in allowlist.keras_refused:
            rule = "keras.lambda" if "ambda" in class_name else "keras.custom-object"
            out.add(where, offset, rule, f"{label} is refused: it runs Python code when the model loads",
                    f"{module}.{class_name}" if module else class_name)
        elif class_name not in allowlist.keras_class_names:
            out.add(where, offset, "keras.custom-object", f"{label} is not a Keras built-in on the allowlist",
                    f"{module}.{class_name}" if module else class_name)
        if module is not None and (not isinstance(module, str) or module not in allowlist.keras_modules):
            out.add(where, offset, "keras.custom-object", f"{label}: module {module!r} is not an allowed Keras module",
                    f"{module}.{class_name}")
        if not _builtin_registration(registered, class_name, allowlist):
            out.add(where, offset, "keras.custom-object", f"{label} has registered_name {registered!r} (custom object)",
                    registered if isinstance(registered, str) else None)
    return checked


def _builtin_registration(registered: Any, class_name: Any, allowlist: Allowlist) -> bool:
    """A built-in's ``registered_name``: none, its class name, or ``<allowed Keras module>.<class name>``.

    ``package>Name`` is how ``register_keras_serializable`` names custom objects; a dotted name must
    be a listed Keras module exactly (``kerasx.evil.Dense`` and ``keras_hub>Dense`` are both custom).
    """
    if registered is None or registered == class_name:
        return True
    if not isinstance(registered, str) or "." not in registered:
        return False
    module, _, name = registered.rpartition(".")
    return name == class_name and module in allowlist.keras_modules


def raw_markers(data: bytes, where: str, out: Findings) -> None:
    for match in _RAW_MARKERS.finditer(data):
        out.add(where, match.start(), "keras.lambda", f"raw Keras config marker {match.group(0)[:60]!r} in the file")


def scan_keras_json(raw: bytes, where: str, allowlist: Allowlist, out: Findings) -> None:
    check_loader_json(raw, where, 0, "config", allowlist, out)


def check_loader_json(raw: bytes, where: str, offset: int | None, what: str, allowlist: Allowlist,
                      out: Findings) -> None:
    """A Keras config as Keras reads it (``json.loads``), checked; a strict reader disagreeing is a refusal too."""
    try:
        config, disagreement = loader_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        out.add(where, offset, "keras.config", f"{what} is not JSON Keras can read: {exc}")
        return
    if disagreement is not None:
        out.add(where, offset, "keras.config", f"{what} reads differently to a strict and a lenient JSON reader "
                f"({disagreement}); Keras uses the lenient one")
    check_config(config, where, offset, allowlist, out)


# -- HDF5 ----------------------------------------------------------------------------------------------


class HDF5Error(ValueError):
    """Structure the minimal HDF5 reader does not understand: a refusal, never a pass."""


def scan_hdf5(data: bytes, where: str, allowlist: Allowlist, out: Findings) -> bool:
    """Read the root group's attributes; Keras configs among them are checked. Returns True for Keras files."""
    raw_markers(data, where, out)
    try:
        attributes = dict(_root_attributes(data))
    except (HDF5Error, struct.error, IndexError, UnicodeDecodeError) as exc:
        out.add(where, None, "hdf5.unsupported", f"HDF5 structure not understood by the gate: {exc}")
        return False
    keras = False
    for name in CONFIG_ATTRIBUTES:
        if name in attributes:
            keras = True
            value, offset = attributes[name]
            check_loader_json(value, where, offset, f"attribute {name}", allowlist, out)
    return keras or "keras_version" in attributes


def _root_attributes(data: bytes) -> Iterator[tuple[str, tuple[bytes, int | None]]]:
    superblock = _find_superblock(data)
    version = data[superblock + 8]
    if version in (0, 1):
        off_size, len_size = data[superblock + 13], data[superblock + 14]
        pos = superblock + (24 if version == 0 else 28)
        base = _uint(data, pos, off_size)
        end_of_file = _uint(data, pos + 2 * off_size, off_size)
        pos += 4 * off_size  # base address, free-space, end-of-file, driver info
        root_header = _uint(data, pos + off_size, off_size)  # root symbol table entry: name offset, header address
    elif version in (2, 3):
        off_size, len_size = data[superblock + 9], data[superblock + 10]
        base = _uint(data, superblock + 12, off_size)
        end_of_file = _uint(data, superblock + 12 + 2 * off_size, off_size)
        root_header = _uint(data, superblock + 12 + 3 * off_size, off_size)
    else:
        raise HDF5Error(f"superblock version {version}")
    if off_size not in (2, 4, 8) or len_size not in (2, 4, 8):
        raise HDF5Error(f"address size {off_size} / length size {len_size}")
    if base + end_of_file != len(data):
        raise HDF5Error(f"the superblock says the file ends at {base + end_of_file}, it has {len(data)} bytes")
    sizes = (off_size, len_size, base)
    for mtype, body, offset in _messages(data, base + root_header, sizes):
        if mtype == 0x15:  # attribute info: dense attribute storage lives in a fractal heap
            fheap = _uint(body, 2 + (2 if body[1] & 1 else 0), off_size)
            if fheap != (1 << (8 * off_size)) - 1:
                raise HDF5Error("dense attribute storage on the root group")
        if mtype == 0x0C:
            name, value = _attribute(body, data, base, sizes)
            if value is not None:
                yield name, (value, offset)


def _find_superblock(data: bytes) -> int:
    offset = 0
    while offset < len(data):
        if data[offset:offset + 8] == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    raise HDF5Error("no HDF5 superblock")


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise HDF5Error(f"read past the end at {pos}")
    return int.from_bytes(data[pos:pos + size], "little")


def _messages(data: bytes, address: int, sizes: tuple[int, int, int]) -> Iterator[tuple[int, bytes, int]]:
    off_size, len_size, base = sizes
    blocks: list[tuple[int, int, int]] = []  # (start, end, header version)
    if data[address:address + 4] == b"OHDR":
        flags = data[address + 5]
        pos = address + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        chunk = _uint(data, pos, width)
        blocks.append((pos + width, pos + width + chunk, 2))
        creation_order = bool(flags & 0x04)
    elif data[address] == 1:
        count, header_size = _uint(data, address + 2, 2), _uint(data, address + 8, 4)
        blocks.append((address + 16, address + 16 + header_size, 1))
        creation_order = False
        del count
    else:
        raise HDF5Error(f"object header version {data[address]} at {address}")
    seen = 0
    while blocks:
        start, end, hversion = blocks.pop(0)
        if end > len(data) or seen > 10_000:
            raise HDF5Error("object header runs past the end of the file")
        pos = start
        if hversion == 2 and data[start:start + 4] == b"OCHK":
            pos += 4
        limit = end - (4 if hversion == 2 else 0)
        while pos + (4 if hversion == 2 else 8) <= limit:
            seen += 1
            if hversion == 1:
                mtype, msize, mflags = _uint(data, pos, 2), _uint(data, pos + 2, 2), data[pos + 4]
                pos += 8
            else:
                mtype, msize, mflags = data[pos], _uint(data, pos + 1, 2), data[pos + 3]
                pos += 4 + (2 if creation_order else 0)
            body = data[pos:pos + msize]
            if len(body) != msize:
                raise HDF5Error("message runs past its header block")
            if mtype == 0x10:  # continuation
                block = base + _uint(body, 0, off_size)
                blocks.append((block, block + _uint(body, off_size, len_size), hversion))
            elif mflags & 0x02 and mtype == 0x0C:
                raise HDF5Error("shared attribute message")
            else:
                yield mtype, body, pos
            pos += msize
            if hversion == 1:
                pos = start + -(-(pos - start) // 8) * 8


def _attribute(body: bytes, data: bytes, base: int, sizes: tuple[int, int, int]) -> tuple[str, bytes | None]:
    version = body[0]
    name_size, type_size, space_size = _uint(body, 2, 2), _uint(body, 4, 2), _uint(body, 6, 2)
    pos = 8 + (1 if version == 3 else 0)

    def pad(n: int) -> int:
        return -(-n // 8) * 8 if version == 1 else n

    if version not in (1, 2, 3):
        raise HDF5Error(f"attribute message version {version}")
    if body[1] & 0x03 and version >= 2:
        raise HDF5Error("attribute with a shared datatype or dataspace")
    name = body[pos:pos + name_size].rstrip(b"\x00").decode("utf-8")
    pos += pad(name_size)
    dtype = body[pos:pos + type_size]
    pos += pad(type_size)
    space = body[pos:pos + space_size]
    pos += pad(space_size)
    value = body[pos:]
    dclass, size = dtype[0] & 0x0F, _uint(dtype, 4, 4)
    count = _elements(space, sizes[1])
    if dclass == 3:  # fixed-length string
        return name, value[:size * count].rstrip(b"\x00") if count == 1 else None
    if dclass == 9 and (dtype[1] & 0x0F) == 1 and count == 1:  # variable-length string in the global heap
        off_size = sizes[0]
        length, collection, index = _uint(value, 0, 4), _uint(value, 4, off_size), _uint(value, 4 + off_size, 4)
        return name, _global_heap_object(data, base + collection, index, sizes)[:length]
    return name, None


def _elements(space: bytes, len_size: int) -> int:
    version, rank = space[0], space[1]
    if version == 2 and space[3] == 0:
        return 1  # scalar
    if version == 2 and space[3] == 2:
        return 0  # null
    count = 1
    pos = 8 if version == 1 else 4
    for index in range(rank):
        count *= _uint(space, pos + index * len_size, len_size)
    return count


def _global_heap_object(data: bytes, address: int, index: int, sizes: tuple[int, int, int]) -> bytes:
    if data[address:address + 4] != b"GCOL":
        raise HDF5Error(f"no global heap collection at {address}")
    len_size = sizes[1]
    size = _uint(data, address + 8, len_size)
    pos, end = address + 8 + len_size, min(address + size, len(data))
    while pos + 8 + len_size <= end:
        obj_index, obj_size = _uint(data, pos, 2), _uint(data, pos + 8, len_size)
        if obj_index == 0:
            break
        start = pos + 8 + len_size
        if obj_index == index:
            return data[start:start + obj_size]
        pos = start + -(-obj_size // 8) * 8
    raise HDF5Error(f"global heap object {index} not found")
