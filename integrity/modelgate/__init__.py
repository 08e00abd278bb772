"""The model-file gate: refuse weights that could run code when loaded, by allowlist.

Formats are recognised by content, never by extension. Pickle streams are walked
symbolically without executing them: every callable must be a literal ``(module, name)``
pair on the reviewed allowlist (``allowlist.json``), and anything the walker cannot
account for is a finding. Any error during analysis is a finding too: the gate fails closed.

This is the first layer of the gate (pickle, legacy and zip PyTorch checkpoints,
safetensors, ``.npy``); other formats are refused as unsupported until they are inspected.
"""

import json
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from integrity.errors import ArtifactReadError

ALLOWLIST_PATH = Path(__file__).with_name("allowlist.json")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_STORAGE_SIZES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}


@dataclass(frozen=True)
class Finding:
    path: str
    offset: int | None
    rule: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "rule": self.rule, "detail": self.detail,
                "name": self.rule, "passed": False}


@dataclass(frozen=True)
class ScanReport:
    artifact: str
    safe: bool
    formats: dict[str, str]
    findings: tuple[Finding, ...]
    files_scanned: int
    allowlist_version: int = field(default=0)

    @property
    def reason(self) -> str:
        if self.safe:
            kinds = ", ".join(sorted(set(self.formats.values()))) or "none"
            return f"safe: {self.files_scanned} file(s) ({kinds})"
        shown = "; ".join(f"{f.path}@{f.offset}: {f.detail}" if f.offset is not None else f"{f.path}: {f.detail}"
                          for f in self.findings[:3])
        more = f"; and {len(self.findings) - 3} more" if len(self.findings) > 3 else ""
        return f"unsafe: {shown}{more}"

    def as_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "safe": self.safe, "reason": self.reason, "formats": self.formats,
                "findings": [f.as_dict() for f in self.findings], "files_scanned": self.files_scanned,
                "allowlist_version": self.allowlist_version}


@lru_cache(maxsize=1)
def load_allowlist() -> tuple[int, frozenset[tuple[str, str]]]:
    data = json.loads(ALLOWLIST_PATH.read_text(encoding="utf-8"))
    pairs = frozenset((str(c["module"]), str(c["name"])) for c in data["callables"])
    return int(data["version"]), pairs


