"""ONNX models and TensorFlow SavedModels: graph formats read with the wire-format reader.

ONNX: every tensor's external-data location must be a plain relative path that stays inside the
model's folder and names a file holding the declared bytes; operators from domains that need a
native custom-op library are refused. SavedModel: graph operations that read or write files,
call back into Python or reach the network are refused (in the graph and in every function of
its library), and ``keras_metadata.pb`` goes through the Keras checks (Lambda, custom objects).
"""

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import Allowlist
from integrity.scans.modelgate.protobuf import LEN, VARINT, Field, WireError, fields, matches, text

# Top-level field numbers and wire types of onnx.ModelProto (onnx.proto3).
ONNX_MODEL_FIELDS = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN, 25: LEN,
                     26: LEN}
SAVED_MODEL_FIELDS = {1: VARINT, 2: LEN}
META_GRAPH_FIELDS = {1: LEN, 2: LEN, 3: LEN, 4: LEN, 5: LEN, 6: LEN, 7: LEN}
FINGERPRINT_FIELDS = {1: VARINT, 2: VARINT, 3: VARINT, 4: VARINT, 5: VARINT, 6: LEN, 7: LEN}
KERAS_METADATA_FIELDS = {1: LEN}
TF_INDEX_MAGIC = bytes.fromhex("57fb808b247547db")


def looks_like_onnx(data: bytes) -> bool:
    return matches(data, ONNX_MODEL_FIELDS, {1, 7})


def looks_like_saved_model(data: bytes) -> bool:
    if not matches(data, SAVED_MODEL_FIELDS, {2}):
        return False
    try:
        return all(matches(f.value, META_GRAPH_FIELDS, set()) for f in fields(data) if f.number == 2)
    except WireError:
        return False


def looks_like_fingerprint(data: bytes) -> bool:
    return matches(data, FINGERPRINT_FIELDS, {1})


def looks_like_keras_metadata(data: bytes) -> bool:
    return matches(data, KERAS_METADATA_FIELDS, {1}) and b"class_name" in data


def _sub(msg: memoryview, base: int, wanted: set[int]) -> Iterator[Field]:
    for f in fields(msg, base):
        if f.number in wanted:
            yield f


# -- ONNX -----------------------------------------------------------------------------------------


@dataclass
class OnnxResult:
    external: list[tuple[str, int, int | None]] = field(default_factory=list)  # (location, offset, length)
    nodes: int = 0
    initializers: int = 0


def scan_onnx(data: bytes, where: str, folder: Path, root: Path, allowlist: Allowlist, out: Findings) -> OnnxResult:
    """Walk graph, subgraphs, functions and training graphs; check domains and external data."""
    result = OnnxResult()
    local_domains: set[str] = set()
    graphs: list[tuple[memoryview, int]] = []
    functions: list[tuple[memoryview, int]] = []
    try:
        for f in fields(data):
            if ONNX_MODEL_FIELDS.get(f.number, f.wire) != f.wire:
                raise WireError(f"field {f.number} has the wrong wire type")
            if f.number == 7:
                graphs.append((f.value, f.offset))
            elif f.number == 25:
                functions.append((f.value, f.offset))
                for g in _sub(f.value, f.offset, {10}):
                    local_domains.add(text(g.value))
            elif f.number == 20:
                graphs += [(g.value, g.offset) for g in _sub(f.value, f.offset, {1, 2})]
        while graphs:
            graph, base = graphs.pop()
            for g in fields(graph, base):
                if g.number == 1 and g.wire == LEN:
                    graphs += _onnx_node(g.value, g.offset, where, allowlist, local_domains, out, result)
                elif g.number == 5 and g.wire == LEN:
                    result.initializers += 1
                    _onnx_tensor(g.value, g.offset, where, folder, root, out, result)
                elif g.number == 15 and g.wire == LEN:
                    for t in _sub(g.value, g.offset, {1, 2}):
                        _onnx_tensor(t.value, t.offset, where, folder, root, out, result)
        for function, base in functions:
            for g in _sub(function, base, {7}):
                graphs += _onnx_node(g.value, g.offset, where, allowlist, local_domains, out, result)
            while graphs:
                graph, gbase = graphs.pop()
                for node in _sub(graph, gbase, {1}):
                    graphs += _onnx_node(node.value, node.offset, where, allowlist, local_domains, out, result)
    except WireError as exc:
        out.add(where, None, "onnx.malformed", f"ONNX protobuf is malformed: {exc}")
    return result


def _onnx_node(node: memoryview, base: int, where: str, allowlist: Allowlist, local: set[str], out: Findings,
               result: OnnxResult) -> list[tuple[memoryview, int]]:
    result.nodes += 1
    op_type, domain = "", ""
    subgraphs: list[tuple[memoryview, int]] = []
    tensors: list[tuple[memoryview, int]] = []
    for f in fields(node, base):
        if f.number == 4 and f.wire == LEN:
            op_type = text(f.value)
        elif f.number == 7 and f.wire == LEN:
            domain = text(f.value)
        elif f.number == 5 and f.wire == LEN:
            for a in fields(f.value, f.offset):
                if a.number in (6, 11) and a.wire == LEN:
                    subgraphs.append((a.value, a.offset))
                elif a.number in (5, 10) and a.wire == LEN:
                    tensors.append((a.value, a.offset))
    if domain not in allowlist.onnx_domains and domain not in local:
        out.add(where, base, "onnx.custom-domain",
                f"operator {op_type!r} from domain {domain!r} needs a custom-op library (native code)")
    for tensor, tbase in tensors:
        if any(f.number == 14 and f.wire == VARINT and f.value == 1 for f in fields(tensor, tbase)):
            out.add(where, tbase, "onnx.external-data", f"operator {op_type!r} has a constant with external data")
    return subgraphs


