"""Convert an allowlisted pickle-based checkpoint to safetensors in a separate, resource-limited process.

The parent scans the file first (nothing unsafe ever reaches an unpickler). The child runs with
limits on address space, CPU time, file size, open files and processes; without network (a fresh
network namespace where the kernel allows it, and always an audit hook that refuses sockets,
subprocesses and writes outside the output folder); in isolated mode with a scrubbed
environment. PyTorch checkpoints load with ``torch.load(weights_only=True)``; plain pickles and
joblib files with an unpickler whose ``find_class`` admits only the gate's allowlist. The child
writes safetensors by hand, and the parent re-checks the output with the gate before anyone uses
it. The conversion record (an in-toto statement) links the original digest to the converted one.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity.errors import VerificationError
from integrity.settings import subprocess_path
from integrity.trust.hashing import sha256_file
from integrity.trust.statements import statement

CONVERSION_PREDICATE_TYPE = "https://cairn.dev/attestations/conversion/v1"
TORCH_FORMATS = ("pytorch-zip", "pytorch-legacy")
PICKLE_FAMILY = ("pytorch-zip", "pytorch-legacy", "pickle", "joblib")


class ModelGateError(VerificationError):
    """A model file is unsafe, or could not be converted safely; nothing downstream sees it."""

    kind = "unsafe-model"
    advice = "Do not load this file. Ask the publisher for safetensors weights, or review the findings."


@dataclass(frozen=True)
class ConversionResult:
    source: str
    source_digest: str
    output: str
    output_digest: str
    tensors: int
    record: dict[str, Any]


def needs_conversion(kind: str) -> bool:
    """Pickle-based weights (also compressed ones, ``joblib+zlib``) are converted before use."""
    return kind.split("+", 1)[0] in PICKLE_FAMILY


def downstream_refusal(report: Any) -> str | None:
    """Why a scanned-safe artifact still cannot be handed downstream, or None.

    Downstream steps only ever see safe formats: a pickle-based file nested inside an archive
    passed the allowlist but cannot be converted in place, so the pipeline refuses it.
    """
    nested = sorted(where for where, kind in report.formats.items() if "!" in where and needs_conversion(kind))
    if nested:
        return (f"pickle-based weights inside an archive cannot be converted to safetensors: {', '.join(nested[:3])}"
                "; ask the publisher for safetensors")
    return None


_CHILD = r"""
import ctypes, json, os, struct, sys
source, dest, kind, allow_path = sys.argv[1:5]
isolation = "audit-hook"
try:  # a fresh network namespace: no interface but loopback, so nothing can be reached
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) == 0 or libc.unshare(0x10000000 | 0x40000000) == 0:
        isolation = "network-namespace+audit-hook"
except Exception:
    pass
out_dir = os.path.dirname(os.path.abspath(dest))
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
           "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser.", "pty.")
def refuse(event, args):
    if event.startswith(BLOCKED):
        raise RuntimeError(f"blocked during conversion: {event}")
    if event == "open" and args and isinstance(args[0], (str, bytes)) and isinstance(args[1], str):
        if any(m in args[1] for m in "wax+"):
            path = os.path.abspath(os.fsdecode(args[0]))
            if not path.startswith(out_dir + os.sep) and path != "/dev/null":
                raise RuntimeError(f"blocked write outside the output folder during conversion: {path}")
sys.addaudithook(refuse)
with open(allow_path, encoding="utf-8") as handle:
    allowed = {(c["module"], c["name"]) for c in json.load(handle)["pickle"]["callables"]}
if kind in ("pytorch-zip", "pytorch-legacy"):
    import torch
    state = torch.load(source, map_location="cpu", weights_only=True)
else:
    import pickle
    def check(module, name):
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused callable {module}.{name}")
    if kind == "joblib":
        from joblib.numpy_pickle import NumpyUnpickler
        class Restricted(NumpyUnpickler):
            def find_class(self, module, name):
                check(module, name)
                return super().find_class(module, name)
        with open(source, "rb") as handle:
            state = Restricted(source, handle, ensure_native_byte_order=True).load()
    else:
        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                check(module, name)
                return super().find_class(module, name)
            def persistent_load(self, pid):
                raise pickle.UnpicklingError("persistent ids are refused")
        with open(source, "rb") as handle:
            state = Restricted(handle).load()
if not isinstance(state, dict):
    raise SystemExit("not a mapping of names to tensors: " + type(state).__name__)
import numpy as np
names = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
         "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32",
         "uint64": "U64"}
