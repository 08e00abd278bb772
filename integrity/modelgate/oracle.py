"""Would a real unpickler import or call anything from these bytes? Asked of the real unpicklers.

The strict walker (:mod:`integrity.modelgate.pickles`) decides whether a *pickle* is safe. This
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
import sys
from dataclasses import dataclass
from typing import BinaryIO

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
        factory(stream).load()
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


def _max_memo_index(stream: BinaryIO) -> int:
    stream.seek(0)
    highest = -1
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int):
                highest = max(highest, arg)
            if op.name == "STOP":
                break
    except Exception:
        return highest
    return highest


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
    unpicklers: list[tuple[str, type]] = [("pickle._Unpickler", _PyUnpickler)]
    # The C unpickler keeps its memo as an array sized by the largest slot number: a ten-byte stream
    # with PUT 99999999 makes it allocate gigabytes. The Python one (a dict memo) answers alone then.
    if _max_memo_index(data) <= MAX_C_MEMO_INDEX:
        unpicklers.insert(0, ("pickle.Unpickler", _CUnpickler))
    for name, factory in unpicklers:
        outcome = _run(factory, data)
        if outcome is not None and outcome[0]:
            return OracleVerdict(True, True, f"{name} reads it as a pickle: {outcome[1]}", outcome[2])
        if outcome is not None:
            complete = f"{name} reads it as {outcome[1]}"
    if _extension_in_prefix(data):
        return OracleVerdict(True, True, "the stream uses a copyreg extension code (an import by number)")
    if complete is not None:
        return OracleVerdict(True, False, complete)
    return OracleVerdict(False, False, "both unpicklers fail before any import")