def _onnx_tensor(tensor: memoryview, base: int, where: str, folder: Path, root: Path, out: Findings,
                 result: OnnxResult) -> None:
    name, external, location_kind = "", [], 0
    for f in fields(tensor, base):
        if f.number == 8 and f.wire == LEN:
            name = text(f.value)
        elif f.number == 13 and f.wire == LEN:
            entry = {g.number: text(g.value) for g in fields(f.value, f.offset) if g.wire == LEN}
            external.append((entry.get(1, ""), entry.get(2, ""), f.offset))
        elif f.number == 14 and f.wire == VARINT:
            location_kind = f.value
    if location_kind not in (0, 1):
        out.add(where, base, "onnx.data-location", f"tensor {name!r} has unknown data_location {location_kind}")
    if location_kind != 1:
        if external:
            out.add(where, base, "onnx.external-data", f"tensor {name!r} has external_data but DEFAULT location")
        return
    info = {k: v for k, v, _ in external}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        out.add(where, base, "onnx.external-data", f"tensor {name!r}: offset or length is not an integer")
        return
    unknown_keys = set(info) - {"location", "offset", "length", "checksum", "basepath"}
    if unknown_keys or "basepath" in info:
        out.add(where, base, "onnx.external-data", f"tensor {name!r}: unexpected external_data keys {sorted(info)}")
    problem = external_path_problem(location, folder, root)
    if problem:
        out.add(where, base, "onnx.external-path", f"tensor {name!r}: external data {location!r} {problem}")
        return
    target = folder / location
    size = target.stat().st_size
    if offset < 0 or (length is not None and (length < 0 or offset + length > size)) or offset > size:
        out.add(where, base, "onnx.external-data",
                f"tensor {name!r}: bytes {offset}+{length} lie outside {location!r} ({size} bytes)")
    result.external.append((location, offset, length))


def external_path_problem(location: str, folder: Path, root: Path) -> str | None:
    """Why an external-data path is refused, or None when it names a regular file inside the model."""
    if not location or "\x00" in location or "\\" in location or ":" in location:
        return "is empty or uses characters that are not a plain relative path"
    if location.startswith("/") or posixpath.isabs(location):
        return "is absolute"
    if ".." in location.split("/"):
        return "leaves the model folder"
    target = folder / location
    try:
        resolved, base = target.resolve(strict=True), root.resolve(strict=True)
    except (OSError, RuntimeError):
        return "does not exist"
    if not resolved.is_relative_to(base):
        return "resolves outside the model folder"
    if target.is_symlink() or not resolved.is_file():
        return "is not a regular file"
    return None


# -- TensorFlow SavedModel --------------------------------------------------------------------------


def scan_saved_model(data: bytes, where: str, allowlist: Allowlist, out: Findings) -> int:
    """Refuse file, Python and network operations anywhere in the graphs; returns the node count."""
    count = 0
    try:
        queue: list[tuple[memoryview, int, str]] = []
        for mg in _sub(memoryview(data), 0, {2}):
            for gd in _sub(mg.value, mg.offset, {2}):
                queue.append((gd.value, gd.offset, "graph"))
        while queue:
            graph, base, scope = queue.pop()
            for f in fields(graph, base):
                if f.number == 1 and f.wire == LEN:
                    count += 1
                    _tf_node(f.value, f.offset, scope, where, allowlist, out)
                elif f.number == 2 and f.wire == LEN:
                    for fn in _sub(f.value, f.offset, {1}):
                        fname = "function"
                        for sig in _sub(fn.value, fn.offset, {1}):
                            for nm in _sub(sig.value, sig.offset, {1}):
                                fname = f"function {text(nm.value)}"
                        for nd in _sub(fn.value, fn.offset, {3}):
                            count += 1
                            _tf_node(nd.value, nd.offset, fname, where, allowlist, out)
    except WireError as exc:
        out.add(where, None, "savedmodel.malformed", f"SavedModel protobuf is malformed: {exc}")
    return count


def _tf_node(node: memoryview, base: int, scope: str, where: str, allowlist: Allowlist, out: Findings) -> None:
    name = op = ""
    for f in fields(node, base):
        if f.number == 1 and f.wire == LEN:
            name = text(f.value)
        elif f.number == 2 and f.wire == LEN:
            op = text(f.value)
    if op in allowlist.tf_refused_ops:
        out.add(where, base, "savedmodel.refused-op",
                f"{scope} node {name!r} runs operation {op} (files, Python callbacks or network)", op)


def keras_metadata_configs(data: bytes) -> Iterator[tuple[int, str]]:
    """The JSON metadata strings of a Keras ``keras_metadata.pb`` (SavedMetadata.nodes[].metadata)."""
    for node in _sub(memoryview(data), 0, {1}):
        for meta in _sub(node.value, node.offset, {4}):
            yield meta.offset, text(meta.value)


def tf_index_ok(path: Path) -> bool:
    size = path.stat().st_size
    if size < 48:
        return False
    with open(path, "rb") as handle:
        handle.seek(size - 8)
        return handle.read(8) == TF_INDEX_MAGIC

