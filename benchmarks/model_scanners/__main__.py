"""Cairn's model-file gate against picklescan, modelscan and fickling on the same corpus.

Run from the repository root (not part of the test suite)::

    .venv/bin/python -m benchmarks.model_scanners [--workdir DIR] [--out benchmarks/results/model_scanners.json]

It builds the corpus (``corpus.py``: every bypass family of issue 4 plus benign weights;
``corpus_benign.py``: issue 28's benign set of every dtype and container, and its attacks), creates
the competitors' own tool environment (``.venv-scanners``, pinned versions, so ``.venv`` stays
``pip check`` clean), scans every file with every tool in-process (one process per tool, imports
before timing) and writes JSON and a markdown table. Exit 0 when Cairn misses no malicious file
and flags no benign one.
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.model_scanners.corpus import Sample, build_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNERS = {"picklescan": "picklescan==1.0.5", "modelscan": "modelscan==0.8.8", "fickling": "fickling==0.1.12"}
# fickling 0.1.12 imports typing_extensions without declaring it; modelscan reads Keras .h5 through h5py.
SCANNER_EXTRAS = ["typing_extensions>=4.12", "h5py>=3.10,<4"]
TOOLS = ["cairn", *SCANNERS]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_scanner_env(venv: Path) -> Path:
    """Create the competitors' tool environment once (like ``.venv-dvc``); returns its python."""
    python = venv / "bin" / "python"
    marker = venv / ".cairn-scanners"
    wanted = " ".join([*SCANNERS.values(), *SCANNER_EXTRAS])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"setting up {venv} with {wanted}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", *SCANNERS.values(), *SCANNER_EXTRAS], check=True)
    subprocess.run([*pip, "check"], check=True)
    marker.write_text(wanted)
    return python


def run_cairn(paths: list[str]) -> dict[str, Any]:
    from integrity.scans.modelgate import scan_path

    results = {}
    pass_start = time.perf_counter()
    for path in paths:
        start = time.perf_counter()
        try:
            report = scan_path(path)
            verdict = "clean" if report.safe else "flagged"
            detail = report.findings[0].describe()[:200] if report.findings else report.reason
        except Exception as exc:  # would be an error verdict; the gate itself never raises on content
            verdict, detail = "error", f"{type(exc).__name__}: {exc}"[:200]
        results[path] = {"verdict": verdict, "detail": detail, "seconds": time.perf_counter() - start}
    pass_seconds = time.perf_counter() - pass_start
    from importlib.metadata import version

    return {"tool": "cairn", "version": version("cairn"), "pass_seconds": pass_seconds, "results": results}


