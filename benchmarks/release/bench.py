"""Release verification: Cairn's bundle audit against the model_signing CLI, on one real release.

Run from the repository root after ``scripts/demo.sh`` (not part of the test suite)::

    python -m benchmarks.release.bench [--release DIR] [--home .cairn] [--repeats 5] [--flips 2]
                                       [--out benchmarks/results/release.json]

Two things are measured side by side in one run:

* **time**: verifying the release with ``verify_bundle`` in-process (every file's digest, the
  index, the model-signing signature over ``model/`` and the four document signatures), the
  ``cairn audit`` and ``cairn verify model/`` commands, and ``model_signing verify key model/``
  (which covers only the model directory); median of ``--repeats`` runs, ``time.perf_counter``;
* **tamper detection**: ``--flips`` single-byte changes at seeded random offsets in every file of
  the bundle (each on a fresh copy), and which verifier notices each change.

It also reports what the release steps themselves cost, from the training and evaluation records.
Writes JSON and a markdown table (``.md`` beside the JSON).
"""

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from integrity.errors import CairnError
from integrity.release.bundle import verify_bundle
from integrity.trust.policy import load_policy

BIN = Path(sys.executable).parent
DEFAULT_OUT = Path("benchmarks/results/release.json")


def _latest_release(home: Path) -> Path:
    releases = sorted((home / "releases").glob("*-*/release.json"), key=lambda p: p.stat().st_mtime)
    if not releases:
        raise SystemExit(f"no release under {home / 'releases'}: run scripts/demo.sh first")
    return releases[-1].parent


def _median_seconds(action: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _cli(*args: object) -> int:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=".cairn")
    parser.add_argument("--release")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flips", type=int, default=2, help="random single-byte changes per file")
    parser.add_argument("--seed", type=int, default=20_261_123)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    release = Path(args.release).resolve() if args.release else _latest_release(home)
    policy = load_policy(home / "release-policy.yaml")
    public = home / "keys" / "release.pub"
    index = json.loads((release / "release.json").read_text())
    model = index["model"]
    model_dir = release / "model"

    def ms_verify(folder: Path) -> int:
        return _cli(BIN / "model_signing", "verify", "key", "--signature", folder / "model" / "model.sig",
                    "--public_key", public, folder / "model")

    timings = {
        "cairn verify_bundle (in-process, whole bundle)": _median_seconds(
            lambda: verify_bundle(release, policy, model), args.repeats),
        "cairn audit RELEASE (CLI, whole bundle)": _median_seconds(
            lambda: _cli(BIN / "cairn", "audit", release, "--home", home), args.repeats),
        "cairn verify model/ --key (CLI, model only)": _median_seconds(
            lambda: _cli(BIN / "cairn", "verify", model_dir, "--key", public), args.repeats),
        "model_signing verify key model/ (CLI, model only)": _median_seconds(
            lambda: ms_verify(release), args.repeats),
    }
    size = sum(p.stat().st_size for p in release.rglob("*") if p.is_file())

    rng = random.Random(args.seed)
    names = ["release.json", "release.json.sig", *index["files"]]
    detected = {"cairn verify_bundle": 0, "model_signing verify (model/)": 0}
    trials = []
    with tempfile.TemporaryDirectory(prefix="cairn-release-bench-") as scratch:
        for name in names:
            for _ in range(args.flips):
                copy = Path(scratch) / f"trial-{len(trials)}" / release.name
                shutil.copytree(release, copy)
                target = copy / name
                data = bytearray(target.read_bytes())
                offset = rng.randrange(len(data))
                data[offset] ^= 1 << rng.randrange(8)
                target.write_bytes(bytes(data))
                try:
                    verify_bundle(copy, policy, model)
                    cairn_caught, named = False, False
                except CairnError as error:
                    cairn_caught, named = True, name in error.summary()
                ms_caught = ms_verify(copy) != 0
                detected["cairn verify_bundle"] += cairn_caught
                detected["model_signing verify (model/)"] += ms_caught
                trials.append({"file": name, "offset": offset, "cairn": cairn_caught, "cairn_named_file": named,
                               "model_signing": ms_caught})
                shutil.rmtree(copy.parent)

    training = json.loads(next((home / "work" / "releases" / model).glob("*/training.json")).read_text())
    steps = {"release spec": training["predicate"]["spec"]["path"],
             "device": training["predicate"]["device"].get("type"),
             "training seconds (latest run)": training["predicate"]["seconds"],
             "training steps": training["predicate"]["result"]["steps"]}
    evaluation_files = sorted((home / "work" / "releases" / model).glob("*/evaluation.json"),
                              key=lambda p: p.stat().st_mtime)
    if evaluation_files:
        steps["evaluation seconds (latest run)"] = json.loads(evaluation_files[-1].read_text())["predicate"]["seconds"]
    result = {"release": str(release), "bundle_bytes": size, "repeats": args.repeats, "timings_s": timings,
              "tamper": {"trials": len(trials), "detected": detected,
                         "cairn_named_the_file": sum(t["cairn_named_file"] for t in trials), "cases": trials},
              "release_steps": steps, "python": sys.version.split()[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    lines = [f"Release {release.name}: {size / 1e6:.1f} MB in {len(names)} files; median of {args.repeats} runs.", "",
             "| verifier | what it covers | median seconds | single-byte changes detected |", "|---|---|---|---|"]
    covered = {"cairn verify_bundle (in-process, whole bundle)": f"{detected['cairn verify_bundle']}/{len(trials)}",
               "model_signing verify key model/ (CLI, model only)":
                   f"{detected['model_signing verify (model/)']}/{len(trials)}"}
    for name, seconds in timings.items():
        scope = "model/ only" if "model only" in name else "whole bundle"
        lines.append(f"| {name} | {scope} | {seconds:.3f} | {covered.get(name, '-')} |")
    named = result["tamper"]["cairn_named_the_file"]
    lines += ["", f"Cairn named the changed file in {named}/{len(trials)} cases.", "",
              "| release step | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in steps.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
