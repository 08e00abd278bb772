"""Hashing throughput: Cairn against model_signing and against the machine's SHA-256 limit.

Run from the repository root (not part of the test suite)::

    python -m benchmarks.hashing.bench [--size-gb 2] [--workdir DIR] [--repeats N]
                                       [--out benchmarks/results/hashing.json]

Two cases are measured in one run, on data generated once under ``--workdir`` and read into the
page cache before anything is timed (so the numbers compare CPU use and parallelism, not disks):

* ``directory``: a model-like directory (a few large safetensors shards, a few tens-of-MB files,
  many small json/txt files), ``--size-gb`` in all;
* ``single-file``: one file of ``--size-gb``.

For each case every Cairn mode (``files``, ``shards`` at two shard sizes, default workers and one
worker) and model_signing's file and shard serializations are timed ``--repeats`` times; the median
is reported in GB/s (GB = 1e9 bytes) and as a percentage of the machine's SHA-256 limit (one core's
``hashlib.sha256`` speed over an in-memory buffer times ``os.cpu_count()``). Cairn's manifests are
checked against model_signing's for the same serialization (same subject root digest and resources).
Only ``time.perf_counter`` is used for timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integrity.trust.hashing import DEFAULT_SHARD_SIZE, HashingConfig, hash_artifact

GB = 1_000_000_000
MB = 1_000_000
MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "cairn-hashing-bench"
DEFAULT_OUT = Path("benchmarks/results/hashing.json")
WRITE_CHUNK = 64 * MiB
WARM_CHUNK = 8 * MiB
TARGET_PERCENT_OF_LIMIT = 80.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------


def directory_layout(total: int) -> list[tuple[str, int]]:
    """A checkpoint-like tree of exactly ``total`` bytes: (relative path, size) pairs.

    At 2 GB: five safetensors shards of 250-470 MB, four files of 12-42 MB, and a few hundred
    small json/txt files (about 6 MB together). The layout is deterministic for a given total.
    """
    rnd = random.Random(20_240_601)
    small: list[tuple[str, int]] = [
        ("config.json", 1_400),
        ("generation_config.json", 180),
        ("special_tokens_map.json", 560),
        ("tokenizer_config.json", 3_900),
        ("README.md", 9_800),
        ("model.safetensors.index.json", 28_000),
        ("vocab.txt", 800_000),
        ("merges.txt", 450_000),
    ]
    small += [(f"configs/layers/layer_{i:03d}.json", rnd.randint(1_000, 48_000)) for i in range(160)]
    small += [(f"eval/results_{i:02d}.txt", rnd.randint(500, 20_000)) for i in range(40)]
    small += [(f"tokenizer/added_tokens_{i:02d}.json", rnd.randint(200, 8_000)) for i in range(24)]
    medium = [
        ("tokenizer.json", 0.0085),
        ("embeddings/token_embeddings.bin", 0.021),
        ("lm_head.bin", 0.0165),
        ("training_args.bin", 0.006),
    ]
    shards = [0.235, 0.22, 0.195, 0.17, 0.125]
    layout = [(f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors", int(f * total)) for i, f in enumerate(shards)]
    layout += [(name, int(f * total)) for name, f in medium]
    layout += small
    # Put the rounding (and the small files' share) on the first shard so the total is exact.
    first_name, first_size = layout[0]
    first_size += total - sum(size for _, size in layout)
    if first_size <= 0:
        raise SystemExit(f"--size-gb is too small for the directory layout ({total} bytes)")
    layout[0] = (first_name, first_size)
    return layout


def _random_source(seed: int) -> Callable[[int], bytes]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a Cairn dependency
        return os.urandom
    generator = np.random.default_rng(seed).bit_generator

    def produce(n: int) -> bytes:
        return generator.random_raw((n + 7) // 8).tobytes()[:n]

    return produce


def write_random_file(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    produce = _random_source(seed)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        remaining = size
        while remaining:
            n = min(WRITE_CHUNK, remaining)
            handle.write(produce(n))
            remaining -= n
    partial.replace(path)


def _existing_files(root: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            full = Path(directory) / name
            found[full.relative_to(root).as_posix()] = full.stat().st_size
    return found


def prepare_directory(root: Path, layout: Sequence[tuple[str, int]]) -> bool:
    """Create the tree unless it already exists with exactly these files and sizes; True if generated."""
    wanted = dict(layout)
    if root.is_dir() and _existing_files(root) == wanted:
        return False
    if root.exists():
        shutil.rmtree(root)
    for seed, (relative, size) in enumerate(layout):
        write_random_file(root / relative, size, seed=1_000 + seed)
    return True


def prepare_file(path: Path, size: int) -> bool:
    if path.is_file() and path.stat().st_size == size:
        return False
    write_random_file(path, size, seed=7)
    return True


def files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(Path(d) / n for d, _, names in os.walk(path) for n in names)


def read_through(paths: Sequence[Path]) -> tuple[int, float]:
    """Read every byte once (fills the page cache); returns (bytes, seconds)."""
    buf = bytearray(WARM_CHUNK)
    total = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while got := handle.readinto(buf):
                total += got
    return total, time.perf_counter() - start


# -- the machine's SHA-256 limit ------------------------------------------------------------


@dataclass
class Limit:
    buffer_bytes: int
    update_bytes: int
    threads: int
    per_core_seconds: list[float]
    parallel_seconds: list[float]

    @property
    def per_core_gbps(self) -> float:
        return self.buffer_bytes / statistics.median(self.per_core_seconds) / GB

    @property
    def ideal_gbps(self) -> float:
        """The limit the targets use: one core's speed times ``os.cpu_count()``."""
        return self.per_core_gbps * self.threads

    @property
    def parallel_gbps(self) -> float:
        return self.threads * self.buffer_bytes / statistics.median(self.parallel_seconds) / GB