def run_competitor(python: Path, tool: str, paths: list[str]) -> dict[str, Any]:
    driver = Path(__file__).with_name("driver.py")
    with tempfile.TemporaryDirectory() as scratch:
        run = subprocess.run([str(python), str(driver)], input=json.dumps({"tool": tool, "paths": paths}),
                             capture_output=True, text=True, cwd=scratch, timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"{tool} driver failed: {run.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def sample_bytes(path: Path) -> int:
    """Bytes a tool has to read for one sample (a folder: all its files)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def summarise(samples: list[Sample], root: Path, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    total_bytes = sum(sample_bytes(root / s.name) for s in samples)
    for tool, run in runs.items():
        caught, missed, errors, false_pos, benign_err = [], [], [], [], []
        times = []
        for sample in samples:
            result = run["results"][str(root / sample.name)]
            times.append(result["seconds"])
            entry = {"file": sample.name, "family": sample.family, "note": sample.note, "detail": result["detail"]}
            if sample.malicious:
                {"flagged": caught, "clean": missed, "error": errors}[result["verdict"]].append(entry)
            elif result["verdict"] == "flagged":
                false_pos.append(entry)
            elif result["verdict"] == "error":
                benign_err.append(entry)
        pass_seconds = run.get("pass_seconds") or sum(times)
        tools[tool] = {
            "version": run["version"], "caught": len(caught), "missed": len(missed), "errors": len(errors),
            "false_positives": len(false_pos), "benign_errors": len(benign_err),
            "pass_seconds": pass_seconds, "bytes_scanned": total_bytes,
            "files_per_second": len(samples) / pass_seconds, "mb_per_second": total_bytes / 1e6 / pass_seconds,
            "ms_per_file_median": 1000 * statistics.median(times), "ms_per_file_mean": 1000 * statistics.mean(times),
            "missed_files": missed, "error_files": errors, "false_positive_files": false_pos,
            "benign_error_files": benign_err,
        }
    families: dict[str, dict[str, str]] = {}
    for family in sorted({s.family for s in samples if s.malicious}):
        members = [s for s in samples if s.malicious and s.family == family]
        families[family] = {tool: f"{sum(runs[tool]['results'][str(root / s.name)]['verdict'] == 'flagged' for s in members)}/{len(members)}"  # noqa: E501
                            for tool in runs}
    benign_kinds: dict[str, dict[str, str]] = {}
    for kind in sorted({s.family for s in samples if not s.malicious}):
        members = [s for s in samples if not s.malicious and s.family == kind]
        benign_kinds[kind] = {tool: f"{sum(runs[tool]['results'][str(root / s.name)]['verdict'] == 'flagged' for s in members)}/{len(members)}"  # noqa: E501
                              for tool in runs}
    return {"tools": tools, "families": families, "benign_kinds": benign_kinds}


def markdown(summary: dict[str, Any], samples: list[Sample], meta: dict[str, Any]) -> str:
    malicious = sum(s.malicious for s in samples)
    benign = len(samples) - malicious
    lines = [f"# Model-file scanners: {malicious} malicious and {benign} benign files", "",
             f"Run {meta['date']} on {meta['machine']}; Python {meta['python']}; "
             f"{meta.get('megabytes', 0):.1f} MB in all. Files/s and MB/s: every file, one whole pass per tool.", "",
             "| tool | version | malicious refused | missed | errors (malicious) | benign refused | errors (benign) "
             "| files/s | MB/s | ms/file (median) | ms/file (mean) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool, t in summary["tools"].items():
        lines.append(f"| {tool} | {t['version']} | {t['caught']}/{malicious} | {t['missed']} | {t['errors']} | "
                     f"{t['false_positives']}/{benign} | {t['benign_errors']} | {t['files_per_second']:.1f} | "
                     f"{t['mb_per_second']:.1f} | {t['ms_per_file_median']:.1f} | {t['ms_per_file_mean']:.1f} |")
    lines += ["", "Caught per bypass family:", "", "| family | " + " | ".join(summary["tools"]) + " |",
              "|---|" + "---|" * len(summary["tools"])]
    for family, row in summary["families"].items():
        lines.append(f"| {family} | " + " | ".join(row[t] for t in summary["tools"]) + " |")
    lines += ["", "Benign files refused per kind:", "", "| kind | " + " | ".join(summary["tools"]) + " |",
              "|---|" + "---|" * len(summary["tools"])]
    for kind, row in summary.get("benign_kinds", {}).items():
        lines.append(f"| {kind} | " + " | ".join(row[t] for t in summary["tools"]) + " |")
    for tool, t in summary["tools"].items():
        for title, key in (("missed (reported clean)", "missed_files"), ("errors on malicious files", "error_files"),
                           ("false positives", "false_positive_files"),
                           ("errors on benign files", "benign_error_files")):
            if t[key]:
                lines += ["", f"### {tool}: {title} ({len(t[key])})", "", "| file | family | what it is | tool said |",
                          "|---|---|---|---|"]
                lines += [f"| `{e['file']}` | {e['family']} | {e['note']} | {e['detail'].replace('|', '/')[:100]} |"
                          for e in t[key]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cairn-model-scanners")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "model_scanners.json")
    parser.add_argument("--scanners-venv", type=Path, default=REPO_ROOT / ".venv-scanners")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--core-only", action="store_true",
                        help="leave out issue 28's benign set and attacks (corpus_benign.py)")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    corpus = args.workdir / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    log(f"building the corpus in {corpus}")
    samples = build_corpus(corpus, extended=not args.core_only)
    paths = [str(corpus / s.name) for s in samples]
    runs: dict[str, dict[str, Any]] = {}
    if "cairn" in tools:
        log("scanning with cairn")
        runs["cairn"] = run_cairn(paths)
    competitors = [t for t in tools if t in SCANNERS]
    if competitors:
        python = ensure_scanner_env(args.scanners_venv)
        for tool in competitors:
            log(f"scanning with {tool}")
            runs[tool] = run_competitor(python, tool, paths)
    summary = summarise(samples, corpus, runs)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{platform.machine()} {platform.system()}",
            "python": platform.python_version(), "files": len(samples),
            "malicious": sum(s.malicious for s in samples),
            "megabytes": sum(sample_bytes(corpus / s.name) for s in samples) / 1e6}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "samples": [s.__dict__ for s in samples], **summary,
                                    "results": runs}, indent=2))
    table = markdown(summary, samples, meta)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    ok = True
    if "cairn" in summary["tools"]:
        cairn = summary["tools"]["cairn"]
        for label, passed in (("Cairn misses no malicious file", cairn["missed"] + cairn["errors"] == 0),
                              ("Cairn flags no benign weights file", cairn["false_positives"] == 0)):
            print(f"{'PASS' if passed else 'FAIL'}: {label}")
            ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
