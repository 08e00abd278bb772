"""Start-up cost of the light commands: ``cairn verify``, ``cairn hash`` and ``cairn scan`` against
``model_signing verify``/``model_signing`` on the same small signed file, in one run.

Run from the repository root (not part of the test suite)::

    python -m benchmarks.startup [--repeats 15] [--out benchmarks/results/startup.json]

Each command runs as a fresh process (what a user or a CI step pays), ``--repeats`` times after one
warm-up; wall time comes from ``time.perf_counter`` around ``subprocess.run``. Reported per command:
median, min and max seconds, every sample, and the modules the process imported that are heavy
(torch, dagster, great_expectations, pandas, sklearn: the architecture test asserts there are none).
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEAVY = ("torch", "dagster", "great_expectations", "pandas", "sklearn")


def _timed(command: list[str], repeats: int) -> list[float]:
    subprocess.run(command, capture_output=True, check=False)  # warm the page cache
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, check=False)
        samples.append(time.perf_counter() - started)
        if run.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({run.returncode}): {run.stderr.decode()[-500:]}")
    return samples


def _heavy_modules(args: list[str]) -> list[str]:
    probe = (f"import sys\nfrom integrity.cli.main import main\ncode = main({args!r})\n"
             "print('\\n'.join(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False).stdout
    return sorted({m.split(".")[0] for m in out.split()} & set(HEAVY))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-startup-") as scratch:
        work = Path(scratch)
        weights = work / "model.safetensors"
        header = b'{"w":{"dtype":"U8","shape":[1024],"data_offsets":[0,1024]}}'
        weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(1024))
        cairn = str(BIN / "cairn")
        subprocess.run([cairn, "key", "generate", "--out", str(work / "k")], check=True, capture_output=True)
        subprocess.run([cairn, "sign", str(weights), "--key", str(work / "k.key")], check=True, capture_output=True)
        commands = {
            "cairn verify (key)": [cairn, "verify", str(weights), "--key", str(work / "k.pub")],
            "model_signing verify key": [str(BIN / "model_signing"), "verify", "key", str(weights), "--signature",
                                         str(weights) + ".sig", "--public_key", str(work / "k.pub")],
            "cairn hash": [cairn, "hash", str(weights)],
            "cairn scan": [cairn, "scan", str(weights)],
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
        }
        light = {"cairn verify (key)": ["verify", str(weights), "--key", str(work / "k.pub")],
                 "cairn hash": ["hash", str(weights)], "cairn scan": ["scan", str(weights)]}
        results = []
        for name, command in commands.items():
            samples = _timed(command, options.repeats)
            results.append({"command": name, "median_s": statistics.median(samples), "min_s": min(samples),
                            "max_s": max(samples), "samples_s": samples,
                            "heavy_modules": _heavy_modules(light[name]) if name in light else None})
    report = {"benchmark": "startup", "python": platform.python_version(), "machine": platform.machine(),
              "repeats": options.repeats, "results": results}
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Start-up time of the light commands", "",
             f"Fresh process per run, {options.repeats} runs after a warm-up; Python {report['python']}.", "",
             "| command | median s | min s | max s | heavy modules imported |", "|---|---|---|---|---|"]
    for r in results:
        heavy = "n/a" if r["heavy_modules"] is None else (", ".join(r["heavy_modules"]) or "none")
        lines.append(f"| {r['command']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {heavy} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