def detect_format(path: Path) -> str:
    """What a file is, from its bytes."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:1] in (b"(", b"]", b"}", b"c") and head.rstrip().endswith(b"."):
        return "pickle"
    return "unknown"


class _Walker:
    """Symbolic pickle VM: tracks literal strings, globals and marks; executes nothing."""

    def __init__(self, where: str, allowed: frozenset[tuple[str, str]]) -> None:
        self.where, self.allowed = where, allowed
        self.findings: list[Finding] = []
        self.persistent_ids: list[tuple[Any, ...]] = []
        self.strings: list[str] = []

    def flag(self, pos: int | None, rule: str, detail: str) -> None:
        self.findings.append(Finding(self.where, pos, rule, detail))

    def check_global(self, module: Any, name: Any, pos: int) -> tuple[str, ...]:
        if not (isinstance(module, tuple) and module[0] == "str" and isinstance(name, tuple) and name[0] == "str"):
            self.flag(pos, "pickle.name-not-literal", "callable name is not a literal string (built at run time)")
            return ("obj",)
        mod, attr = module[1], name[1]
        if "." in attr:
            self.flag(pos, "pickle.dotted-name", f"dotted attribute path {mod}.{attr} is refused")
        elif (mod, attr) not in self.allowed:
            self.flag(pos, "pickle.callable-not-allowed", f"callable {mod}.{attr} is not on the allowlist")
        return ("global", mod, attr)

    def walk(self, data: bytes, start: int = 0) -> int:
        """Walk one pickle starting at ``start``; returns the offset just after STOP."""
        stack: list[Any] = []
        memo: dict[int, Any] = {}
        mark = object()
        import io

        stream = io.BytesIO(data)
        stream.seek(start)
        end = start
        for op, raw_arg, raw_pos in pickletools.genops(stream):
            name, pos = op.name, int(raw_pos or 0)
            arg: Any = raw_arg
            try:
                if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                            "BINSTRING", "STRING"):
                    stack.append(("str", arg))
                    self.strings.append(str(arg))
                elif name in ("PROTO", "FRAME"):
                    if name == "FRAME" and arg > len(data) - (pos + 9):
                        self.flag(pos, "pickle.bad-frame", f"FRAME of {arg} bytes runs past the end of the data")
                elif name == "STOP":
                    end = stream.tell()
                    break
                elif name == "MARK":
                    stack.append(mark)
                elif name in ("GLOBAL",):
                    module, _, attr = str(arg).partition(" ")
                    stack.append(self.check_global(("str", module), ("str", attr), pos))
                elif name == "STACK_GLOBAL":
                    attr, module = stack.pop(), stack.pop()
                    stack.append(self.check_global(module, attr, pos))
                elif name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID"):
                    self.flag(pos, "pickle.opcode-refused", f"opcode {name} is refused")
                    stack.append(("obj",))
                elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                    if name == "NEWOBJ_EX":
                        stack.pop()
                    stack.pop()
                    func = stack.pop()
                    if not (isinstance(func, tuple) and func[0] == "global"):
                        self.flag(pos, "pickle.call-non-global", f"{name} calls something other than an allowed global")
                    stack.append(("obj",))
                elif name == "BINPERSID":
                    pid = stack.pop()
                    self.persistent_ids.append(pid if isinstance(pid, tuple) else ("?",))
                    stack.append(("obj",))
                elif name in ("TUPLE", "LIST", "DICT", "FROZENSET", "APPENDS", "SETITEMS", "ADDITEMS", "POP_MARK"):
                    items = []
                    while stack[-1] is not mark:
                        items.append(stack.pop())
                    stack.pop()
                    if name == "TUPLE":
                        stack.append(("tuple", *reversed(items)))
                    elif name in ("LIST", "DICT", "FROZENSET"):
                        stack.append(("obj",))
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    items = [stack.pop() for _ in range(n)]
                    stack.append(("tuple", *reversed(items)))
                elif name in ("APPEND", "BUILD", "POP"):
                    stack.pop()
                elif name == "SETITEM":
                    stack.pop()
                    stack.pop()
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = stack[-1]
                elif name == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if int(arg) not in memo:
                        self.flag(pos, "pickle.bad-memo", f"memo index {arg} was never stored")
                    stack.append(memo.get(int(arg), ("obj",)))
                elif op.stack_before == [] and len(op.stack_after) == 1:
                    stack.append(("const",))  # numbers, bytes, None, booleans, empty containers
                else:
                    self.flag(pos, "pickle.opcode-unknown", f"opcode {name} is not understood by the gate")
            except IndexError:
                self.flag(pos, "pickle.stack", f"stack underflow at {name}")
                break
        else:
            self.flag(None, "pickle.no-stop", "pickle ends without STOP")
        return end


def _scan_pickle_bytes(data: bytes, where: str, *, single: bool = True) -> tuple[list[Finding], _Walker]:
    _, allowed = load_allowlist()
    walker = _Walker(where, allowed)
    try:
        end = walker.walk(data)
    except Exception as exc:  # fail closed: anything the walker cannot decode is a finding
        walker.flag(None, "pickle.malformed", f"cannot decode the pickle: {exc}")
        return walker.findings, walker
    if single and end < len(data):
        walker.flag(end, "pickle.trailing-data", f"{len(data) - end} bytes after STOP")
    return walker.findings, walker


def _scan_legacy_torch(data: bytes, where: str) -> list[Finding]:
    """Legacy ``torch.save``: magic, protocol, sys info, the state, storage keys, then raw storages."""
    _, allowed = load_allowlist()
    findings: list[Finding] = []
    offset = 0
    walkers = []
    for index in range(5):
        walker = _Walker(f"{where}#pickle{index + 1}", allowed if index == 3 else frozenset())
        try:
            offset = walker.walk(data, offset)
        except Exception as exc:
            findings.append(Finding(where, offset, "pickle.malformed", f"pickle {index + 1}: {exc}"))
            return findings
        findings += walker.findings
        walkers.append(walker)
    # What follows must be exactly the storages the state pickle declared, in the order of the
    # storage-key list: for each, an 8-byte element count and then that many elements.
    types: dict[str, str] = {}
    for pid in walkers[3].persistent_ids:
        try:
            # ("storage", <storage class global>, <key>, <location>, <numel>)
            if pid[1] != ("str", "storage") or pid[2][0] != "global" or pid[3][0] != "str":
                raise TypeError
            types[pid[3][1]] = pid[2][2]
        except (IndexError, TypeError):
            findings.append(Finding(where, None, "torch.persistent-id", f"unrecognised persistent id {pid!r}"[:200]))
    position = offset
    for key in walkers[4].strings:
        size = _STORAGE_SIZES.get(types.get(key, ""))
        if size is None or position + 8 > len(data):
            findings.append(Finding(where, position, "torch.storage", f"storage {key!r} is undeclared or truncated"))
            return findings
        (count,) = struct.unpack_from("<q", data, position)
        position += 8 + count * size
        if count < 0 or position > len(data):
            findings.append(Finding(where, position, "torch.storage", f"storage {key!r} runs past the end"))
            return findings
    if position != len(data):
        findings.append(Finding(where, position, "torch.trailing-data",
                                f"{len(data) - position} bytes after the declared storages"))
    if set(walkers[4].strings) != set(types):
        findings.append(Finding(where, offset, "torch.storage", "storage keys do not match the state's storages"))
    return findings


def _scan_zip(path: Path, where: str, formats: dict[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            for name in {n for n in names if names.count(n) > 1}:
                findings.append(Finding(where, None, "zip.duplicate-member", f"member {name!r} appears twice"))
            for info in infos:
                member = f"{where}!{info.filename}"
                if info.flag_bits & 0x1:
                    findings.append(Finding(member, info.header_offset, "zip.encrypted", "encrypted member"))
                    continue
                parts = info.filename.replace("\\", "/").split("/")
                if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
                    findings.append(Finding(member, info.header_offset, "zip.path-escape", "member escapes the root"))
                if info.file_size > 200 * max(info.compress_size, 1) and info.file_size > 10_000_000:
                    findings.append(Finding(member, info.header_offset, "zip.bomb", "compression ratio signals a bomb"))
                    continue
                data = archive.read(info)  # checks the CRC and the local header's name
                if info.filename.endswith(".pkl"):
                    formats[f"{where}!{info.filename}"] = "pickle"
                    found, _ = _scan_pickle_bytes(data, member)
                    findings += found
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError) as exc:
        findings.append(Finding(where, None, "zip.malformed", f"damaged or inconsistent zip: {exc}"))
    return findings


def _scan_safetensors(path: Path, where: str) -> list[Finding]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        if header_size > MAX_SAFETENSORS_HEADER or 8 + header_size > size:
            return [Finding(where, 0, "safetensors.header-size", f"header size {header_size} out of bounds")]
        try:
            header = json.loads(handle.read(header_size))
        except ValueError as exc:
            return [Finding(where, 8, "safetensors.header-json", f"header is not JSON: {exc}")]
    if not isinstance(header, dict):
        return [Finding(where, 8, "safetensors.header-json", "header is not an object")]
    findings: list[Finding] = []
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                findings.append(Finding(where, 8, "safetensors.metadata", "__metadata__ must map strings to strings"))
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            numel = 1
            for dim in shape:
                numel *= int(dim)
            if dtype not in _DTYPE_SIZES or end - begin != numel * _DTYPE_SIZES[dtype] or begin < 0:
                findings.append(Finding(where, 8, "safetensors.tensor", f"tensor {name!r}: bad dtype or offsets"))
            spans.append((begin, end, name))
        except (KeyError, TypeError, ValueError):
            findings.append(Finding(where, 8, "safetensors.tensor", f"tensor {name!r}: malformed entry"))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            findings.append(Finding(where, 8 + header_size + begin, "safetensors.offsets",
                                    f"tensor {name!r} overlaps or leaves a gap"))
        position = end
    if 8 + header_size + position != size:
        findings.append(Finding(where, 8 + header_size + position, "safetensors.trailing-data",
                                "data region does not end where the file ends"))
    return findings


def _scan_npy(path: Path, where: str) -> list[Finding]:
    import ast

    with open(path, "rb") as handle:
        head = handle.read(10)
        major = head[6]
        raw = head[8:10] if major == 1 else head[8:10] + handle.read(2)
        length = struct.unpack("<H" if major == 1 else "<I", raw)[0]
        try:
            header = ast.literal_eval(handle.read(length).decode("latin-1"))
        except (ValueError, SyntaxError) as exc:
            return [Finding(where, 10, "npy.header", f"unparseable header: {exc}")]
    descr = str(header.get("descr", "")) if isinstance(header, dict) else ""
    if "O" in descr or not descr:
        return [Finding(where, 10, "npy.object-dtype", f"dtype {descr!r} holds Python objects (needs pickle)")]
    return []


def _scan_file(path: Path, where: str, formats: dict[str, str]) -> list[Finding]:
    kind = detect_format(path)
    if kind == "zip" and _is_torch_zip(path):
        kind = "pytorch-zip"
    elif kind == "pickle" and _is_legacy_torch(path):
        kind = "pytorch-legacy"
    formats[where] = kind
    try:
        if kind == "pytorch-zip" or kind == "zip":
            return _scan_zip(path, where, formats)
        if kind == "pytorch-legacy":
            return _scan_legacy_torch(path.read_bytes(), where)
        if kind == "pickle":
            return _scan_pickle_bytes(path.read_bytes(), where)[0]
        if kind == "safetensors":
            return _scan_safetensors(path, where)
        if kind == "npy":
            return _scan_npy(path, where)
    except Exception as exc:  # fail closed
        return [Finding(where, None, "internal.error", f"{type(exc).__name__}: {exc}")]
    if kind == "unknown" and _is_text(path):
        formats[where] = "text"
        return []
    return [Finding(where, None, "format.unsupported", f"format {kind!r} is not inspected by the gate yet")]


def _is_text(path: Path) -> bool:
    data = path.read_bytes()[:65536]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data and path.stat().st_size < 1_000_000


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_legacy_torch(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(16)
    return head.startswith(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19")


def scan_path(path: str | Path, *, max_depth: int = 3) -> ScanReport:
    """Scan a file or a directory; unsafe content is a finding, unreadable input an error."""
    root = Path(path)
    if not root.exists():
        raise ArtifactReadError("no such model file or directory", artifact=root)
    version, _ = load_allowlist()
    formats: dict[str, str] = {}
    findings: list[Finding] = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.name != "model.sig")
    for file in files:
        where = file.name if file == root else str(file.relative_to(root))
        findings += _scan_file(file, where, formats)
    return ScanReport(str(root), not findings, formats, tuple(findings), len(files), version)
