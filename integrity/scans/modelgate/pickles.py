"""A symbolic pickle machine: it follows the opcode stream like the unpickler, but executes nothing.

Every value on the symbolic stack records where it came from, so the walker can tell a literal
string from one fetched out of a rewritten memo slot or built by a call, and a callable that came
from a ``GLOBAL`` opcode from anything else. The rules are those of an allowlist:

* every imported callable must be an exact ``(module, name)`` pair from ``allowlist.json``; a
  dotted name (``torch`` + ``hub.load``) or a name that is not a literal string is refused;
* calls (``REDUCE``, ``NEWOBJ``) may only call such an imported callable, with the argument shapes
  :mod:`integrity.scans.modelgate.rebuilds` models (those ``torch.save`` and NumPy write); a listed
  non-callable value (a dtype object, a quantisation scheme, a storage class) may be an argument,
  never be called;
* opcodes that the gate does not model precisely (``INST``, ``OBJ``, ``EXT*``, out-of-band
  buffers, text persistent ids) are refused, as are opcodes newer than the declared protocol;
* framing must be exact: frames lie inside the data, never nest or overlap, and no opcode straddles
  a frame boundary;
* a memo slot is written once; a fetched slot must exist;
* the stream ends with ``STOP`` and exactly one value, and nothing follows it unless the format
  says what follows (legacy PyTorch storages, joblib's raw array bytes).

Nothing the walker cannot account for passes: an unknown opcode or a decoding error is a finding.
"""

import pickletools
from typing import Any, BinaryIO

from integrity.scans.modelgate import rebuilds
from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import Allowlist
from integrity.scans.modelgate.rebuilds import MAX_PICKLE_ALLOCATION, TORCH_STORAGE_SIZES, StorageRef, Val, show

__all__ = ["JOBLIB_WRAPPER", "MAX_PICKLE_ALLOCATION", "TORCH_STORAGE_SIZES", "PickleWalker", "StorageRef", "Val",
           "danger", "shadow_imports"]

# Why a callable is dangerous, for reasons people can act on. Decisions never depend on this
# table: anything not on the allowlist is refused whether it is named here or not.
_CATEGORIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("torch.hub", "torch.load", "torch.serialization", "torch.storage", "numpy.load", "numpy.lib.npyio",
      "numpy.lib.format", "pickle", "_pickle", "cPickle", "joblib.load", "joblib.numpy_pickle.load", "dill",
      "cloudpickle", "shelve", "marshal", "pandas.read_pickle", "torch.jit"), "a nested loader that re-enables pickle"),
    (("os", "posix", "nt", "subprocess", "pty", "commands", "popen2", "spawn", "asyncio.subprocess"),
     "runs processes or shell commands"),
    (("multiprocessing", "concurrent.futures", "_posixsubprocess", "_winapi"), "starts processes"),
    (("logging.config",), "a logging.config factory that calls any named callable"),
    (("builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.getattr",
      "builtins.open", "builtins.breakpoint", "builtins.globals", "builtins.setattr", "builtins.vars",
      "__builtin__", "runpy", "code", "codeop", "importlib", "pydoc", "operator", "functools", "timeit",
      "pdb", "bdb", "trace", "profile", "cProfile", "idlelib", "lib2to3", "distutils", "imp", "types",
      "inspect", "ctypes", "cffi", "sys", "gc", "site", "sysconfig", "webbrowser", "antigravity"),
     "evaluates code or resolves names at run time"),
    (("socket", "urllib", "http", "requests", "ftplib", "smtplib", "telnetlib", "xmlrpc", "httplib", "ssl"),
     "reaches the network"),
    (("shutil", "tempfile", "pathlib", "io", "glob", "zipfile", "tarfile"), "touches the file system"),
)

