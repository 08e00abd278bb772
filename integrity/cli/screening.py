"""``cairn screen``: the poisoning screen without Dagster, on a catalog source or on a bare dataset.

* ``cairn screen --source NAME``: what the pipeline's ``screened`` / ``backdoor_scanned`` assets do,
  on the attested copy of a catalog source (the screened copy, the record and the quarantine are
  written as in the pipeline). The DVC stage ``screen`` calls this.
* ``cairn screen DATA``: a dataset file or folder outside any catalog (reviews, benchmarks); prints
  the verdict, the reasons and every flagged sample's index (its position in the dataset's sample
  order, 0-based) with its scores, in the schema ``docs/schemas/screen-report.schema.json``.
  Nothing is written.

Exit 0 passed, 1 quarantined, 2 usage or input error (an unreadable dataset, a model the
model-file gate cannot clear, a pixel range that is not declared, too few samples) or an internal
error; with ``--json`` every error is a JSON object too (``"verdict": "error"``, same schema).
"""

import argparse
import hashlib
from pathlib import Path
from typing import Any

from integrity.cli.common import AddCommand, add_location_options, emit, error_facts
from integrity.errors import EXIT_OK, EXIT_REJECTED, ArtifactReadError, CairnError, UsageError

SCREEN_SCHEMA = "https://cairn.dev/screen/v1"


def _foundation(path: str | None) -> tuple[Any, dict[str, Any] | None]:
    """The foundation model, after the model-file gate cleared every file of it (fail closed)."""
    if not path:
        return None, None
    from integrity.scans.modelgate import scan_path
    from integrity.scans.poisoning.features import FoundationModel
    from integrity.trust.hashing import hash_artifact

    report = scan_path(path)
    if not report.safe:
        reasons = "; ".join(f.describe() for f in report.findings[:3]) or "not positively identified"
        raise ArtifactReadError(f"the model-file gate refused the model: {reasons}", artifact=path)
    return FoundationModel.from_path(path), {"path": str(path), "digest": f"sha256:{hash_artifact(path).root_digest}"}


def _flagged(result: Any, names: tuple[str, ...], columns: list[str] | None) -> list[dict[str, Any]]:
    """Every flagged sample: index, label, score, and the reason where a rule gives one (extreme values)."""
    import numpy as np

    extreme = set(result.extremes.flagged_rows.tolist()) if result.extremes is not None else set()
    flagged = []
    for i in np.flatnonzero(result.flagged):
        entry: dict[str, Any] = {"index": int(i), "label": names[int(result.labels[i])],
                                 "score": round(float(result.scores[i]), 4)}
        if int(i) in extreme:
            entry["reason"] = result.extremes.describe(int(i), columns)
        flagged.append(entry)
    return flagged


def screen_error(args: argparse.Namespace, error: BaseException) -> dict[str, Any]:
    """``cairn screen --json``'s error form (the screen report schema's ``"verdict": "error"``)."""
    kind, artifact, message, advice = error_facts(args, error)
    return {"schema": SCREEN_SCHEMA, "artifact": artifact, "passed": False, "verdict": "error",
            "error": {"kind": kind, "type": type(error).__name__, "message": message, "artifact": artifact,
                      "advice": advice}}


def screen_file(args: argparse.Namespace) -> int:
    from integrity.scans.images import parse_range, read_files
    from integrity.scans.poisoning import scan_dataset
    from integrity.scans.poisoning.policy import ScanPolicy
    from integrity.scans.samples import check_screenable, load_samples

    where = Path(args.data)
    files = read_files(where)
    labels = None
    if args.labels:
        label_path = Path(args.labels)
        try:
            labels = (label_path.name, label_path.read_bytes())
        except OSError as exc:
            raise ArtifactReadError(f"cannot read the labels: {exc.strerror or exc}", artifact=label_path) from exc
    samples = load_samples(files, where=where, kind=args.kind, labels=labels, label_column=args.label_column,
                           pixel_range=parse_range(args.range))
    check_screenable(samples, where=where)
    model, model_info = _foundation(args.model) if samples.kind == "image" else (None, None)
    if args.model and samples.kind != "image":
        raise UsageError("--model applies to image datasets (tables are screened on their own features)")
    policy = ScanPolicy(**({"flag_threshold": args.flag_threshold} if args.flag_threshold is not None else {}),
                        **({"max_flagged_fraction": args.max_flagged} if args.max_flagged is not None else {}))
    columns = samples.details.get("columns") if samples.kind == "tabular" else None
    try:
        result = scan_dataset(samples.x, samples.labels, foundation=model, policy=policy, device=args.device,
                              columns=columns)
    except CairnError as error:  # the scan names no dataset: this one
        if error.artifact is None:
            error.artifact = str(where)
            error.args = (error.summary(),)
        raise
    names = samples.class_names
    summary = result.summary()
    flagged = _flagged(result, names, columns)
    reason = result.verdict.reason
    if samples.kind == "image" and model is None:
        reason += " (no --model: scored on the images' own pixels only)"
    data: dict[str, Any] = {
        "schema": SCREEN_SCHEMA, "artifact": str(where), "kind": samples.kind, "passed": result.verdict.passed,
        "verdict": "passed" if result.verdict.passed else "quarantined", "reason": reason,
        "samples": len(samples), "flagged_count": len(flagged), "classes": list(names),
        "backdoor_classes": [names[c] for c in result.split_classes], "model": model_info,
        "policy": summary["policy"], "read": {**samples.details, "files": len(samples.details.get("files") or [])},
        "per_class": {names[int(c)]: v for c, v in summary["per_class"].items()}, "flagged": flagged,
        "scores": [round(float(s), 4) for s in result.scores] if args.all_scores else None,
        "device": result.device, "seconds": round(result.seconds, 3),
    }
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:16]
    lines = [f"{'PASSED' if result.verdict.passed else 'QUARANTINED'} {where} ({samples.kind}, {len(samples)} samples, "
             f"content sha256:{digest}...): {reason}"]
    lines += [f"  flagged #{f['index']} label {f['label']} score {f['score']}"
              + (f": {f['reason']}" if f.get("reason") else "") for f in flagged[:args.show]]
    if len(flagged) > args.show:
        lines.append(f"  ... and {len(flagged) - args.show} more (--json lists every one)")
    emit(args, data, "\n".join(lines))
    return EXIT_OK if result.verdict.passed else EXIT_REJECTED


