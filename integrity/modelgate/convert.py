"""Convert an allowlisted PyTorch checkpoint to safetensors in a separate, resource-limited process.

The parent scans the file first (nothing unsafe ever reaches ``torch.load``); the child runs
with an address-space and CPU-time limit, no proxies, an audit hook that refuses sockets and
subprocesses, and ``torch.load(weights_only=True)``. It writes the safetensors file by hand
(8-byte little-endian header length, JSON header, raw little-endian tensor bytes), and the
parent re-checks the output with the gate before anyone uses it.
"""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity.errors import VerificationError
from integrity.hashing import IN_TOTO_STATEMENT_TYPE, sha256_file

CONVERSION_PREDICATE_TYPE = "https://cairn.dev/attestations/conversion/v1"


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


_CHILD = r"""
import json, struct, sys
def refuse(event, args):
    if event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "urllib.")):
        raise RuntimeError(f"blocked during conversion: {event}")
sys.addaudithook(refuse)
import torch
source, dest = sys.argv[1], sys.argv[2]
state = torch.load(source, map_location="cpu", weights_only=True)
if not isinstance(state, dict):
    raise SystemExit("not a state_dict: " + type(state).__name__)
names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
         torch.bool: "BOOL"}
header, chunks, offset = {}, [], 0
for name in sorted(state):
    tensor = state[name]
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in names:
        raise SystemExit(f"entry {name!r} is not a plain tensor")
    data = tensor.detach().contiguous().cpu()
    raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
    header[name] = {"dtype": names[data.dtype], "shape": list(data.shape), "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
blob = json.dumps(header, separators=(",", ":")).encode()
blob += b" " * (-len(blob) % 8)
with open(dest, "xb") as out:
    out.write(struct.pack("<Q", len(blob)))
    out.write(blob)
    for raw in chunks:
        out.write(raw)
print(json.dumps({"tensors": len(header)}))
"""


def _limits(memory_mb: int, cpu_s: int) -> Any:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, memory_mb * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))

    return apply


def convert_to_safetensors(
    path: Path, dest: Path, *, timeout: float = 300, memory_limit_mb: int = 4096
) -> ConversionResult:
    """Scan, convert in a sandboxed child, re-scan the output; raises :class:`ModelGateError` on any failure."""
    from integrity.modelgate import scan_path

    source = Path(path)
    report = scan_path(source)
    if not report.safe:
        raise ModelGateError(f"refused before conversion: {report.reason}", artifact=source)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "no_proxy": "*", "NO_PROXY": "*",
           "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1", "HOME": str(dest.parent)}
    try:
        run = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD, str(source), str(partial)],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=dest.parent,
            preexec_fn=_limits(memory_limit_mb, int(timeout)),
        )
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise ModelGateError(f"conversion took longer than {timeout:.0f} s and was stopped", artifact=source) from exc
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
    tensors = int(json.loads(run.stdout.strip().splitlines()[-1])["tensors"])
    source_digest, output_digest = sha256_file(source), sha256_file(dest)
    record = {
        "_type": IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": dest.name, "digest": {"sha256": output_digest}}],
        "predicateType": CONVERSION_PREDICATE_TYPE,
        "predicate": {
            "source": {"name": source.name, "digest": {"sha256": source_digest}},
            "converter": "torch.load(weights_only=True) in a sandboxed child -> safetensors",
            "torchVersion": _torch_version(),
            "tensors": tensors,
            "scan": report.as_dict(),
            "convertedAt": datetime.now(UTC).isoformat(),
        },
    }
    return ConversionResult(str(source), source_digest, str(dest), output_digest, tensors, record)


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "unknown"


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