_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_BYTES = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_INTS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_CONSTS = {"NONE": "none", "NEWTRUE": "bool", "NEWFALSE": "bool", "FLOAT": "float", "BINFLOAT": "float"}
_EMPTIES = {"EMPTY_LIST": "list", "EMPTY_TUPLE": "tuple", "EMPTY_DICT": "dict", "EMPTY_SET": "set"}
_REFUSED = {
    "INST": "calls a class named inline (protocol 0); not modelled",
    "OBJ": "calls a class from the stack (protocol 1); not modelled",
    "EXT1": "imports through the copyreg extension registry, not a literal name",
    "EXT2": "imports through the copyreg extension registry, not a literal name",
    "EXT4": "imports through the copyreg extension registry, not a literal name",
    "PERSID": "text persistent id: no model format uses it",
    "NEXT_BUFFER": "out-of-band buffer: the data is not in the file",
    "READONLY_BUFFER": "out-of-band buffer: the data is not in the file",
}
_NUMPY_KINDS = {"b": 1, "i": 0, "u": 0, "f": 0, "c": 0, "S": 0, "U": 0, "V": 0, "M": 0, "m": 0}
JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")


def danger(module: str, name: str) -> str:
    """A short explanation of what an imported callable could do (for messages only)."""
    dotted = f"{module}.{name}"
    for prefixes, why in _CATEGORIES:
        for prefix in prefixes:
            if dotted == prefix or module == prefix or module.startswith(prefix + ".") or dotted.startswith(
                    prefix + "."):
                return why
    return "not needed to rebuild tensors or plain containers"


class _Stop(Exception):
    """Raised in shadow mode at the first thing the real unpickler would fail on."""


MARK = Val("mark")