header, chunks, offset = {}, [], 0
for name in sorted(state):
    value = state[name]
    if not isinstance(name, str):
        raise SystemExit(f"key {name!r} is not a string")
    if type(value).__module__ == "torch" and type(value).__name__ in ("Tensor", "Parameter"):
        import torch
        data = value.detach().contiguous().cpu()
        dtype = str(data.dtype).removeprefix("torch.")
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        shape = list(data.shape)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and not value.dtype.hasobject:
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        dtype, raw, shape = str(value.dtype.name), data.tobytes(), list(value.shape)
    else:
        raise SystemExit(f"entry {name!r} is not a plain tensor or array")
    if dtype not in names:
        raise SystemExit(f"entry {name!r} has dtype {dtype}, which safetensors cannot hold")
    header[name] = {"dtype": names[dtype], "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
blob = json.dumps(header, separators=(",", ":")).encode()
blob += b" " * (-len(blob) % 8)
with open(dest, "xb") as out:
    out.write(struct.pack("<Q", len(blob)))
    out.write(blob)
    for raw in chunks:
        out.write(raw)
print(json.dumps({"tensors": len(header), "isolation": isolation}))
"""


def _limits(memory_mb: int, cpu_s: int, file_bytes: int) -> Any:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def convert_to_safetensors(
    path: Path, dest: Path, *, timeout: float = 300, memory_limit_mb: int = 4096
) -> ConversionResult:
    """Scan, convert in a sandboxed child, re-scan the output; raises :class:`ModelGateError` on any failure."""
    from integrity.scans.modelgate import ALLOWLIST_PATH, scan_path

    source = Path(path)
    report = scan_path(source)
    if not report.safe:
        raise ModelGateError(f"refused before conversion: {report.reason}", artifact=source)
    kind = report.formats.get(source.name, "")
    if not needs_conversion(kind):
        raise ModelGateError(f"format {kind!r} is not a pickle-based checkpoint", artifact=source)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="cairn-convert-") as scratch:
        loadable = _decompressed(source, kind, Path(scratch))
        run = _run_child(loadable, partial, kind.split("+", 1)[0], ALLOWLIST_PATH, timeout, memory_limit_mb, source)
    if run.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelGateError(f"conversion failed in the sandbox (exit {run.returncode}): {tail[0][:300]}",
                             artifact=source)
    checked = scan_path(partial)
    if not checked.safe or checked.formats.get(partial.name) != "safetensors":
        partial.unlink(missing_ok=True)
        raise ModelGateError(f"the converted file does not pass the gate: {checked.reason}", artifact=source)
    os.replace(partial, dest)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    tensors = int(summary["tensors"])
    source_digest, output_digest = sha256_file(source), sha256_file(dest)
    record = statement([{"name": dest.name, "digest": {"sha256": output_digest}}], CONVERSION_PREDICATE_TYPE, {
            "source": {"name": source.name, "digest": {"sha256": source_digest}, "format": kind},
            "converter": ("torch.load(weights_only=True)" if kind in TORCH_FORMATS
                          else "allowlist-restricted unpickler") + " in a sandboxed child -> safetensors",
            "sandbox": {"isolation": summary.get("isolation"), "memoryLimitMb": memory_limit_mb,
                        "cpuSeconds": int(timeout), "environment": "isolated (-I), scrubbed"},
            "torchVersion": _version("torch"),
            "tensors": tensors,
            "scan": report.as_dict(),
            "outputScan": {"safe": checked.safe, "format": "safetensors"},
            "convertedAt": datetime.now(UTC).isoformat(),
        })
    return ConversionResult(str(source), source_digest, str(dest), output_digest, tensors, record)


def _decompressed(source: Path, kind: str, scratch: Path) -> Path:
    """joblib's compressed files: unpack them with the same bomb limits the gate used."""
    if "+" not in kind:
        return source
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.archives import Limits, decompress_stream

    inner = scratch / "decompressed"
    findings = Findings()
    limits = Limits()
    if not decompress_stream(source, kind.split("+", 1)[1], inner, source.name, findings, limits, [limits.max_total]):
        raise ModelGateError(f"cannot decompress for conversion: {findings[0].detail if findings else '?'}",
                             artifact=source)
    return inner


def _run_child(loadable: Path, partial: Path, kind: str, allowlist: Path, timeout: float, memory_limit_mb: int,
               source: Path) -> "subprocess.CompletedProcess[str]":
    env = {"PATH": subprocess_path(), "no_proxy": "*", "NO_PROXY": "*",
           "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1", "HOME": str(partial.parent)}
    file_limit = max(4 * loadable.stat().st_size, 64 << 20)
    try:
        return subprocess.run(
            [sys.executable, "-I", "-c", _CHILD, str(loadable), str(partial), kind, str(allowlist)],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=partial.parent,
            preexec_fn=_limits(memory_limit_mb, int(timeout), file_limit),
        )
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise ModelGateError(f"conversion took longer than {timeout:.0f} s and was stopped", artifact=source) from exc


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
