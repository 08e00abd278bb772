"""The argument shapes of the allowlisted calls: what PyTorch and NumPy themselves write, nothing more.

:mod:`integrity.scans.modelgate.pickles` walks the opcodes; this module holds the rules for what an
allowlisted callable may be called with, and for the values a pickle may name without calling them.
The model is that of ``torch.load(weights_only=True)`` (torch 2.13, ``torch/_weights_only_unpickler.py``)
for the objects ``torch.save`` writes for weights, and of NumPy's own reduce for arrays:

* tensors: ``_rebuild_tensor_v2`` / ``_v3`` / ``_rebuild_qtensor`` over a storage from a persistent
  id, with literal integer sizes and strides, a bool ``requires_grad`` and *empty* backward hooks;
  ``_rebuild_sparse_tensor`` over a sparse layout from ``torch.serialization._get_layout`` and
  tensors; ``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` around a tensor;
  ``torch.Size`` of literal integers;
* values (``allowlist.json``, ``pickle.values``): dtype objects (``torch.float8_e4m3fn``), quantisation
  schemes and storage classes are named by ``GLOBAL`` but are not callables. A value may be an
  argument (a dtype for ``_rebuild_tensor_v3``, a scheme inside quantiser parameters, a storage class
  inside a persistent id), never be called, built or filled;
* NumPy: ``numpy.dtype`` only with a numeric (non-object) type code and state flags without object
  bits; ``_reconstruct`` state with raw bytes, never a list of objects; ``_frombuffer`` (protocol 5)
  over in-band bytes with a literal shape and order.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Reports a finding: ``(offset, rule, detail)``.
Flag = Callable[[int | None, str, str], None]

#: Bytes per element of each storage class a persistent id may name (``UntypedStorage`` counts bytes).
TORCH_STORAGE_SIZES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
                       "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                       "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QUInt8Storage": 1,
                       "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
                       "UntypedStorage": 1}
#: Allowlisted callables that allocate memory from a shape argument at load time.
ALLOCATORS = {("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
              ("numpy._core.multiarray", "_reconstruct")}
#: Bytes an allowlisted constructor may allocate from a shape in the pickle (NumPy itself writes (0,)).
MAX_PICKLE_ALLOCATION = 1 << 26
ORDERED_DICT = ("collections", "OrderedDict")
NUMPY_DTYPE = ("numpy", "dtype")
TENSOR_V2 = ("torch._utils", "_rebuild_tensor_v2")
TENSOR_V3 = ("torch._utils", "_rebuild_tensor_v3")
QTENSOR = ("torch._utils", "_rebuild_qtensor")
SPARSE = ("torch._utils", "_rebuild_sparse_tensor")
PARAMETER = ("torch._utils", "_rebuild_parameter")
PARAMETER_STATE = ("torch._utils", "_rebuild_parameter_with_state")
GET_LAYOUT = ("torch.serialization", "_get_layout")
TORCH_SIZE = ("torch", "Size")
FROMBUFFER = {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}
RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
#: Calls whose result is a tensor (an argument other rebuilds accept as one).
TENSORS = {TENSOR_V2, TENSOR_V3, QTENSOR, SPARSE, PARAMETER, PARAMETER_STATE}
#: Layouts ``_rebuild_sparse_tensor`` rebuilds (any other makes it raise).
SPARSE_LAYOUTS = {"torch.sparse_coo", "torch.sparse_csr", "torch.sparse_csc", "torch.sparse_bsr", "torch.sparse_bsc"}
#: Every name ``torch.serialization._get_layout`` resolves (it looks ``str(layout)`` up among torch's layouts).
LAYOUTS = SPARSE_LAYOUTS | {"torch.strided", "torch._mkldnn", "torch.jagged"}
#: The type codes ``numpy.dtype.__reduce__`` writes for non-object dtypes (``'O8'`` is refused).
_NUMPY_CODE = re.compile(r"(b1|[iu][1248]|f(2|4|8|10|12|16)|c(8|16|20|24|32)|[SUV][0-9]{1,9}|[Mm]8)\Z")
#: dtype flags that mean "holds Python objects": NPY_ITEM_REFCOUNT, NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER,
#: NPY_USE_GETITEM, NPY_USE_SETITEM (an object dtype writes 63; numeric ones 0, 8, 16 or 144).
_OBJECT_FLAGS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
#: The rule a problem is reported under, by how its text starts (the rest are ``pickle.call-arguments``).
_RULES = (("object dtype", "numpy.object-dtype"), ("allocates", "pickle.allocation"),
          ("a shape that", "pickle.allocation"), ("no storage", "torch.tensor"),
          ("tensor carries backward", "torch.backward-hooks"), ("parameter carries backward", "torch.backward-hooks"))


@dataclass(eq=False)
class Val:
    """A symbolic value: its kind, a literal value where known, and the values it is built from.

    Kinds: literals (``str``, ``bytes``, ``int``, ``float``, ``bool``, ``none``), containers
    (``tuple``, ``list``, ``dict``, ``set``, ``frozenset``), ``global`` (an imported callable),
    ``value`` (an imported non-callable: dtype, scheme, storage class), ``obj`` (the result of a
    call, ``value`` names the callable), ``storage`` (a persistent id) and ``mark``.
    """

    kind: str
    value: Any = None
    items: list[Any] = field(default_factory=list)
    state: "Val | None" = None

    def literal(self) -> Any:
        """The Python value of a tree of literals (for arguments the gate checks); None if not literal."""
        if self.kind in ("str", "bytes", "int", "float", "bool"):
            return self.value
        if self.kind == "tuple":
            return tuple(i.literal() if isinstance(i, Val) else None for i in self.items)
        return None


@dataclass
class StorageRef:
    """A tensor storage a PyTorch pickle refers to through a persistent id."""

    key: str
    storage_type: str
    location: str
    numel: int
    offset: int


def show(value: Val) -> str:
    """A short description of a symbolic value, for messages."""
    if value.kind in ("str", "int", "bytes"):
        return repr(value.value)[:60]
    if value.kind in ("global", "value", "obj") and isinstance(value.value, tuple):
        return f"{value.kind} {'.'.join(value.value)}"
    if value.kind == "tuple":
        return "(" + ", ".join(show(i) for i in value.items[:6]) + ")"
    return value.kind


# -- predicates -------------------------------------------------------------------------------------------


def _int(value: Val) -> bool:
    return value.kind == "int"


def _ints(value: Val) -> bool:
    return value.kind == "tuple" and all(isinstance(i, Val) and i.kind == "int" for i in value.items)


def _is(value: Val, kind: str, name: tuple[str, str] | set[tuple[str, str]]) -> bool:
    return value.kind == kind and (value.value == name if isinstance(name, tuple) else value.value in name)


def _tensor(value: Val) -> bool:
    return value.kind == "obj" and value.value in TENSORS


def _no_hooks(value: Val) -> bool:
    return _is(value, "obj", ORDERED_DICT) and not value.items and value.state is None


def _number(value: Val) -> bool:
    return value.kind in ("int", "float")


def _dtype_value(value: Val, roles: dict[tuple[str, str], str]) -> bool:
    return value.kind == "value" and roles.get(value.value) == "dtype"


# -- calls ------------------------------------------------------------------------------------------------


def check_call(flag: Flag, func: tuple[str, str], args: Val, pos: int, roles: dict[tuple[str, str], str]) -> None:
    """Refuse a call of an allowlisted callable whose arguments are not the shape its writer produces."""
    items = [i for i in args.items if isinstance(i, Val)] if args.kind == "tuple" else []
    name = ".".join(func)
    problem: str | None = None
    if func in (TENSOR_V2, TENSOR_V3, QTENSOR):
        problem = _tensor_problem(func, items, roles)
    elif func == SPARSE:
        ok = (len(items) == 2 and _is(items[0], "obj", GET_LAYOUT) and len(items[0].items) == 1
              and items[0].items[0].value in SPARSE_LAYOUTS and items[1].kind == "tuple"
              and 3 <= len(items[1].items) <= 4
              and all(_tensor(i) or _is(i, "obj", TORCH_SIZE) or i.kind in ("bool", "none") for i in items[1].items))
        problem = None if ok else "not a sparse layout and (indices, values, size) tensors"
    elif func in (PARAMETER, PARAMETER_STATE):
        problem = _parameter_problem(func, items)
    elif func == GET_LAYOUT:
        if not (len(items) == 1 and items[0].kind == "str" and items[0].value in LAYOUTS):
            problem = f"layout must be one of {sorted(LAYOUTS)}"
    elif func == TORCH_SIZE:
        if not (len(items) == 1 and _ints(items[0])):
            problem = "torch.Size takes one tuple of literal integers"
    elif func == NUMPY_DTYPE:
        problem = _dtype_problem(items)
    elif func in FROMBUFFER:
        ok = (len(items) == 4 and (items[0].kind == "bytes" or _is(items[0], "obj", ("_codecs", "encode")))
              and _is(items[1], "obj", NUMPY_DTYPE) and _ints(items[2])
              and items[3].kind == "str" and items[3].value in ("C", "F"))
        problem = None if ok else "not (in-band bytes, numpy.dtype, literal shape, 'C' or 'F')"
    if func in ALLOCATORS:
        problem = problem or _allocation_problem(func, items)
    if problem is not None:
        rule = next((r for start, r in _RULES if problem.startswith(start)), "pickle.call-arguments")
        flag(pos, rule, f"{name} called with arguments torch.save or NumPy never write: {problem}")


def _tensor_problem(func: tuple[str, str], items: list[Val], roles: dict[tuple[str, str], str]) -> str | None:
    count = {TENSOR_V2: (6, 7), TENSOR_V3: (7, 8), QTENSOR: (7, 7)}[func]
    if not count[0] <= len(items) <= count[1] or items[0].kind != "storage":
        return "no storage from a persistent id, or the wrong number of arguments"
    if not (_int(items[1]) and _ints(items[2]) and _ints(items[3])):
        return "storage offset, size and stride must be literal integers"
    grad, hooks = (items[5], items[6]) if func == QTENSOR else (items[4], items[5])
    if grad.kind != "bool":
        return "requires_grad must be a literal bool"
    if not _no_hooks(hooks):
        return "tensor carries backward hooks (callables run on backward)"
    if func == TENSOR_V3 and not _dtype_value(items[6], roles):
        return f"dtype {show(items[6])} is not a torch dtype"
    if func == QTENSOR:
        return _quantizer_problem(items[4], roles)
    rest = items[6 if func == TENSOR_V2 else 7:]
    if rest and not (rest[0].kind == "none" or (rest[0].kind == "dict" and _str_keys(rest[0], bools=True))):
        return "tensor metadata must be a dict of flags"
    return None


def _quantizer_problem(params: Val, roles: dict[tuple[str, str], str]) -> str | None:
    items = [i for i in params.items if isinstance(i, Val)] if params.kind == "tuple" else []
    if not items or items[0].kind != "value" or roles.get(items[0].value) != "qscheme":
        return "quantizer parameters must start with a quantisation scheme"
    scheme = items[0].value[1]
    if scheme in ("per_tensor_affine", "per_tensor_symmetric"):
        ok = len(items) == 3 and _number(items[1]) and _number(items[2])
    else:
        ok = len(items) == 4 and _tensor(items[1]) and _tensor(items[2]) and _int(items[3])
    return None if ok else f"quantizer parameters do not fit scheme {scheme}"


def _parameter_problem(func: tuple[str, str], items: list[Val]) -> str | None:
    if len(items) != (3 if func == PARAMETER else 4) or not _tensor(items[0]) or items[1].kind != "bool":
        return "not (tensor, requires_grad, hooks)"
    if not _no_hooks(items[2]):
        return "parameter carries backward hooks (callables run on backward)"
    if func == PARAMETER_STATE:
        state = items[3]
        parts = state.items if state.kind == "tuple" and len(state.items) == 2 else [state]
        if not all(p.kind == "none" or (p.kind == "dict" and _str_keys(p)) for p in parts):
            return "parameter state must be attribute dicts with plain (non-dunder) names"
    return None


def _str_keys(value: Val, *, bools: bool = False) -> bool:
    keys, values = value.items[0::2], value.items[1::2]
    return (all(k.kind == "str" and not str(k.value).startswith("__") for k in keys)
            and (not bools or all(v.kind == "bool" for v in values)))


def _dtype_problem(items: list[Val]) -> str | None:
    if not (len(items) == 3 and items[0].kind == "str" and items[1].kind == "bool" and items[2].kind == "bool"):
        return "not numpy.dtype(code, align, copy) with literal arguments"
    code = str(items[0].value)
    if code.lstrip("<>|=").startswith("O") or not _NUMPY_CODE.match(code):
        return f"object dtype or a type code NumPy does not write for numbers ({code!r})"
    return None


def _allocation_problem(func: tuple[str, str], items: list[Val]) -> str | None:
    """An allowlisted constructor that allocates must ask for a size the file can account for (no loader DoS)."""
    shape_v = items[1] if func[1] == "_reconstruct" and len(items) >= 2 else items[0] if items else None
    shape = shape_v.literal() if isinstance(shape_v, Val) else None
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        return "a shape that is not literal integers"
    count = 1
    for dim in shape:
        count *= dim
    if count * 16 > MAX_PICKLE_ALLOCATION:
        return (f"allocates {count} elements (up to {count * 16} bytes) at load time; the limit is "
                f"{MAX_PICKLE_ALLOCATION} (array data belongs in the file, not in a shape)")
    return None


# -- BUILD and persistent ids -----------------------------------------------------------------------------


def check_build(flag: Flag, target: Val, state: Val, pos: int) -> None:
    """``BUILD`` on a NumPy dtype or array must not turn it into one that holds Python objects."""
    if _is(target, "obj", NUMPY_DTYPE):
        flags = state.items[7] if state.kind == "tuple" and len(state.items) in (8, 9) else None
        if not isinstance(flags, Val) or flags.kind != "int" or int(flags.value) & _OBJECT_FLAGS:
            flag(pos, "numpy.object-dtype", "numpy.dtype state is not that of a numeric dtype "
                 f"(flags {show(flags) if isinstance(flags, Val) else None}: object dtypes are refused)")
    elif _is(target, "obj", RECONSTRUCT):
        raw = state.items[4] if state.kind == "tuple" and len(state.items) == 5 else None
        if not isinstance(raw, Val) or not (raw.kind in ("bytes", "str") or _is(raw, "obj", ("_codecs", "encode"))):
            flag(pos, "numpy.object-dtype",
                 f"ndarray state holds {show(raw) if isinstance(raw, Val) else 'no data'}, not raw bytes "
                 "(object arrays are refused)")


def persistent(flag: Flag, pid: Val, pos: int, roles: dict[tuple[str, str], str]) -> tuple[Val, StorageRef | None]:
    """A PyTorch persistent id: ``('storage', <storage class>, key, location, numel[, None])``."""
    items = pid.items if pid.kind == "tuple" else []
    ok = (5 <= len(items) <= 6 and items[0].kind == "str" and items[0].value == "storage"
          and items[1].kind == "value" and roles.get(items[1].value) == "storage"
          and items[1].value[1] in TORCH_STORAGE_SIZES and items[2].kind == "str" and items[3].kind == "str"
          and items[4].kind == "int" and items[4].value >= 0 and (len(items) == 5 or items[5].kind == "none"))
    if not ok:
        flag(pos, "torch.persistent-id", f"unrecognised persistent id {show(pid)}")
        return Val("storage"), None
    if len(items) == 6 and items[1].value[1] == "UntypedStorage":
        flag(pos, "torch.persistent-id", "legacy persistent id of an UntypedStorage (float8, uint16...): torch's "
             "legacy loader reads the storage class's dtype, which UntypedStorage lacks, so no torch loads it")
        return Val("storage"), None
    ref = StorageRef(str(items[2].value), str(items[1].value[1]), str(items[3].value), int(items[4].value), pos)
    return Val("storage", ref.key), ref
