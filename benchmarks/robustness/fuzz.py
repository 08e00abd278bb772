"""Fuzzing the targets: a seeded mutation loop (no dependencies) and atheris (coverage-guided, libFuzzer).

``run_mutation(target, seconds)`` mutates the committed seeds (bit flips, byte sets, truncations,
insertions, splices, duplicated runs) in-process. ``run_atheris(target, seconds)`` runs the
target under atheris in a child process with libFuzzer's own memory and per-input time limits,
seeded with the same corpus. Both report executions, crashes and hangs; crashing inputs are saved
so they can become regression tests (``tests/unit/scans/fuzz_regressions/<target>/``).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.robustness.seeds import load
from benchmarks.robustness.targets import TARGETS, Crash, call

#: A single input taking longer than this counts as a hang.
HANG_SECONDS = 10.0
RSS_LIMIT_MB = 3072


@dataclass
class FuzzResult:
    target: str
    engine: str
    seconds: float
    executions: int
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    slowest_ms: float = 0.0
    coverage: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data or b"\x00")
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        at = rng.randrange(len(buf)) if buf else 0
        if choice == 0 and buf:
            buf[at] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:
            buf[at] = rng.choice((0, 0xFF, 0x7F, 0x80, ord("("), ord("c"), ord("."), ord("\n"), ord("{"), ord('"')))
        elif choice == 2:
            del buf[at:at + rng.randint(1, max(1, len(buf) // 4))]
        elif choice == 3:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 4 and pool:
            other = rng.choice(pool)
            cut = rng.randrange(len(other)) if other else 0
            buf = buf[:at] + bytearray(other[cut:cut + rng.randint(1, 256)])
        elif choice == 5 and buf:
            run = buf[at:at + rng.randint(1, 16)]
            buf[at:at] = run * rng.randint(2, 64)
        elif buf:
            width = rng.choice((1, 2, 4, 8))
            buf[at:at + width] = rng.choice((b"\xff" * width, b"\x00" * width, b"\x7f" + b"\xff" * (width - 1)))
    return bytes(buf)


def run_mutation(name: str, seconds: float, *, seed: int = 0, out: Path | None = None) -> FuzzResult:
    target = TARGETS[name]
    pool = load(name) or [b""]
    rng = random.Random(seed)
    result = FuzzResult(name, "mutation", seconds, 0)
    if target.warm is not None:
        target.warm()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = mutate(rng, rng.choice(pool), pool)
        started = time.monotonic()
        try:
            call(target, data)
        except Crash as crash:
            result.crashes.append(str(crash)[:300])
            _save(out, name, data, "crash")
        elapsed = time.monotonic() - started
        result.slowest_ms = max(result.slowest_ms, elapsed * 1000)
        if elapsed > HANG_SECONDS:
            result.hangs.append(f"{elapsed:.1f} s")
            _save(out, name, data, "hang")
        result.executions += 1
    return result


def _save(out: Path | None, name: str, data: bytes, kind: str) -> None:
    if out is None:
        return
    import hashlib

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)


_ENTRY = """
import sys, atheris
with atheris.instrument_imports(include=["integrity"]):
    # Imported here, inside the block, so that their code is instrumented for coverage feedback
    # (the targets import them lazily, which would be too late).
    import integrity.intake.catalog, integrity.distribution, integrity.ledger, integrity.trust.policy
    import integrity.release.spec, integrity.safeio, integrity.trust.verifying
    import integrity.scans.modelgate.archives, integrity.scans.modelgate.graphs, integrity.scans.modelgate.keras
    import integrity.scans.modelgate.oracle, integrity.scans.modelgate.pickles, integrity.scans.modelgate.scanner
    import integrity.scans.modelgate.templates, integrity.scans.modelgate.tensors, integrity.scans.modelgate.textformats
    import integrity.distribution.serving, integrity.scans.images, integrity.scans.expectations
    import integrity.scans.suite_code
    from benchmarks.robustness.targets import TARGETS, call
target = TARGETS[sys.argv[1]]
if target.warm is not None:
    target.warm()
def one(data):
    call(target, bytes(data))
atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
atheris.Fuzz()
"""


def run_atheris(name: str, seconds: float, *, out: Path) -> FuzzResult:
    """libFuzzer through atheris in a child process; a crash stops that run (it is saved and reported)."""
    result = FuzzResult(name, "atheris", seconds, 0)
    work = Path(tempfile.mkdtemp(prefix=f"cairn-atheris-{name}-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for number, data in enumerate(load(name)):
        (corpus / f"seed-{number}").write_bytes(data)
    artifacts = out / name
    artifacts.mkdir(parents=True, exist_ok=True)
    entry = work / "entry.py"
    entry.write_text(_ENTRY)
    args = [sys.executable, str(entry), name, f"-max_total_time={int(seconds)}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-timeout={int(HANG_SECONDS)}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
            "-max_len=65536", str(corpus)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + 120)
    result.seconds = round(time.monotonic() - started, 1)
    log = proc.stderr + proc.stdout
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    result.executions = int(executed.group(1)) if executed else 0
    cov = re.findall(r"cov: (\d+)", log)
    result.coverage = int(cov[-1]) if cov else None
    for path in sorted(artifacts.glob("*")):
        (result.hangs if path.name.startswith(("timeout-", "slow-")) else result.crashes).append(path.name)
    if proc.returncode not in (0,) and not result.crashes and not result.hangs:
        result.crashes.append(f"atheris exited {proc.returncode}: {log[-400:]}")
    return result


if __name__ == "__main__":
    engine, seconds = sys.argv[1], float(sys.argv[2])
    names = sys.argv[3:] or list(TARGETS)
    found = Path(tempfile.mkdtemp(prefix="cairn-fuzz-found-"))
    for target in names:
        run = run_mutation(target, seconds, out=found) if engine == "mutation" else run_atheris(target, seconds,
                                                                                                out=found)
        print(json.dumps({**run.as_dict(), "crashes": run.crashes[:5]}), flush=True)
    print(f"saved inputs: {found}")
