"""``python -m benchmarks.robustness``: fuzzing, S3 fault injection and kill -9 trials in one run.

Writes ``robustness.json`` and ``robustness.md`` (to ``--out``, default ``benchmarks/robustness/results``):
executions per fuzz target with crashes and hangs found (0 open is the bar), every fault-injection
trial's outcome (0 partial, 0 lost), and every kill -9 trial (all consistent). The default is the
long run; ``--quick`` is a few minutes.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.robustness.faults import ingest_kill_trials, kill_trials, new_world, s3_trials
from benchmarks.robustness.fuzz import run_atheris, run_mutation
from benchmarks.robustness.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fuzz-seconds", type=float, default=60.0, help="per target and engine (default 60)")
    parser.add_argument("--engines", default="atheris,mutation", help="atheris, mutation, both or none")
    parser.add_argument("--targets", default="", help="comma-separated fuzz targets (default: all)")
    parser.add_argument("--s3-trials", default="all", help="'all' combinations of operation x fault x request, or N")
    parser.add_argument("--kill-trials", type=int, default=100, help="kill -9 during publish")
    parser.add_argument("--ingest-kill-trials", type=int, default=30,
                        help="kill -9 during ingest (fetch, verify, validate, attest), ~25 s each")
    parser.add_argument("--quick", action="store_true", help="10 s per target, 40 S3 trials, 20 kill trials")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.fuzz_seconds, args.s3_trials, args.kill_trials, args.ingest_kill_trials = 10.0, "40", 20, 3
    names = [t for t in args.targets.split(",") if t] or list(TARGETS)
    found = Path(tempfile.mkdtemp(prefix="cairn-robustness-found-"))
    started = time.monotonic()
    fuzz = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip() and e.strip() != "none"]:
        if engine not in ("atheris", "mutation"):
            parser.error(f"unknown engine {engine!r} (atheris, mutation or none)")
        for name in names:
            if engine == "atheris":
                try:
                    import atheris  # noqa: F401
                except ImportError:
                    print("atheris is not installed: pip install -e '.[bench]'", file=sys.stderr)
                    break
                result = run_atheris(name, args.fuzz_seconds, out=found)
            else:
                result = run_mutation(name, args.fuzz_seconds, out=found)
            fuzz.append(result.as_dict())
            print(f"fuzz {engine} {name}: {result.executions} executions, {len(result.crashes)} crashes, "
                  f"{len(result.hangs)} hangs", flush=True)
    world = new_world()
    try:
        limit = None if args.s3_trials == "all" else int(args.s3_trials)
        s3 = [t.as_dict() for t in s3_trials(world, limit=limit)]
        print(f"s3 faults: {len(s3)} trials", flush=True)
        kills = [t.as_dict() for t in kill_trials(world, args.kill_trials)]
        if args.ingest_kill_trials:
            kills += [t.as_dict() for t in ingest_kill_trials(world, args.ingest_kill_trials)]
        print(f"kill -9: {len(kills)} trials", flush=True)
    finally:
        world.close()

    def bad(trials: list[dict]) -> int:
        return sum(1 for t in trials if t["partial"] or not t["healed"] or not t["verified"] or t["problems"])

    summary = {
        "fuzz_executions": sum(int(f["executions"]) for f in fuzz),
        "fuzz_crashes_open": sum(len(f["crashes"]) for f in fuzz),
        "fuzz_hangs_open": sum(len(f["hangs"]) for f in fuzz),
        "s3_trials": len(s3), "s3_injected": sum(1 for t in s3 if t["injected"]),
        "s3_partial": sum(1 for t in s3 if t["partial"]), "s3_not_healed": sum(1 for t in s3 if not t["healed"]),
        "s3_inconsistent": bad(s3), "kill_trials": len(kills), "kill_killed": sum(1 for t in kills if t["injected"]),
        "kill_inconsistent": bad(kills), "seconds": round(time.monotonic() - started, 1),
        "saved_inputs": str(found),
    }
    report = {"machine": platform.platform(), "python": platform.python_version(), "summary": summary,
              "fuzz": fuzz, "s3_faults": s3, "kill9": kills}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps(report, indent=2))
    (args.out / "robustness.md").write_text(markdown(report))
    print(markdown(report).split("\n## S3")[0])
    return 0 if not (summary["fuzz_crashes_open"] or summary["fuzz_hangs_open"] or summary["s3_inconsistent"]
                     or summary["kill_inconsistent"]) else 1


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = ["# Robustness: fuzzing, S3 faults, kill -9", "", f"{report['machine']}, Python {report['python']}, "
             f"{s['seconds']} s.", "", "| what | figure |", "|---|---|",
             f"| fuzz executions | {s['fuzz_executions']} |", f"| crashes open | {s['fuzz_crashes_open']} |",
             f"| hangs open | {s['fuzz_hangs_open']} |",
             f"| S3 fault trials (fault injected) | {s['s3_trials']} ({s['s3_injected']}) |",
             f"| ... partial state visible | {s['s3_partial']} |",
             f"| ... not healed by a rerun | {s['s3_not_healed']} |",
             f"| ... any problem | {s['s3_inconsistent']} |",
             f"| kill -9 trials (killed mid-way) | {s['kill_trials']} ({s['kill_killed']}) |",
             f"| ... inconsistent afterwards | {s['kill_inconsistent']} |", "",
             "## Fuzz targets", "", "| target | engine | seconds | executions | coverage | crashes | hangs | "
             "slowest input ms |", "|---|---|---|---|---|---|---|---|"]
    for f in report["fuzz"]:
        lines.append(f"| {f['target']} | {f['engine']} | {f['seconds']} | {f['executions']} | {f['coverage'] or '-'} "
                     f"| {len(f['crashes'])} | {len(f['hangs'])} | {round(f['slowest_ms']) or '-'} |")
    lines += ["", "## S3 faults (one request broken per trial)", "", "| operation | fault | outcome | trials | "
              "partial | not healed |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for t in report["s3_faults"]:
        groups.setdefault((t["operation"], t["fault"], t["outcome"]), []).append(t)
    for (operation, fault, outcome), items in sorted(groups.items()):
        lines.append(f"| {operation} | {fault} | {outcome} | {len(items)} | {sum(t['partial'] for t in items)} | "
                     f"{sum(not t['healed'] for t in items)} |")
    lines += ["", "## kill -9", "", "| operation | trials | killed mid-way | inconsistent |", "|---|---|---|---|"]
    for operation in sorted({t["operation"] for t in report["kill9"]}):
        items = [t for t in report["kill9"] if t["operation"] == operation]
        lines.append(f"| {operation} | {len(items)} | {sum(t['injected'] for t in items)} | "
                     f"{sum(bool(t['problems']) for t in items)} |")
    lines.append("")
    problems = [t for t in report["s3_faults"] + report["kill9"] if t["problems"]]
    if problems:
        lines += ["## Problems", ""] + [f"- {t['operation']} {t['fault']} @{t['at']}: {t['problems']}"
                                        for t in problems]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
