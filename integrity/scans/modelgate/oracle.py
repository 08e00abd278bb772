"""Would a real unpickler import or call anything from these bytes? Asked of the real unpicklers.

The strict walker (:mod:`integrity.scans.modelgate.pickles`) decides whether a *pickle* is safe. This
module answers the question before it: is a file that looks like text (or like some other format)
a pickle at all? ``pickle.load``, ``joblib.load``, ``torch.load(weights_only=False)`` and
``numpy.load(allow_pickle=True)`` all read a stream that does not start with their own magic as a
pickle, and a pickle of printable ASCII (``(S'x'\\nios\\nsystem\\n.``) is also valid UTF-8 text.

A symbolic model of the unpickler stops wherever the model is stricter than the unpickler (a memo
slot written twice, ``INST``, ``OBJ``), and so misses payloads behind such an opcode. So this
oracle runs the real unpicklers, CPython's C ``pickle.Unpickler`` and the pure-Python
``pickle._Unpickler`` that joblib subclasses, with ``find_class`` and ``persistent_load`` replaced
by functions that record the request and stop. Before its first import, an unpickler can only
build str, bytes, int, float, tuple, list, dict and set values: nothing runs. Extension codes
(``EXT1/2/4``) are looked up in this process's copyreg registry, which may differ from a
victim's, so any extension opcode in the decodable prefix counts as an import as well.

The verdict is "the bytes are a pickle" when either unpickler reaches an import or an extension,
or reads the stream to ``STOP``. A persistent id is answered with ``None`` and the walk goes on,
as PyTorch's legacy loader would. Such bytes then go through the strict walker, and a walk that
stops early is a refusal.
"""

import io
import pickle
import pickletools
import struct
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

#: Bytes the oracle reads (text files over this size are refused by the text rules anyway).
MAX_ORACLE_BYTES = 64 << 20
#: Memo slots above this make the C unpickler's memo array large; only the Python one is asked then.
MAX_C_MEMO_INDEX = 1 << 16


class _Reached(Exception):
    def __init__(self, what: str, callable: str | None = None) -> None:
        super().__init__(what)
        self.what, self.callable = what, callable


def _importable(dotted: str) -> bool:
    return bool(dotted) and all(part.isidentifier() for part in dotted.split("."))


def _find_class(module: str, name: str) -> object:
    if isinstance(module, str) and isinstance(name, str) and _importable(module) and _importable(name):
        raise _Reached(f"import {module}.{name}", f"{module}.{name}")
    raise ModuleNotFoundError(module)  # what the real find_class does with a name nothing can import


class _CUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        return _find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        return None  # as a loader with persistent ids (torch) would go on: look further


class _PyUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, except that BYTEARRAY8 cannot allocate more than the input holds.

    The stock one zero-fills ``bytearray(n)`` for the declared length before reading: a 700-byte
    stream declaring 2**34 bytes takes seconds and gigabytes. Data beyond the input cannot be read
    anyway, so refusing the length first changes no verdict.
    """

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)
    limit = MAX_ORACLE_BYTES

    def load_bytearray8(self) -> None:
        this: Any = self  # the pure-Python unpickler's read/append are set per instance in load()
        (length,) = struct.unpack("<Q", this.read(8))
        if length > self.limit:
            raise pickle.UnpicklingError("BYTEARRAY8 longer than the data")
        data = this.read(length)
        if len(data) != length:
            raise pickle.UnpicklingError("pickle data was truncated")
        this.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def find_class(self, module: str, name: str) -> object:
        return _find_class(module, name)

    def persistent_load(self, pid: object) -> object:
        return None


@dataclass(frozen=True)
class OracleVerdict:
    """``pickle``: a real unpickler imports or finishes; ``imports``: it imports (not only finishes)."""

    pickle: bool
    imports: bool
    why: str
    callable: str | None = None


def _run(factory: type, stream: BinaryIO) -> tuple[bool, str, str | None] | None:
    limit = sys.getrecursionlimit()
    stream.seek(0)
    try:
        unpickler = factory(stream)
        unpickler.limit = len(stream.getbuffer()) if isinstance(stream, io.BytesIO) else MAX_ORACLE_BYTES
        unpickler.load()
    except _Reached as reached:
        return True, reached.what, reached.callable
    except RecursionError:
        return None
    except Exception:
        return None
    finally:
        sys.setrecursionlimit(limit)
    return False, "a complete pickle (reads to STOP)", None


def _extension_in_prefix(stream: BinaryIO) -> bool:
    stream.seek(0)
    try:
        for op, _arg, pos in pickletools.genops(stream):
            if pos is not None and pos > MAX_ORACLE_BYTES:
                return False
            if op.name in ("EXT1", "EXT2", "EXT4"):
                return True
            if op.name == "STOP":
                return False
    except Exception:
        return False
    return False


_CHILD = r"""
import io, pickle, sys
class Reached(Exception):
    pass
def ok(dotted):
    return bool(dotted) and all(p.isidentifier() for p in dotted.split("."))
