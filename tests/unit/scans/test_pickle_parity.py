"""Issue 28: the pickle gate accepts what the safe loaders accept, and nothing they refuse; proven cell by cell.

The matrix is dtype x container x save variant x pickle protocol, written with ``torch.save`` into a
temporary folder (saving runs nothing from a file). Cairn's verdict is ``scan_path(path).safe``. The
oracle's verdict comes from ONE child process that runs the pinned torch's
``torch.load(path, weights_only=True)`` on every file (never in this process):

* protocol 2 (``torch.save``'s default): the child's verdict as it is;
* protocols 4 and 5: torch's weights-only unpickler implements only protocol-2 opcodes (no ``FRAME``,
  ``STACK_GLOBAL``, ``MEMOIZE``...), so it refuses *every* such checkpoint with "Unsupported operand",
  whatever it holds: a limit of its opcode set, not a safety verdict. Such a cell's oracle verdict is the
  child's verdict on its protocol-2 twin (the same object saved at protocol 2), used only after checking
  that the refusal is that opcode error and that the protocol-4/5 pickle imports no name its twin does not
  (names read with :mod:`pickletools`, nothing is unpickled here);
* NumPy pickles (``pickle.dumps(array)``): torch's weights-only unpickler allows no NumPy name by
  default and no protocol-4/5 opcode, so it cannot judge them. The oracle is NumPy's own safe format:
  an array is safe when ``numpy.save(..., allow_pickle=False)`` can write it (NumPy refuses exactly the
  arrays whose dtype holds Python objects), unsafe otherwise;
* negative cells (``os.system``, ``functools.partial``, ``builtins.getattr``, a pickled ``nn.Linear``,
  a dtype or storage class called) are written as opcodes or saved, never loaded here; both must refuse.
"""

import collections
import functools
import io
import json
import pickle
import pickletools
import struct
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from integrity.scans.modelgate import scan_path

PROTOCOLS = (2, 4, 5)
VARIANTS = ("zip", "legacy")


def _quantised(kind: str) -> torch.Tensor:
    base = torch.linspace(-1, 1, 8).reshape(2, 4)
    if kind == "qint8-per-channel":
        return torch.quantize_per_channel(base, torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8)
    return torch.quantize_per_tensor(base, 0.05, 3, {"quint8": torch.quint8, "qint8": torch.qint8,
                                                      "qint32": torch.qint32}[kind])


def _tensor(kind: str) -> torch.Tensor:
    if kind.startswith(("quint", "qint")):
        return _quantised(kind)
    if kind == "sparse-coo":
        return torch.eye(3).to_sparse()
    if kind == "sparse-csr":
        return torch.eye(3).to_sparse_csr()
    return torch.arange(6, dtype=torch.float64).reshape(2, 3).to(getattr(torch, kind))


DTYPES = ("float32", "float64", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
          "float8_e5m2fnuz", "complex64", "complex128", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool", "quint8", "qint8", "qint32", "qint8-per-channel", "sparse-coo", "sparse-csr")


def _container(kind: str, t: torch.Tensor) -> Any:
    if kind == "dict":
        return {"weight": t}
    if kind == "state-dict":  # what nn.Module.state_dict() returns: an OrderedDict with _metadata
        sd: Any = collections.OrderedDict([("layer.weight", t), ("layer.bias", torch.zeros(2))])
        sd._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 1})])
        return sd
    if kind == "nested":
        return {"model": collections.OrderedDict(w=t), "meta": {"shape": t.shape, "dtype": t.dtype,
                "inner": collections.OrderedDict(step=3, sizes=[torch.Size([2, 3])], flags=(True, None, 1.5))}}
    if kind == "sequence":
        return [t, (t, 1, 2.5, "x", None, b"raw")]
    grad = t.is_floating_point() or t.is_complex()
    param: Any = torch.nn.Parameter(t, requires_grad=grad and not t.is_quantized and t.layout == torch.strided)
    if kind == "parameter-with-state":
        param.tag = "frozen"
    return param


CONTAINERS = ("dict", "state-dict", "nested", "sequence", "parameter", "parameter-with-state")


@dataclass
class Cell:
    name: str
    path: Path
    family: str  # "torch", "numpy" or "negative"
    protocol: int
    twin: str | None = None  # the protocol-2 cell a protocol-4/5 cell is judged by
    numpy_safe: bool | None = None


# -- writing the files ----------------------------------------------------------------------------------