class PickleWalker:
    """Walks one pickle stream symbolically and collects findings.

    ``context`` decides what the format around the pickle allows: ``"pickle"`` (a plain pickle or
    joblib file), ``"torch"`` (a PyTorch state pickle: storage persistent ids), ``"torch-header"``
    (the legacy format's magic number, system info and storage-key list: no imports at all).
    ``shadow=True`` answers a different question for polyglot checks: walking bytes that are *not*
    meant to be a pickle, would ``pickle.load`` import anything before it fails?
    """

    def __init__(self, where: str, allowlist: Allowlist, *, context: str = "pickle", shadow: bool = False,
                 findings: Findings | None = None) -> None:
        self.where, self.allowlist, self.context, self.shadow = where, allowlist, context, shadow
        self.findings = findings if findings is not None else Findings()
        self.storages: list[StorageRef] = []
        self.strings: list[str] = []
        self.imports: list[tuple[int, str, str]] = []
        self.joblib_arrays = 0
        self.result: Val | None = None

    # -- findings ---------------------------------------------------------------------------------

    def flag(self, pos: int | None, rule: str, detail: str, callable: str | None = None) -> None:
        if self.shadow:
            raise _Stop(detail)
        self.findings.add(self.where, pos, rule, detail, callable)

    # -- the walk ---------------------------------------------------------------------------------

    def walk(self, stream: BinaryIO, start: int, end: int) -> int | None:
        """Walk one pickle from ``start``; returns the offset just after STOP (None in shadow mode on failure)."""
        stream.seek(start)
        try:
            return self._walk(stream, end)
        except _Stop:
            return None
        except Exception as exc:  # anything the opcode decoder rejects
            if self.shadow:
                return None
            self.findings.add(self.where, stream.tell(), "pickle.malformed", f"cannot decode the pickle: {exc}")
            return None

    def _walk(self, stream: BinaryIO, end: int) -> int | None:
        stack: list[Val] = []
        metastack: list[list[Val]] = []
        memo: dict[int, Val] = {}
        proto = 0
        frame_end: int | None = None
        seen_proto = False
        first = True
        for op, raw_arg, raw_pos in pickletools.genops(stream):
            arg: Any = raw_arg
            pos = int(raw_pos or 0)
            name = op.name
            after = stream.tell()
            if after > end:
                self.flag(pos, "pickle.truncated", f"opcode {name} runs past the end of the data")
                return None
            if frame_end is not None:
                if pos < frame_end < after:
                    self.flag(pos, "pickle.bad-frame", f"opcode {name} straddles the end of a frame at {frame_end}")
                if pos >= frame_end:
                    frame_end = None
            if name != "PROTO" and op.proto > max(proto, 1):
                self.flag(pos, "pickle.opcode-protocol", f"opcode {name} needs protocol {op.proto}, stream is {proto}")
            if name == "PROTO":
                if seen_proto or not first:
                    self.flag(pos, "pickle.bad-proto", "PROTO after the start of the stream")
                if not 2 <= int(arg) <= 5:
                    self.flag(pos, "pickle.bad-proto", f"unknown protocol {arg}")
                proto, seen_proto = int(arg), True
            elif name == "FRAME":
                if frame_end is not None:
                    self.flag(pos, "pickle.bad-frame", "a new frame starts before the previous one ends")
                if int(arg) > end - after:
                    self.flag(pos, "pickle.bad-frame", f"FRAME of {arg} bytes runs past the end of the data")
                frame_end = after + int(arg)
            elif name in _STRINGS:
                value = arg if isinstance(arg, str) else str(arg)
                stack.append(Val("str", value))
                self.strings.append(value)
            elif name in _BYTES:
                stack.append(Val("bytes", arg))
            elif name in _INTS:
                stack.append(Val("int", int(arg)) if not isinstance(arg, bool) else Val("bool", arg))
            elif name in _CONSTS:
                stack.append(Val(_CONSTS[name], arg if name.endswith("FLOAT") else {"NEWTRUE": True,
                                                                                    "NEWFALSE": False}.get(name)))
            elif name in _EMPTIES:
                stack.append(Val(_EMPTIES[name]))
            elif name == "MARK":
                metastack.append(stack)
                stack = []
            elif name == "STOP":
                if metastack:
                    self.flag(pos, "pickle.unbalanced", "STOP with an open MARK")
                if len(stack) != 1:
                    self.flag(pos, "pickle.unbalanced", f"STOP with {len(stack)} values on the stack, not 1")
                self.result = stack[-1] if stack else None
                return after
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, attr = str(arg).partition(" ")
                    stack.append(self._global(Val("str", module), Val("str", attr), pos))
                else:
                    attr_v, module_v = stack.pop(), stack.pop()
                    stack.append(self._global(module_v, attr_v, pos))
            elif name in _REFUSED:
                self.flag(pos, "pickle.opcode-refused", f"opcode {name} is refused: {_REFUSED[name]}")
                return None
            elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                kwargs = stack.pop() if name == "NEWOBJ_EX" else None
                args = stack.pop()
                func = stack.pop()
                stack.append(self._call(name, func, args, kwargs, pos))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if target.kind != "obj":
                    self.flag(pos, "pickle.build-non-object", f"BUILD sets state on a {target.kind}, not an object")
                rebuilds.check_build(self.flag, target, state, pos)
                target.state = state
                if target.value == JOBLIB_WRAPPER and self.context == "pickle":
                    if frame_end is not None and after != frame_end:
                        self.flag(pos, "pickle.bad-frame", "joblib array data starts inside a pickle frame")
                    frame_end = None
                    skip = self._joblib_array(target, stream, after, end, pos)
                    if skip is None:
                        return None
                    stream.seek(after + skip)
            elif name == "BINPERSID":
                stack.append(self._persistent(stack.pop(), pos))
            elif name in ("TUPLE", "LIST", "FROZENSET", "DICT"):
                items, stack = stack, metastack.pop()
                kind = {"TUPLE": "tuple", "LIST": "list", "FROZENSET": "frozenset", "DICT": "dict"}[name]
                if name == "DICT" and len(items) % 2:
                    self.flag(pos, "pickle.unbalanced", "DICT with an odd number of items")
                stack.append(Val(kind, items=items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                count = int(name[-1])
                items = stack[-count:]
                if len(items) != count:
                    raise IndexError
                del stack[-count:]
                stack.append(Val("tuple", items=items))
            elif name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"):
                if name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                    items, stack = stack, metastack.pop()
                else:
                    count = 1 if name == "APPEND" else 2
                    items = stack[-count:]
                    if len(items) != count:
                        raise IndexError
                    del stack[-count:]
                target = stack[-1]
                wanted = {"APPEND": ("list",), "APPENDS": ("list",), "SETITEM": ("dict", "obj"),
                          "SETITEMS": ("dict", "obj"), "ADDITEMS": ("set",)}[name]
                if target.kind not in wanted or (target.kind == "obj" and target.value != ("collections",
                                                                                          "OrderedDict")):
                    self.flag(pos, "pickle.container", f"{name} on a {target.kind} ({_show(target)}) is not modelled")
                if name.startswith("SETITEM") and len(items) % 2:
                    self.flag(pos, "pickle.unbalanced", f"{name} with an odd number of items")
                target.items.extend(items)
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                stack = metastack.pop()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                index = len(memo) if name == "MEMOIZE" else int(arg)
                if index in memo:
                    self.flag(pos, "pickle.memo-rewritten", f"memo slot {index} is written twice")
                if not stack:
                    raise IndexError
                memo[index] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    self.flag(pos, "pickle.bad-memo", f"memo slot {arg} is read before it is written")
                    return None
                stack.append(memo[int(arg)])
            else:
                self.flag(pos, "pickle.opcode-unknown", f"opcode {name} is not modelled by the gate")
                return None
            first = False
        self.flag(None, "pickle.no-stop", "the pickle ends without STOP")
        return None

    # -- imports and calls --------------------------------------------------------------------------

    def _global(self, module_v: Val, attr_v: Val, pos: int) -> Val:
        if module_v.kind != "str" or attr_v.kind != "str":
            self.flag(pos, "pickle.name-not-literal",
                      f"imported name is not a literal string (module {_show(module_v)}, name {_show(attr_v)})")
            return Val("global", ("?", "?"))
        module, attr = str(module_v.value), str(attr_v.value)
        dotted = f"{module}.{attr}"
        if self.shadow:
            if all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attr.split(".")):
                self.imports.append((pos, module, attr))
                raise _Stop(dotted)
            raise _Stop("not an importable name")
        self.imports.append((pos, module, attr))
        if "." in attr:
            self.flag(pos, "pickle.dotted-name",
                      f"dotted attribute path {module} + {attr!r} is refused (reaches {dotted} through attributes)",
                      dotted)
        elif self.context == "torch-header":
            self.flag(pos, "pickle.callable-not-allowed",
                      f"callable {dotted} in a legacy PyTorch header pickle, which imports nothing", dotted)
        elif self.allowlist.value_role(module, attr) is not None:
            return Val("value", (module, attr))  # a dtype object or the like: an argument, never a callable
        elif not self.allowlist.allows(module, attr):
            self.flag(pos, "pickle.callable-not-allowed",
                      f"callable {dotted} is not on the allowlist ({danger(module, attr)})", dotted)
        elif (module, attr) == JOBLIB_WRAPPER and self.context != "pickle":
            self.flag(pos, "pickle.callable-not-allowed", f"callable {dotted} outside a joblib file", dotted)
        return Val("global", (module, attr))

    def _call(self, opcode: str, func: Val, args: Val, kwargs: Val | None, pos: int) -> Val:
        if func.kind == "value":
            self.flag(pos, "pickle.call-value", f"{opcode} calls {'.'.join(func.value)}, a "
                      f"{self.allowlist.value_role(*func.value)} value that is never called when torch.save writes it")
            return Val("obj", ("?", "?"))
        if func.kind != "global":
            self.flag(pos, "pickle.call-non-global", f"{opcode} calls a {func.kind} ({_show(func)}), not an import")
            return Val("obj", ("?", "?"))
        if args.kind != "tuple" or (kwargs is not None and kwargs.kind != "dict"):
            self.flag(pos, "pickle.call-arguments", f"{opcode} of {'.'.join(func.value)} with non-tuple arguments")
        if opcode != "REDUCE" and func.value == JOBLIB_WRAPPER and args.items:
            self.flag(pos, "pickle.call-arguments", "NumpyArrayWrapper is created with arguments")
        rebuilds.check_call(self.flag, func.value, args, pos, self.allowlist.values)
        if func.value == ("_codecs", "encode"):
            encoding = args.items[1].literal() if len(args.items) == 2 and isinstance(args.items[1], Val) else None
            if not isinstance(encoding, str) or encoding.lower().replace("-", "").replace("_", "") not in (
                    "latin1", "iso88591"):
                self.flag(pos, "pickle.call-arguments",
                          f"_codecs.encode with encoding {encoding!r}: NumPy pickles only use latin1")
        return Val("obj", func.value, items=list(args.items))

    def _persistent(self, pid: Val, pos: int) -> Val:
        if self.context != "torch":
            self.flag(pos, "pickle.persistent-id", "persistent id outside a PyTorch checkpoint")
            return Val("storage")
        value, ref = rebuilds.persistent(self.flag, pid, pos, self.allowlist.values)
        if ref is not None:
            self.storages.append(ref)
        return value

    def _joblib_array(self, wrapper: Val, stream: BinaryIO, start: int, end: int, pos: int) -> int | None:
        """joblib writes an array's raw bytes right after its wrapper's BUILD: size them exactly."""
        state = wrapper.state
        fields: dict[str, Val] = {}
        if state is not None and state.kind == "dict":
            pairs = state.items
            for key, value in zip(pairs[0::2], pairs[1::2], strict=False):
                if key.kind == "str":
                    fields[str(key.value)] = value
        shape = fields.get("shape")
        dims = shape.literal() if shape is not None else None
        dtype = fields.get("dtype")
        subclass = fields.get("subclass")
        itemsize = _dtype_itemsize(dtype)
        if (not isinstance(dims, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in dims) or subclass is None
                or subclass.value not in (("numpy", "ndarray"),) or subclass.kind != "global"):
            self.flag(pos, "joblib.wrapper", "joblib array header without a plain ndarray class and integer shape")
            return None
        if itemsize == -1:
            self.flag(pos, "pickle.nested-loader",
                      "joblib array of object dtype: joblib would call pickle.load on the following bytes",
                      "pickle.load")
            return None
        if itemsize is None:
            self.flag(pos, "joblib.dtype", f"joblib array dtype not understood: {_show(dtype) if dtype else None}")
            return None
        nbytes = itemsize
        for d in dims:
            nbytes *= d
        skip = 0
        if "numpy_array_alignment_bytes" in fields:
            stream.seek(start)
            pad = stream.read(1)
            if len(pad) != 1 or pad[0] >= 64:
                self.flag(start, "joblib.padding", "joblib alignment padding is missing or too long")
                return None
            skip = 1 + pad[0]
            if stream.read(pad[0]).strip(b"\xff\x00") not in (b"",):
                self.flag(start, "joblib.padding", "joblib alignment padding holds data")
        if start + skip + nbytes > end:
            self.flag(start, "joblib.truncated", f"joblib array of {nbytes} bytes runs past the end of the data")
            return None
        self.joblib_arrays += 1
        wrapper.value = ("numpy", "ndarray")
        if not self.shadow and nbytes:
            self._shadow_check(stream, start + skip, start + skip + nbytes)
        return skip + nbytes

    def _shadow_check(self, stream: BinaryIO, start: int, end: int) -> None:
        """Raw array bytes that ``pickle.load`` would read as opcodes must not import anything."""
        shadow = PickleWalker(self.where, self.allowlist, shadow=True)
        shadow.walk(stream, start, end)
        for offset, module, name in shadow.imports:
            self.findings.add(self.where, offset, "joblib.hidden-pickle",
                              f"raw array bytes decode as a pickle that imports {module}.{name}", f"{module}.{name}")


def _dtype_itemsize(dtype: Val | None) -> int | None:
    """Bytes per element of a pickled ``numpy.dtype('f8', False, True)``; -1 for object dtypes."""
    if dtype is None or dtype.kind != "obj" or dtype.value != ("numpy", "dtype") or not dtype.items:
        return None
    code = dtype.items[0]
    if code.kind != "str":
        return None
    text = str(code.value).lstrip("<>|=")
    if text.startswith("O"):
        return -1
    kind, digits = text[:1], text[1:]
    if kind not in _NUMPY_KINDS or (digits and not (digits.isascii() and digits.isdigit())):
        return None
    if kind == "b":
        return 1
    size = int(digits) if digits else 0
    if kind in ("M", "m"):
        return 8
    if kind == "U":
        return 4 * size
    return size or None


_show = show


def shadow_imports(stream: BinaryIO, start: int, end: int, allowlist: Allowlist) -> list[tuple[int, str, str]]:
    """What ``pickle.load`` would import from these bytes before it fails (polyglot check)."""
    walker = PickleWalker("", allowlist, shadow=True)
    walker.walk(stream, start, end)
    return walker.imports