def screen_source(args: argparse.Namespace) -> int:
    from integrity.cli.pipeline import _ingestion
    from integrity.intake.scans import mandatory_scan, probe_dataset, screened_sources
    from integrity.intake.screening import ScreenInputs, scan_model, screen_dataset

    ingestion = _ingestion(args)
    datasets, model = screened_sources(ingestion.catalog)
    results = []
    for name in args.source:
        source = ingestion.catalog.source(name)
        rule = mandatory_scan(source)
        if rule is None:
            raise UsageError(f"no poisoning scan is registered for {name} (kind {source.kind}, scan_profile "
                             f"{source.scan_profile}, format {source.format}): nothing to screen",
                             advice="See `cairn catalog check`; text screening is not available yet.")
        if not args.json:
            print(f"screening {name} ({rule.stage}) ...", flush=True)
        if source.kind == "model":
            probe = probe_dataset(source, datasets)
            inputs = [(probe.key, ScreenInputs.of(probe))] if probe is not None else []
            outcome = scan_model(ingestion.home, ingestion.store, source.key, datasets=inputs, device=args.device)
        else:
            inputs_of = ScreenInputs.of(source)
            model_key = model.key if model is not None and inputs_of.kind == "image" else None
            outcome = screen_dataset(ingestion.home, ingestion.store, source.key, model_key=model_key,
                                     inputs=inputs_of, device=args.device)
        results.append({"source": name, "stage": rule.stage, "passed": outcome.passed, "reason": outcome.reason,
                        "record": outcome.record_key, "quarantine_id": outcome.quarantine_id,
                        "output": outcome.output, "flagged": outcome.summary.get("flagged")})
    text = "\n".join(f"{r['source']} {r['stage']}: {'passed' if r['passed'] else 'QUARANTINED'}: {r['reason']}"
                     for r in results)
    emit(args, {"results": results}, text)
    return EXIT_OK if all(r["passed"] for r in results) else EXIT_REJECTED


def cmd_screen(args: argparse.Namespace) -> int:
    if bool(args.data) == bool(args.source):
        raise UsageError("name a dataset file or folder, or --source NAME (a catalog source), not both")
    return screen_source(args) if args.source else screen_file(args)


def register(add: AddCommand) -> None:
    p = add("screen", cmd_screen, "poisoning screen of a catalog source or a bare dataset "
                                  "(exit 0 passed, 1 quarantined, 2 error)")
    p.add_argument("data", nargs="?", help="a dataset file or folder outside any catalog")
    p.add_argument("--source", action="append", help="catalog source to screen (its attested copy; repeatable)")
    p.add_argument("--kind", choices=["image", "tabular", "text"], help="dataset kind (default: from the files)")
    p.add_argument("--model", help="image foundation model (weights file or folder) to embed the images with")
    p.add_argument("--labels", help="labels file for images stored without them (.npy, or one label per line)")
    p.add_argument("--label-column", help="a table's label column")
    p.add_argument("--range", help="pixel range LOW:HIGH the images are stored in (default: implied by the dtype)")
    p.add_argument("--flag-threshold", type=float, help="flag samples scoring at least this (default 3.5)")
    p.add_argument("--max-flagged", type=float, help="quarantine above this flagged fraction (default 0.02)")
    p.add_argument("--all-scores", action="store_true", help="with --json: every sample's score, in sample order")
    p.add_argument("--show", type=int, default=20, help="flagged samples listed in the text output (default 20)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(json_error=screen_error)
    add_location_options(p, catalog=True)