def measure_limit(buffer_bytes: int, update_bytes: int, threads: int, repeats: int) -> Limit:
    buf = _random_source(99)(buffer_bytes)
    view = memoryview(buf)

    def hash_buffer() -> bytes:
        hasher = hashlib.sha256()
        for offset in range(0, buffer_bytes, update_bytes):
            hasher.update(view[offset : offset + update_bytes])
        return hasher.digest()

    hash_buffer()  # warm-up: page in the buffer, load OpenSSL's code paths
    per_core: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        hash_buffer()
        per_core.append(time.perf_counter() - start)

    parallel: list[float] = []
    for _ in range(repeats):
        barrier = threading.Barrier(threads + 1)

        def worker(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            hash_buffer()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in pool:
            thread.join()
        parallel.append(time.perf_counter() - start)
    return Limit(buffer_bytes, update_bytes, threads, per_core, parallel)


# -- what is timed --------------------------------------------------------------------------


@dataclass
class Variant:
    tool: str
    mode: str  # "files" or "shards": the serialization, the key for the compatibility check
    shard_size: int | None
    workers: int  # size of the thread pool the tool is asked for
    default_workers: bool
    run: Callable[[Path], Any]
    statement: Callable[[Any], dict[str, Any]]

    @property
    def serialization(self) -> tuple[str, int | None]:
        return (self.mode, self.shard_size)

    @property
    def label(self) -> str:
        size = f" {fmt_shard(self.shard_size)}" if self.shard_size else ""
        return f"{self.tool} {self.mode}{size} workers={self.workers}{' (default)' if self.default_workers else ''}"


def cairn_variants(cpu_count: int, shard_size: int) -> list[Variant]:
    def make(config: HashingConfig, default_workers: bool) -> Variant:
        sharded = config.method == "shards"
        return Variant(
            tool="cairn",
            mode=config.method,
            shard_size=config.shard_size if sharded else None,
            workers=config.workers or cpu_count,  # hash_artifact's default is os.cpu_count()
            default_workers=default_workers,
            run=lambda path: hash_artifact(path, config),
            statement=lambda manifest: manifest.to_statement(),
        )

    sizes = [shard_size] + ([DEFAULT_SHARD_SIZE] if shard_size != DEFAULT_SHARD_SIZE else [])
    variants = []
    for config in [HashingConfig()] + [HashingConfig().use_shards(size) for size in sizes]:
        variants.append(make(config, default_workers=True))
        variants.append(make(config.with_workers(1), default_workers=False))
    return variants


def model_signing_variants(cpu_count: int, shard_size: int) -> list[Variant]:
    from google.protobuf import json_format
    from model_signing import hashing as oms_hashing
    from model_signing._signing.signing import Payload

    # model_signing leaves max_workers to ThreadPoolExecutor, whose default is min(32, cpus + 4).
    pool_default = min(32, cpu_count + 4)

    def statement(manifest: Any) -> dict[str, Any]:
        return dict(json.loads(json_format.MessageToJson(Payload(manifest).statement.pb)))

    def make(mode: str, size: int | None, build: Callable[[], Any]) -> Variant:
        config = build()
        return Variant("model_signing", mode, size, pool_default, True, config.hash, statement)

    sizes = [DEFAULT_SHARD_SIZE] + ([shard_size] if shard_size != DEFAULT_SHARD_SIZE else [])
    variants = [make("files", None, lambda: oms_hashing.Config().use_file_serialization())]
    for size in sizes:
        variants.append(
            make("shards", size, lambda size=size: oms_hashing.Config().use_shard_serialization(shard_size=size))
        )
    return variants


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class Measurement:
    case: str
    variant: Variant
    nbytes: int
    seconds: list[float]
    root_digest: str
    statement: dict[str, Any]
    oms_compatible: bool | None = None

    @property
    def seconds_median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds_median / GB


def run_case(case: str, path: Path, variants: Sequence[Variant], repeats: int) -> list[Measurement]:
    files = files_under(path)
    nbytes, warm_seconds = read_through(files)
    log(f"[{case}] {len(files)} files, {nbytes / GB:.3f} GB; page-cache read {nbytes / warm_seconds / GB:.2f} GB/s")
    seconds: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    digests: dict[int, set[str]] = {i: set() for i in range(len(variants))}
    statements: dict[int, dict[str, Any]] = {}
    # Round-robin over the variants so slow drift on the machine spreads over all of them.
    for repeat in range(repeats):
        for i, variant in enumerate(variants):
            start = time.perf_counter()
            manifest = variant.run(path)
            elapsed = time.perf_counter() - start
            seconds[i].append(elapsed)
            statements[i] = variant.statement(manifest)
            digests[i].add(statements[i]["subject"][0]["digest"]["sha256"])
            speed = nbytes / elapsed / GB
            log(f"[{case}] run {repeat + 1}/{repeats} {variant.label}: {elapsed:.3f} s ({speed:.2f} GB/s)")
    measurements = []
    for i, variant in enumerate(variants):
        if len(digests[i]) != 1:
            raise SystemExit(f"[{case}] {variant.label} gave different digests across repeats: {digests[i]}")
        measurements.append(Measurement(case, variant, nbytes, seconds[i], digests[i].pop(), statements[i]))

    # OMS compatibility: the same subject (name and root digest) and the same resources, byte for byte.
    references = {m.variant.serialization: m for m in measurements if m.variant.tool == "model_signing"}
    for m in measurements:
        if m.variant.tool == "model_signing":
            m.oms_compatible = True  # the reference implementation
            continue
        reference = references.get(m.variant.serialization)
        if reference is None:
            continue
        m.oms_compatible = _canonical(m.statement["subject"]) == _canonical(reference.statement["subject"]) and (
            _canonical(m.statement["predicate"]["resources"])
            == _canonical(reference.statement["predicate"]["resources"])
        )
    return measurements


# -- reporting ------------------------------------------------------------------------------


def fmt_shard(size: int | None) -> str:
    if not size:
        return "-"
    if size % GB == 0:
        return f"{size // GB} GB"
    if size % MB == 0:
        return f"{size // MB} MB"
    return f"{size} B"


def fmt_workers(workers: int, default: bool) -> str:
    return f"{workers} (default)" if default else str(workers)


def result_rows(limit: Limit, measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    cpus = limit.threads
    rows: list[dict[str, Any]] = []

    def limit_row(mode: str, workers: int, nbytes: int, seconds: list[float], gbps: float) -> dict[str, Any]:
        return {
            "case": "limit",
            "tool": "hashlib.sha256",
            "mode": mode,
            "workers": workers,
            "shard_size": None,
            "bytes": nbytes,
            "seconds_median": statistics.median(seconds),
            "gbps": gbps,
            "percent_of_limit": 100.0 * gbps / limit.ideal_gbps,
            "percent_of_measured_parallel": 100.0 * gbps / limit.parallel_gbps,
            "oms_compatible": None,
            "seconds": seconds,
            "update_bytes": limit.update_bytes,
        }

    rows.append(limit_row("in-memory, 1 thread", 1, limit.buffer_bytes, limit.per_core_seconds, limit.per_core_gbps))
    # The ideal: every core as fast as the one measured (cpus buffers in one buffer's time).
    rows.append(
        limit_row(
            f"ideal: 1 thread x {cpus} cpus", cpus, cpus * limit.buffer_bytes, limit.per_core_seconds, limit.ideal_gbps
        )
    )
    rows.append(
        limit_row(
            f"in-memory, {cpus} threads (measured)",
            cpus,
            cpus * limit.buffer_bytes,
            limit.parallel_seconds,
            limit.parallel_gbps,
        )
    )
    for m in measurements:
        v = m.variant
        rows.append(
            {
                "case": m.case,
                "tool": v.tool,
                "mode": v.mode,
                "workers": v.workers,
                "workers_default": v.default_workers,
                "shard_size": v.shard_size,
                "bytes": m.nbytes,
                "seconds_median": m.seconds_median,
                "gbps": m.gbps,
                "percent_of_limit": 100.0 * m.gbps / limit.ideal_gbps,
                "percent_of_measured_parallel": 100.0 * m.gbps / limit.parallel_gbps,
                "oms_compatible": m.oms_compatible,
                "seconds": m.seconds,
                "root_digest": m.root_digest,
            }
        )
    return rows


def evaluate_targets(limit: Limit, measurements: Sequence[Measurement], tolerance: float) -> list[tuple[bool, str]]:
    lines: list[tuple[bool, str]] = []
    for case in dict.fromkeys(m.case for m in measurements):
        ours = [m for m in measurements if m.case == case and m.variant.tool == "cairn"]
        compatible = [m for m in ours if m.oms_compatible]
        if not compatible:
            lines.append((False, f"[{case}] no Cairn mode produced a manifest identical to model_signing's"))
        else:
            best = max(compatible, key=lambda m: m.gbps)
            percent = 100.0 * best.gbps / limit.ideal_gbps
            lines.append(
                (
                    percent >= TARGET_PERCENT_OF_LIMIT,
                    f"[{case}] fastest OMS-compatible Cairn mode ({best.variant.label}): {best.gbps:.2f} GB/s"
                    f" = {percent:.1f}% of the limit {limit.ideal_gbps:.2f} GB/s"
                    f" (target >= {TARGET_PERCENT_OF_LIMIT:.0f}%)",
                )
            )
        default = next(m for m in ours if m.variant.mode == "files" and m.variant.default_workers)
        theirs = next(
            m
            for m in measurements
            if m.case == case and m.variant.tool == "model_signing" and m.variant.mode == "files"
        )
        ratio = default.seconds_median / theirs.seconds_median
        lines.append(
            (
                ratio <= 1.0 + tolerance,
                f"[{case}] Cairn default (files, {default.variant.workers} workers) vs model_signing default (files):"
                f" median {default.seconds_median:.3f} s vs {theirs.seconds_median:.3f} s,"
                f" time ratio cairn/model_signing = {ratio:.3f} (speed-up x{1 / ratio:.2f};"
                f" target <= 1.000 + {tolerance:.3f} noise allowance)",
            )
        )
    return lines


def markdown(
    rows: Sequence[dict[str, Any]],
    limit: Limit,
    context: dict[str, str],
    targets: Sequence[tuple[bool, str]],
    wall_seconds: float,
) -> str:
    out = ["# Hashing throughput", ""]
    out += [f"- {key}: {value}" for key, value in context.items()]
    out += [
        f"- SHA-256 limit: {limit.per_core_gbps:.3f} GB/s per core x {limit.threads} cpus = {limit.ideal_gbps:.3f} GB/s"
        f" (measured with {limit.threads} threads: {limit.parallel_gbps:.3f} GB/s)",
        "- GB = 1e9 bytes; every figure is the median of the repeats; data is in the page cache before timing",
        "",
        "| case | tool | mode | workers | shard size | bytes | median s | GB/s | % of limit | OMS-compatible |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        compat = {True: "yes", False: "NO", None: "n/a"}[row["oms_compatible"]]
        if row["tool"] == "model_signing":
            compat = "reference"
        workers = fmt_workers(row["workers"], row.get("workers_default", False))
        out.append(
            f"| {row['case']} | {row['tool']} | {row['mode']} | {workers} | {fmt_shard(row['shard_size'])}"
            f" | {row['bytes']:,} | {row['seconds_median']:.3f} | {row['gbps']:.3f} | {row['percent_of_limit']:.1f}"
            f" | {compat} |"
        )
    out += ["", "## Targets", ""]
    out += [f"{'PASS' if ok else 'FAIL'} {text}  " for ok, text in targets]
    out += ["", f"Total wall time of the run: {wall_seconds:.1f} s", ""]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hashing.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each case in GB (1e9 bytes); default 2")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"where the data is generated (default {DEFAULT_WORKDIR})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the median is reported")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results; the markdown goes beside it (.md)")
    parser.add_argument(
        "--shard-size-mb",
        type=int,
        default=256,
        help="Cairn's/model_signing's smaller shard size in MB (1e6 bytes); default 256",
    )
    parser.add_argument("--limit-buffer-mb", type=int, default=256, help="in-memory buffer for the SHA-256 limit")
    parser.add_argument("--limit-update-mib", type=int, default=4, help="hashlib update size for the limit")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.03,
        help="noise allowance for 'Cairn default not slower than model_signing default' (0.03 = 3%%)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.size_gb < 0.05:
        parser.error("--size-gb must be at least 0.05")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    size = int(args.size_gb * GB)
    shard_size = args.shard_size_mb * MB
    workdir: Path = args.workdir.resolve()
    if workdir.is_relative_to(REPO_ROOT):
        log(f"warning: --workdir {workdir} is inside the repository; prefer a directory under /tmp")
    workdir.mkdir(parents=True, exist_ok=True)

    directory = workdir / f"model-{size}"
    single = workdir / f"single-{size}.bin"
    present = sum(p.stat().st_size for p in files_under(directory)) if directory.is_dir() else 0
    present += single.stat().st_size if single.is_file() else 0
    free = shutil.disk_usage(workdir).free
    if free + present < 2 * size:
        raise SystemExit(f"not enough free space in {workdir}: need {2 * size / GB:.1f} GB, have {free / GB:.1f} GB")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 2 * size > 0.8 * ram:
        log(f"warning: {2 * size / GB:.1f} GB of data may not stay in {ram / GB:.1f} GB of RAM; disk reads will count")

    generate_start = time.perf_counter()
    made = prepare_directory(directory, directory_layout(size))
    made = prepare_file(single, size) or made
    generate_seconds = time.perf_counter() - generate_start
    log(f"data in {workdir}: {'generated' if made else 'reused'} ({generate_seconds:.1f} s)")

    log("measuring the SHA-256 limit")
    limit = measure_limit(args.limit_buffer_mb * MB, args.limit_update_mib * MiB, cpus, max(args.repeats, 5))
    log(
        f"sha256: {limit.per_core_gbps:.3f} GB/s per core, ideal {limit.ideal_gbps:.3f} GB/s, "
        f"{cpus} threads measured {limit.parallel_gbps:.3f} GB/s"
    )

    variants = cairn_variants(cpus, shard_size) + model_signing_variants(cpus, shard_size)
    measurements = run_case("directory", directory, variants, args.repeats)
    measurements += run_case("single-file", single, variants, args.repeats)

    rows = result_rows(limit, measurements)
    targets = evaluate_targets(limit, measurements, args.tolerance)
    import model_signing

    context = {
        "machine": f"{platform.machine()}, os.cpu_count() = {cpus}, {ram / 2**30:.1f} GiB RAM",
        "python": f"{platform.python_version()}, {ssl.OPENSSL_VERSION}, model_signing {model_signing.__version__}",
        "data": f"{workdir} ({'generated' if made else 'reused'}); {size / GB:g} GB per case; repeats {args.repeats}",
        "shard sizes": f"{fmt_shard(shard_size)} and model_signing's default {fmt_shard(DEFAULT_SHARD_SIZE)}",
    }
    wall_seconds = time.perf_counter() - wall_start
    report = markdown(rows, limit, context, targets, wall_seconds)

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(report)
    print(report)
    print(f"wrote {out} and {out.with_suffix('.md')}; total wall time {wall_seconds:.1f} s")
    return 0 if all(ok for ok, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