def _torch_cells(root: Path) -> tuple[list[Cell], list[str]]:
    cells, unsaveable = [], []
    for dtype in DTYPES:
        for container in CONTAINERS:
            try:
                obj = _container(container, _tensor(dtype))
            except (RuntimeError, TypeError) as exc:  # e.g. a Parameter torch cannot build for this tensor
                unsaveable.append(f"{dtype}/{container}: {exc}"[:120])
                continue
            for variant in VARIANTS:
                for protocol in PROTOCOLS:
                    name = f"{dtype}/{container}/{variant}/p{protocol}"
                    path = root / (name.replace("/", "__") + ".pt")
                    try:
                        torch.save(obj, path, pickle_protocol=protocol,
                                   _use_new_zipfile_serialization=variant == "zip")
                    except (RuntimeError, TypeError, pickle.PicklingError) as exc:
                        unsaveable.append(f"{name}: {exc}"[:120])
                        continue
                    twin = None if protocol == 2 else f"{dtype}/{container}/{variant}/p2"
                    cells.append(Cell(name, path, "torch", protocol, twin))
    return cells, unsaveable


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    arrays: dict[str, np.ndarray[Any, Any]] = {code: np.arange(6).astype(code).reshape(2, 3) for code in
              ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "c8", "c16", "S3", "U2")}
    arrays["datetime"] = np.array(["2024-01-01", "2024-06-01"], dtype="M8[s]")
    arrays["timedelta"] = np.array([1, 2], dtype="m8[ns]")
    arrays["record"] = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))])
    arrays["fortran"] = np.asfortranarray(np.arange(12, dtype="f4").reshape(3, 4))
    arrays["strided"] = np.arange(20, dtype="i4")[::3]
    arrays["scalar-0d"] = np.array(3.5)
    arrays["object"] = np.array([1, "a", None], dtype=object)
    arrays["record-object"] = np.zeros(2, dtype=[("a", "<i4"), ("b", "O")])
    return arrays


def _numpy_cells(root: Path) -> list[Cell]:
    cells = []
    for label, array in _arrays().items():
        buffer = io.BytesIO()
        try:
            np.save(buffer, array, allow_pickle=False)
            safe = True
        except ValueError:  # "Object arrays cannot be saved when allow_pickle=False"
            safe = False
        for protocol in PROTOCOLS:
            for shape in ("array", "dict"):
                name = f"numpy-{label}/{shape}/p{protocol}"
                path = root / (name.replace("/", "__") + ".pkl")
                path.write_bytes(pickle.dumps(array if shape == "array" else {"w": array, "b": np.ones(2)},
                                              protocol=protocol))
                cells.append(Cell(name, path, "numpy", protocol, numpy_safe=safe))
    return cells


def _g(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _u(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def _torch_zip(data_pkl: bytes) -> bytes:
    """A ``torch.save`` archive of ``{}`` with its ``data.pkl`` replaced (written here, never loaded)."""
    template = io.BytesIO()
    torch.save({}, template)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as source, zipfile.ZipFile(out, "w") as dest:
        for info in source.infolist():
            dest.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else source.read(info))
    return out.getvalue()


NEGATIVE_PICKLES = {
    "os-system-reduce": b"\x80\x02" + _g("os", "system") + _u("true") + b"\x85R.",
    "functools-partial": b"\x80\x02" + _g("functools", "partial") + _g("collections", "OrderedDict") + b"\x85R.",
    "builtins-getattr": b"\x80\x02" + _g("builtins", "getattr") + _g("torch", "Size") + _u("__class__") + b"\x86R.",
    "dtype-called": b"\x80\x02" + _g("torch", "float32") + b")R.",
    "storage-called": b"\x80\x02" + _g("torch", "FloatStorage") + b"J\x00\x00\x00\x7f\x85R.",
    "layout-unknown": b"\x80\x02" + _g("torch.serialization", "_get_layout") + _u("torch.nope") + b"\x85R.",
    "sparse-strided": b"\x80\x02" + _g("torch._utils", "_rebuild_sparse_tensor") + _g("torch.serialization", "_get_layout")
    + _u("torch.strided") + b"\x85R)\x86R.",
}


def _negative_cells(root: Path) -> list[Cell]:
    cells = []
    for label, data_pkl in NEGATIVE_PICKLES.items():
        path = root / f"negative__{label}.pt"
        path.write_bytes(_torch_zip(data_pkl))
        cells.append(Cell(f"negative/{label}", path, "negative", 2))
    for variant in VARIANTS:
        path = root / f"negative__nn-linear-{variant}.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that it saves the module's source
            torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=variant == "zip")
        cells.append(Cell(f"negative/nn-linear-{variant}", path, "negative", 2))
    return cells


