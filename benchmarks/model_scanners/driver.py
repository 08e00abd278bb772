"""Runs one competitor scanner over a list of files, in-process, inside the scanners' own venv.

Reads ``{"tool": ..., "paths": [...]}`` as JSON on stdin and prints one JSON document: the tool's
version and, per path, ``verdict`` (``flagged`` | ``clean`` | ``error``), a short ``detail`` and
the wall time of the scan call (``time.perf_counter``; imports happen before any timing), and
``pass_seconds``, the wall time of the whole pass over every path.
This file imports nothing from Cairn: it runs with ``.venv-scanners/bin/python``.
"""

import json
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any


def picklescan(path: str) -> tuple[str, str]:
    from picklescan.scanner import scan_directory_path, scan_file_path

    result = scan_directory_path(path) if Path(path).is_dir() else scan_file_path(path)
    if result.infected_files or result.issues_count:
        return "flagged", f"{result.issues_count} dangerous import(s)"
    if result.scan_err:
        return "error", "scan error"
    return "clean", f"{result.suspicious_count} suspicious"


def modelscan(path: str) -> tuple[str, str]:
    from modelscan.modelscan import ModelScan

    report = ModelScan().scan(path)
    issues, errors = report.get("issues") or [], report.get("errors") or []
    if issues:
        first = issues[0]
        return "flagged", f"{len(issues)} issue(s): {first.get('module')}.{first.get('operator')}"
    if errors:
        return "error", str(errors[0].get("description", errors[0]))[:160]
    summary = report.get("summary", {})
    if not summary.get("scanned", {}).get("total_scanned"):
        return "error", "skipped: no supported file (modelscan exit 3)"
    return "clean", ""


def fickling(path: str) -> tuple[str, str]:
    import fickling as fk

    if Path(path).is_dir():
        return "error", "fickling scans files, not folders"
    result = fk.scan_file(path, graceful=True)
    if not result.is_safe:
        return "flagged", f"severity {result.severity.name}"
    if result.errors:
        return "error", str(result.errors[0])[:160]
    return "clean", f"severity {result.severity.name}"


TOOLS = {"picklescan": (picklescan, "picklescan"), "modelscan": (modelscan, "modelscan"),
         "fickling": (fickling, "fickling")}


def main() -> None:
    request = json.load(sys.stdin)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # tools that print must not corrupt the JSON answer
    run, package = TOOLS[request["tool"]]
    __import__(package)  # import cost stays out of the per-file timings
    if package == "modelscan":
        __import__("modelscan.modelscan")
    results: dict[str, Any] = {}
    pass_start = time.perf_counter()
    for path in request["paths"]:
        start = time.perf_counter()
        try:
            verdict, detail = run(path)
        except Exception as exc:  # a crash is an error verdict, never a clean one
            verdict, detail = "error", f"{type(exc).__name__}: {exc}"[:200]
            traceback.print_exc(file=sys.stderr)
        results[path] = {"verdict": verdict, "detail": detail, "seconds": time.perf_counter() - start}
    pass_seconds = time.perf_counter() - pass_start  # the whole pass, for files/s and MB/s
    json.dump({"tool": request["tool"], "version": version(package), "pass_seconds": pass_seconds,
               "results": results}, real_stdout)


if __name__ == "__main__":
    main()
