"""Pull-and-verify of a release against a plain download plus ``sha256sum`` of the same objects.

Run from the repository root (not part of the test suite)::

    .venv/bin/python -m benchmarks.pull [--size-gb 1.0] [--repeats 3] [--workdir DIR]
                                        [--out benchmarks/results/pull.json]

One run does everything on the same S3 server: it starts moto's S3 server in its own process on
loopback, writes a release bundle with :func:`integrity.release.bundle.write_bundle` whose
``model/model.safetensors`` is ``--size-gb`` GB of random weights (the whole release is at least
that big), publishes it with :func:`integrity.distribution.publish`, then times, alternating the
order every repeat:

* three plain downloads of every object of the release (same transfer settings as the pull: one
  GET per object, 4 objects at a time) into a new folder, then hashing all of them and comparing
  with the published digests: boto3 ``download_file`` + ``sha256sum``, ``get_object`` streamed +
  ``sha256sum``, and ``get_object`` streamed + Python's ``hashlib`` (OpenSSL, which uses the
  CPU's SHA extensions where coreutils' ``sha256sum`` may not). The ratio is taken against the
  fastest of the three;
* ``cairn pull``: :func:`integrity.distribution.pull` into a new folder: index signature, rollback
  record, revocation list, download, ``verify_bundle`` (every size and digest, the model-signing
  signature over ``model/``, provenance, BOM and lineage signatures), atomic rename.

Page cache: every byte hashed by either method was written by that method's own download a moment
earlier, so both read it from the page cache (warm); the server side keeps objects in moto's
spooled temporary files, also warm. Caches are not dropped (that would disturb other processes on a
shared machine); the destination folders are new for every run and deleted afterwards. The median
of ``--repeats`` runs is reported; target: cairn pull at most 1.2 times the plain time.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GB = 1_000_000_000
MiB = 1 << 20
MODEL = "bench-model"
TARGET_RATIO = 1.2
DEFAULT_OUT = Path("benchmarks/results/pull.json")
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
#: One GET per object: moto serves every ranged GET by copying the whole object, so ranged parallel
#: downloads (``--connections``) would measure moto, not Cairn. Both methods use the same setting.
CONNECTIONS = 1
FILE_WORKERS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto's S3 server did not start")


def write_weights(path: Path, size: int) -> None:
    """A safetensors file with ``size`` bytes of random U8 weights."""
    header = {"__metadata__": {"format": "pt"}, "weights": {"dtype": "U8", "shape": [size],
                                                             "data_offsets": [0, size]}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as out:
        out.write(len(raw).to_bytes(8, "little") + raw)
        left = size
        while left:
            n = min(left, 64 * MiB)
            out.write(os.urandom(n))
            left -= n


def build_release(workdir: Path, size: int) -> tuple[Path, Path, Path]:
    """(bundle, release policy, public key) for a release with ``size`` bytes of weights."""
    from integrity.release.bundle import write_bundle
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key

    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    generate_key_pair(keys / "release.key", keys / "release.pub")
    policy = workdir / "release-policy.yaml"
    fingerprint = key_fingerprint(load_public_key(keys / "release.pub"))
    policy.write_text(f"version: 1\nsources:\n  {MODEL}:\n    signers:\n      - key: {{fingerprint: \"{fingerprint}\", "
                      f"public_key: {keys / 'release.pub'}}}\n")
    model_dir = workdir / "model-src"
    model_dir.mkdir()
    write_weights(model_dir / "model.safetensors", size)
    (model_dir / "config.json").write_text(json.dumps({"architecture": "benchmark", "input_shape": [size]}))
    digest = hashlib.sha256(b"bench-dataset").hexdigest()
    inputs = [{"name": "bench-dataset", "kind": "dataset", "digest": f"sha256:{digest}",
               "verification_record": "records/verifications/bench.json"}]
    bundle = write_bundle(
        workdir / "releases", model=MODEL, version="1.0.0", model_dir=model_dir,
        provenance={"_type": "https://in-toto.io/Statement/v1", "subject": [],
                    "predicateType": "https://slsa.dev/provenance/v1",
                    "predicate": {"buildDefinition": {"resolvedDependencies": [
                        {"name": "bench-dataset", "digest": {"sha256": digest}}]}}},
        bom={"bomFormat": "CycloneDX", "specVersion": "1.6"}, lineage={"nodes": [], "edges": []},
        lineage_svg=b"<svg xmlns='http://www.w3.org/2000/svg'/>", signer=KeySigner.from_file(keys / "release.key"),
        inputs=inputs, policy_digest="sha256:" + "0" * 64, gates={"release_gate": {"passed": True}}, sequence=1)
    shutil.rmtree(model_dir)
    return bundle, policy, keys / "release.pub"


def plain_download(client: Any, bucket: str, objects: dict[str, tuple[str, str, int]], dest: Path, *,
                   streamed: bool, hasher: str = "sha256sum") -> float:
    """Download every object (s3transfer's download_file, or get_object streamed in 1 MiB chunks), then
    hash all of them (one ``sha256sum`` process, or Python's OpenSSL-backed hashlib); returns seconds."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=1 << 40, max_concurrency=CONNECTIONS, use_threads=True)
    started = time.perf_counter()
    dest.mkdir()

    def one(item: tuple[str, tuple[str, str, int]]) -> None:
        name, (key, _digest, _size) = item
        target = dest / name.replace("/", "__")
        if not streamed:
            client.download_file(bucket, key, str(target), Config=config)
            return
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(target, "wb") as out:
            for chunk in body.iter_chunks(MiB):
                out.write(chunk)

    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        list(pool.map(one, sorted(objects.items(), key=lambda kv: -kv[1][2])))  # largest first, as the pull
    if hasher == "sha256sum":
        run = subprocess.run(["sha256sum", *sorted(str(p) for p in dest.iterdir())], capture_output=True,
                             text=True, check=True)
        sums = {Path(line.split("  ", 1)[1]).name: line.split("  ", 1)[0] for line in run.stdout.splitlines()}
    else:
        sums = {}
        for path in sorted(dest.iterdir()):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(4 * MiB):
                    digest.update(chunk)
            sums[path.name] = digest.hexdigest()
    elapsed = time.perf_counter() - started
    for name, (_key, digest, _size) in objects.items():
        if sums.get(name.replace("/", "__")) != digest:
            raise SystemExit(f"plain download: {name} does not match its digest")
    return elapsed


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="weights in GB (1e9 bytes; default 1.0)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    os.environ.update(FAKE_ENV)

    from integrity.distribution import PullState, StoreSource, publish, pull
    from integrity.release.bundle import verify_bundle
    from integrity.storage import open_store
    from integrity.trust.policy import load_policy

    workdir = Path(tempfile.mkdtemp(prefix="cairn-pull-bench-", dir=args.workdir))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["CAIRN_S3_ENDPOINT_URL"] = endpoint
    server = start_moto(port)
    try:
        size = int(args.size_gb * GB)
        log(f"writing a release with {size / GB:.2f} GB of weights under {workdir}")
        bundle, policy_path, _public = build_release(workdir, size)
        policy = load_policy(policy_path)
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client("s3", endpoint_url=endpoint,
                                                config=Config(s3={"addressing_style": "path"}))
        client.create_bucket(Bucket="bench")
        store = open_store("s3://bench/store")
        log("publishing to moto's S3 server")
        published_s = timed(lambda: publish(store, bundle, policy))
        index = json.loads((bundle / "release.json").read_text())
        release_bytes = sum(f["size"] for f in index["files"].values())
        objects = {name: (f"store/trusted/sha256/{entry['sha256'][:2]}/{entry['sha256']}", entry["sha256"],
                          entry["size"]) for name, entry in index["files"].items()}
        for name in ("release.json", "release.json.sig"):
            digest = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
            objects[name] = (f"store/trusted/sha256/{digest[:2]}/{digest}", digest, (bundle / name).stat().st_size)
            release_bytes += (bundle / name).stat().st_size
        shutil.rmtree(bundle)  # nothing local left to read from
        plains = {"download_file": (False, "sha256sum"), "get_object": (True, "sha256sum"),
                  "get_object_hashlib": (True, "hashlib")}
        runs: dict[str, list[float]] = {**{name: [] for name in plains}, "cairn": []}
        verify_only: list[float] = []

        def run_plain(i: int) -> None:
            for name, (streamed, hasher) in plains.items():
                dest = workdir / f"plain-{name}-{i}"
                runs[name].append(plain_download(client, "bench", objects, dest, streamed=streamed, hasher=hasher))
                shutil.rmtree(dest)

        def run_cairn(i: int) -> None:
            dest = workdir / f"pulled-{i}"
            state = PullState(workdir / f"state-{i}.json")
            runs["cairn"].append(timed(lambda: pull(StoreSource(store, connections=CONNECTIONS), MODEL, None,
                                                    dest, policy, state=state, progress=False,
                                                    workers=FILE_WORKERS)))
            # Not part of the pull's time: how much of it is verify_bundle on its own (page cache warm).
            verify_only.append(timed(lambda: verify_bundle(dest, policy, MODEL)))
            shutil.rmtree(dest)

        log("warm-up (not timed)")
        run_plain(-1)
        run_cairn(-1)
        runs = {name: [] for name in runs}
        verify_only.clear()
        for i in range(args.repeats):
            order = (run_plain, run_cairn) if i % 2 == 0 else (run_cairn, run_plain)
            for action in order:
                action(i)
            log(f"repeat {i + 1}: " + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in runs.items()))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in runs.items()}
    # The issue's peer: plain download plus sha256sum (the faster of the two download methods).
    plain_name = min(("download_file", "get_object"), key=lambda name: medians[name])
    plain, cairn = medians[plain_name], medians["cairn"]
    ratio = cairn / plain
    strict_ratio = cairn / medians["get_object_hashlib"]
    verify_median = statistics.median(verify_only)
    result = {
        "benchmark": "pull",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "release_bytes": release_bytes,
        "objects": len(objects),
        "repeats": args.repeats,
        "server": "moto S3 server, separate process, 127.0.0.1",
        "page_cache": "warm: hashes read bytes their own download just wrote; server objects warm; no drop_caches",
        "transfer": {"connections_per_object": CONNECTIONS, "objects_at_once": FILE_WORKERS},
        "publish_seconds": round(published_s, 3),
        "seconds": {name: [round(v, 3) for v in values] for name, values in runs.items()},
        "median_seconds": {name: round(value, 3) for name, value in medians.items()},
        "verify_bundle_only_seconds": [round(v, 3) for v in verify_only],
        "baseline": plain_name,
        "ratio": round(ratio, 3),
        "ratio_vs_hashlib_plain": round(strict_ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }
    labels = {"download_file": "plain: boto3 download_file (s3transfer) + sha256sum",
              "get_object": "plain: boto3 get_object streamed + sha256sum",
              "get_object_hashlib": "plain: boto3 get_object streamed + Python hashlib (OpenSSL) sha256",
              "cairn": "cairn pull (download + verify + atomic move)"}
    rows = [f"| {labels[name]} | {medians[name]:.2f} | {', '.join(f'{v:.2f}' for v in runs[name])} | "
            f"{release_bytes / medians[name] / 1e6:.0f} | {medians[name] / plain:.2f} |" for name in labels]
    rows.append(f"| (of which verify_bundle alone, page cache warm) | {verify_median:.2f} | "
                f"{', '.join(f'{v:.2f}' for v in verify_only)} | {release_bytes / verify_median / 1e6:.0f} | |")
    table = "\n".join([
        f"Release: {release_bytes / GB:.3f} GB in {len(objects)} objects, moto S3 on loopback, "
        f"median of {args.repeats} (page cache warm, see JSON)",
        "",
        "| method | median s | runs (s) | MB/s | vs download + sha256sum |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Target: cairn pull <= {TARGET_RATIO:.1f} x plain download + sha256sum: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'} ({ratio:.2f}). Against download + OpenSSL sha256 "
        f"(stricter than the target's peer): {strict_ratio:.2f}.",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