# -- the oracle and Cairn ---------------------------------------------------------------------------------

_CHILD = r"""
import json, sys, warnings
import torch
warnings.simplefilter("ignore")
verdicts = {}
for path in json.load(sys.stdin):
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        verdicts[path] = [True, ""]
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        lines = [l for l in text.splitlines() if "WeightsUnpickler error:" in l] or text.strip().splitlines()[-1:]
        verdicts[path] = [False, "opcode" if "Unsupported operand" in text else lines[0].strip()[:200]]
print(json.dumps(verdicts))
"""


def _safe_loader(paths: list[Path]) -> dict[str, tuple[bool, str]]:
    run = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps([str(p) for p in paths]),
                         capture_output=True, text=True, timeout=600, check=True)
    return {path: (ok, why) for path, (ok, why) in json.loads(run.stdout.strip().splitlines()[-1]).items()}


def _imports(path: Path) -> set[str]:
    """Every name the pickles of a torch file import, read with pickletools (nothing is unpickled)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            streams = [io.BytesIO(archive.read(n)) for n in archive.namelist() if n.endswith("/data.pkl")]
    else:
        streams = [io.BytesIO(path.read_bytes())] * 5  # legacy: five pickles back to back
    names: set[str] = set()
    for stream in streams:
        memo: dict[int, Any] = {}
        pushed: list[Any] = []
        for op, arg, _pos in pickletools.genops(stream):
            if op.name == "GLOBAL":
                names.add(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                pushed.append(arg)
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                pushed.append(memo.get(int(str(arg))))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(str(arg))] = pushed[-1] if pushed else None
            elif op.name == "STACK_GLOBAL":  # the pickler writes module, then name, right before it
                names.add(f"{pushed[-2]}.{pushed[-1]}")
            else:
                pushed.append(None)
            if op.name == "STOP":
                break
    return names


@dataclass
class Matrix:
    cells: list[Cell]
    unsaveable: list[str]
    oracle: dict[str, tuple[bool, str]]
    cairn: dict[str, tuple[bool, str]]

    def expected(self, cell: Cell) -> bool:
        if cell.family == "numpy":
            return bool(cell.numpy_safe)
        if cell.twin is not None:
            twin = next(c for c in self.cells if c.name == cell.twin)
            return self.oracle[str(twin.path)][0]
        return self.oracle[str(cell.path)][0]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    root = tmp_path_factory.mktemp("parity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_cells, unsaveable = _torch_cells(root)
    cells = torch_cells + _numpy_cells(root) + _negative_cells(root)
    oracle = _safe_loader([c.path for c in cells if c.family != "numpy"])
    cairn = {}
    for cell in cells:
        report = scan_path(cell.path)
        cairn[str(cell.path)] = (report.safe, "" if report.safe else report.findings[0].rule + ": "
                                 + report.findings[0].detail[:110])
    return Matrix(cells, unsaveable, oracle, cairn)


#: Legacy (non-zip) checkpoints at protocol 4/5 start ``\x80\x04\x95`` (a frame) instead of the protocol-2
#: magic; the scanner recognises both (scanner._legacy_torch). Their cells are checked on their own below.
def _known_gap(cell: Cell) -> bool:
    return cell.family == "torch" and "/legacy/" in cell.name and cell.protocol >= 4


def _table(matrix: Matrix, cells: list[Cell]) -> str:
    rows = [f"{'cell':52} {'oracle':6} {'cairn':6} why"]
    for cell in cells:
        oracle = matrix.oracle.get(str(cell.path), (matrix.expected(cell), "numpy.save(allow_pickle=False)"))
        rows.append(f"{cell.name:52} {matrix.expected(cell)!s:6} {matrix.cairn[str(cell.path)][0]!s:6} "
                    f"oracle: {oracle[1] or '-'} | cairn: {matrix.cairn[str(cell.path)][1] or '-'}")
    return "\n".join(rows)


def _disagreeing(matrix: Matrix, cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if matrix.expected(c) != matrix.cairn[str(c.path)][0]]


def test_the_matrix_is_complete(matrix: Matrix) -> None:
    torch_cells = [c for c in matrix.cells if c.family == "torch"]
    # Every dtype in every container is saved in both variants at protocol 2; nothing but Parameters
    # torch cannot build (none today) may be missing.
    assert len(torch_cells) == len(DTYPES) * len(CONTAINERS) * len(VARIANTS) * len(PROTOCOLS), matrix.unsaveable
    assert sum(c.family == "numpy" for c in matrix.cells) == len(_arrays()) * len(PROTOCOLS) * 2


def test_cairn_agrees_with_the_safe_loaders_on_every_cell(matrix: Matrix) -> None:
    cells = [c for c in matrix.cells if not _known_gap(c)]
    wrong = _disagreeing(matrix, cells)
    assert not wrong, f"{len(wrong)} of {len(cells)} cells disagree:\n" + _table(matrix, wrong)


def test_protocol_4_and_5_cells_are_judged_by_their_protocol_2_twin(matrix: Matrix) -> None:
    by_name = {c.name: c for c in matrix.cells}
    for cell in (c for c in matrix.cells if c.twin is not None):
        verdict = matrix.oracle[str(cell.path)]
        assert verdict == (False, "opcode"), (cell.name, verdict)  # torch refuses the opcodes, not the content
        assert _imports(cell.path) <= _imports(by_name[str(cell.twin)].path), cell.name


def test_negative_cells_are_refused_by_both(matrix: Matrix) -> None:
    negatives = [c for c in matrix.cells if c.family == "negative"]
    assert len(negatives) == len(NEGATIVE_PICKLES) + len(VARIANTS)
    for cell in negatives:
        ok, why = matrix.oracle[str(cell.path)]
        assert not ok and why != "opcode", (cell.name, why)  # refused for what it holds, not for its opcodes
        assert not matrix.cairn[str(cell.path)][0], cell.name
    objects = [c for c in matrix.cells if c.family == "numpy" and not c.numpy_safe]
    assert len(objects) == 2 * len(PROTOCOLS) * 2
    assert not any(matrix.cairn[str(c.path)][0] for c in objects), _table(matrix, objects)


def test_legacy_checkpoints_at_protocol_4_and_5(matrix: Matrix) -> None:
    cells = [c for c in matrix.cells if _known_gap(c)]
    assert cells and not _disagreeing(matrix, cells), _table(matrix, _disagreeing(matrix, cells))


def test_refusal_reasons_name_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "called.pt"
    path.write_bytes(_torch_zip(NEGATIVE_PICKLES["dtype-called"]))
    assert "pickle.call-value" in {f.rule for f in scan_path(path).findings}
    obj = tmp_path / "object.pkl"
    obj.write_bytes(pickle.dumps(np.array([None, functools.partial], dtype=object), protocol=5))
    assert "numpy.object-dtype" in {f.rule for f in scan_path(obj).findings}


#: What torch's weights-only unpickler accepts and the gate still refuses (fail closed, outside the
#: issue's matrix): Python-2 compatible names (``__builtin__.set`` at protocol 2), which the allowlist
#: never lists (``_compat_pickle`` rewrites them), and objects no weights file needs.
STRICTER = {"device": (torch.device("cpu"), "torch.device"), "counter": (collections.Counter(a=1), "collections.Counter"),
            "complex": (1 + 2j, "__builtin__.complex"), "set": ({1, 2}, "__builtin__.set"),
            "bytearray": (bytearray(b"x"), "__builtin__.bytearray")}


def test_values_outside_tensors_and_where_the_gate_is_stricter(tmp_path: Path) -> None:
    """Layouts, dtypes and schemes as checkpoint values: both accept. STRICTER: torch accepts, the gate refuses."""
    values = tmp_path / "values.pt"
    torch.save({"layout": torch.sparse_coo, "strided": torch.strided, "dtype": torch.float8_e5m2,
                "scheme": torch.per_channel_affine, "sizes": [torch.Size([]), torch.Size([4, 0])]}, values)
    for label, (value, _name) in STRICTER.items():
        torch.save({"x": value}, tmp_path / f"{label}.pt")
    oracle = _safe_loader([values, *(tmp_path / f"{label}.pt" for label in STRICTER)])
    assert all(verdict == (True, "") for verdict in oracle.values()), oracle
    assert scan_path(values).safe, scan_path(values).reason
    for label, (_value, name) in STRICTER.items():
        report = scan_path(tmp_path / f"{label}.pt")
        assert not report.safe and any(f.callable == name for f in report.findings), (label, report.reason)