class U(pickle.Unpickler):
    def find_class(self, module, name):
        if isinstance(module, str) and isinstance(name, str) and ok(module) and ok(name):
            raise Reached(module + "." + name)
        raise ModuleNotFoundError(module)
    def persistent_load(self, pid):
        return None
sys.setrecursionlimit(10000)
data = sys.stdin.buffer.read()
try:
    U(io.BytesIO(data)).load()
    print("complete")
except Reached as r:
    print("import " + r.args[0])
except MemoryError:
    print("memory")
except BaseException:
    print("fail")
"""
#: Address space and time the C unpickler gets in its child process.
CHILD_MEMORY = 1 << 30
CHILD_SECONDS = 20.0


_CODE2OP = {op.code: op for op in pickletools.opcodes}


def _memo_slots(data: bytes) -> list[int]:
    """Memo slots PUT/BINPUT/LONG_BINPUT name, along the opcode boundaries the C unpickler would take.

    The walk decodes argument *lengths* only (not their values), so it goes at least as far as the
    C unpickler, which also stops at the first unknown opcode; it may go further, never less far.
    """
    import pickletools

    slots: list[int] = []
    at, size = 0, len(data)
    while at < size:
        op = _CODE2OP.get(chr(data[at]))
        if op is None:
            break
        at += 1
        arg = op.arg
        lines = 2 if op.name in ("GLOBAL", "INST") else 1
        if arg is None:
            value = b""
        elif arg.n == pickletools.UP_TO_NEWLINE:
            begin = at
            for _ in range(lines):
                newline = data.find(b"\n", at)
                if newline < 0:
                    return slots
                at = newline + 1
            value = data[begin:at]
        elif arg.n > 0:
            value, at = data[at:at + arg.n], at + arg.n
        else:
            width = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                     pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}[arg.n]
            if at + width > size:
                return slots
            length = int.from_bytes(data[at:at + width], "little", signed=arg.n == pickletools.TAKEN_FROM_ARGUMENT4)
            if length < 0 or at + width + length > size:
                return slots
            value, at = b"", at + width + length
        if op.name == "PUT":
            digits = value.split(b"\n", 1)[0].split(b"\x00", 1)[0].strip()
            slots.append(int(digits) if digits.isdigit() and len(digits) < 20 else MAX_C_MEMO_INDEX + 1)
        elif op.name in ("BINPUT", "LONG_BINPUT") and arg is not None and len(value) == arg.n:
            slots.append(int.from_bytes(value, "little"))
        elif op.name == "STOP":
            break
    return slots


def _may_grow_c_memo(data: bytes) -> bool:
    """Whether the C unpickler could be asked for a memo slot above the limit.

    It keeps its memo as an array sized by the largest slot number and zero-fills it: ten bytes
    with ``LONG_BINPUT 2**31`` make it touch 16 GB.
    """
    return any(slot > MAX_C_MEMO_INDEX for slot in _memo_slots(data))


def _c_in_child(data: bytes) -> tuple[bool, str, str | None] | None:
    """The C unpickler in a child with bounded memory and time; exhausting either counts as a pickle."""
    import resource
    import subprocess

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    try:
        run = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD], input=data, capture_output=True,
                             timeout=CHILD_SECONDS, preexec_fn=limits, check=False)
    except subprocess.TimeoutExpired:
        return True, "the C unpickler did not finish within its time limit (treated as a pickle)", None
    answer = run.stdout.decode("ascii", "replace").strip()
    if answer.startswith("import "):
        return True, f"import {answer[7:]}", answer[7:]
    if answer == "complete":
        return False, "a complete pickle (reads to STOP)", None
    if answer == "fail":
        return None
    return True, "the C unpickler needs more memory than the data can justify (treated as a pickle)", None


def unpickler_verdict(source: bytes | BinaryIO, *, window: int | None = None) -> OracleVerdict:
    """Ask both real unpicklers whether ``source`` (read from its start) is a pickle that does anything.

    The first ``window`` bytes are read into memory, so that no length field in the stream can make
    an unpickler ask the file for more than that.
    """
    window = MAX_ORACLE_BYTES if window is None else min(window, MAX_ORACLE_BYTES)
    if isinstance(source, bytes | bytearray):
        data = io.BytesIO(bytes(source[:window]))
    else:
        source.seek(0)
        data = io.BytesIO(source.read(window))
    complete: str | None = None
    raw = data.getvalue()
    for name in ("pickle.Unpickler", "pickle._Unpickler"):
        if name == "pickle._Unpickler":
            outcome = _run(_PyUnpickler, data)
        elif _may_grow_c_memo(raw):
            outcome = _c_in_child(raw)  # could allocate gigabytes in this process
        else:
            outcome = _run(_CUnpickler, data)
        if outcome is not None and outcome[0]:
            return OracleVerdict(True, True, f"{name} reads it as a pickle: {outcome[1]}", outcome[2])
        if outcome is not None:
            complete = f"{name} reads it as {outcome[1]}"
    if _extension_in_prefix(data):
        return OracleVerdict(True, True, "the stream uses a copyreg extension code (an import by number)")
    if complete is not None:
        return OracleVerdict(True, False, complete)
    return OracleVerdict(False, False, "both unpicklers fail before any import")
