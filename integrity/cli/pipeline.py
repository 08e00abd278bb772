"""``cairn ingest``, ``store``, ``ledger``, ``catalog``, ``scan``, ``audit``, ``release``, ``bench``:
the pipeline's steps without Dagster."""

import argparse
import sys
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.cli.common import AddCommand, add_json_option, add_location_options, add_renamed_option, emit
from integrity.errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, CairnError, UsageError
from integrity.intake.schedule import Schedule


def _ingestion(args: argparse.Namespace) -> Any:
    from integrity.intake.catalog import load_catalog
    from integrity.intake.ingest import Ingestion
    from integrity.settings import current

    settings = current(home=args.home, catalog=args.catalog, store=args.store)
    catalog = load_catalog(settings.catalog, root=settings.home)
    return Ingestion.open(catalog, home=settings.home, store=settings.store)


def cmd_ingest(args: argparse.Namespace) -> int:
    """Run ingestion steps without Dagster (what the DVC stages call)."""
    ingestion = _ingestion(args)
    names = args.source or [s.name for s in ingestion.catalog]
    results: list[dict[str, Any]] = []
    worst = EXIT_OK
    for name in names:
        source = ingestion.catalog.source(name)
        if args.step == "reverify":
            check = ingestion.reverify(source)
            results.append({"source": name, "step": "reverify", "passed": check.passed, "reason": check.reason,
                            "severity": check.severity, "digest": check.upstream_digest})
            worst = max(worst, EXIT_OK if check.passed else EXIT_REJECTED)
            continue
        outcomes = ingestion.run(source) if args.step == "run" else [getattr(ingestion, args.step)(source)]
        for outcome in outcomes:
            results.append(outcome.as_dict())
            worst = max(worst, EXIT_OK if outcome.passed else EXIT_REJECTED)
    lines = [
        f"{r['source']} {r['step']}: {'passed' if r['passed'] else 'REJECTED'}: {r['reason']}" for r in results
    ]
    emit(args, {"catalog": ingestion.catalog.describe(), "results": results}, "\n".join(lines))
    return worst


def cmd_ledger(args: argparse.Namespace) -> int:
    """Check the transparency ledger's history, or prove one entry is in it."""
    from integrity.ledger import Ledger
    from integrity.storage import open_store

    store = open_store(args.store)
    root = store.local_root
    if isinstance(root, Path) and not root.is_dir():
        raise UsageError("no store at this path (nothing to verify)", artifact=root,
                         advice="Pass --store with the store the ledger is in (a path or s3:// URL).")
    from integrity.settings import current

    public_key = current(ledger_public_key=args.ledger_key).raw("ledger_public_key")
    if not public_key:
        raise UsageError("the ledger check needs the ledger's public key",
                         advice="Pass --ledger-key PEM, or set $CAIRN_LEDGER_PUBLIC_KEY.")
    public = safeio.read_regular_file(public_key, what="ledger public key", max_bytes=1 << 16, error=UsageError)
    del public  # read once here so a FIFO or a folder is refused before anything else
    ledger = Ledger(store, public_key=Path(public_key))
    if getattr(args, "records", False):
        from integrity.ledger.transparency import verify_ledger

        verify_ledger(ledger, records=True)
    if args.ledger_command == "prove":
        proof = ledger.prove_inclusion(args.index)
        emit(args, proof, f"entry {args.index} is included in the signed tree of size {proof['size']} "
                           f"(root {proof['root']})")
        return EXIT_OK
    from integrity.ledger import Checkpoint, LedgerError, default_checkpoint
    from integrity.settings import current

    settings = current(ledger_checkpoint=args.checkpoint)
    configured = settings.ledger_checkpoint
    checkpoint = Checkpoint(configured) if configured else default_checkpoint(ledger.store.url, settings.home)
    seen = checkpoint.load()
    report = ledger.verify(seen)
    head = report.latest_head
    if report.size and head is None:
        raise LedgerError(f"none of the ledger's {report.size} entries is covered by a signed tree head",
                          artifact=ledger.store.url)
    if head is not None and not args.no_checkpoint_update:
        checkpoint.save(head)
    if seen is None:
        limits = ("first verification against this ledger (no checkpoint): entries removed together with their "
                  "heads before now cannot be ruled out")
    else:
        limits = (f"extends the checkpoint of size {seen.size}; entries removed after size {report.size} "
                  "would only show against a newer checkpoint or a witness")
    data = {"size": report.size, "root": report.root, "heads_checked": report.heads_checked,
            "latest_head": head.as_dict() if head else None, "checkpoint": str(checkpoint.path),
            "checkpoint_size": seen.size if seen else None, "cannot_rule_out": limits}
    data["unsigned_tail"] = report.unsigned_tail
    tail = (f"\nWARNING: {report.unsigned_tail} entries after the newest signed head are not covered by a "
            "signature (an interrupted append, or written around Cairn): nothing trusts them until the next "
            "signed head" if report.unsigned_tail else "")
    emit(args, data, f"ledger OK: {report.signed_size} entries under signed heads, root {head.root if head else '-'}, "
                      f"{report.heads_checked} signed tree heads consistent{tail}\nCANNOT RULE OUT: {limits}\n"
                      f"checkpoint: {checkpoint.path}")
    return EXIT_OK


def cmd_store_verify(args: argparse.Namespace) -> int:
    """Re-hash every object of the store; set aside (under corrupt/) what does not match its address."""
    from integrity.storage import open_store
    from integrity.storage.check import verify_store

    store = open_store(args.store)
    root = store.local_root
    if isinstance(root, Path) and not root.is_dir():
        raise UsageError("no store at this path", artifact=root)
    report = verify_store(store, quarantine=not args.no_quarantine)
    lines = [f"store {'OK' if report.ok else 'CORRUPT'}: {report.checked} objects, {report.bytes} bytes re-hashed"]
    for item in report.problems:
        where = f" -> set aside at {item['moved_to']}" if "moved_to" in item else ""
        lines.append(f"  {item['object']}: {item['reason']}{where}")
    if not report.ok:
        lines.append("re-ingest or re-publish the affected sources: the next write of the same bytes heals the address")
    emit(args, report.as_dict(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_REJECTED


def cmd_catalog_check(args: argparse.Namespace) -> int:
    from integrity.intake.catalog import load_catalog
    from integrity.scans.expectations import load_suite
    from integrity.trust.policy import load_policy

    catalog = load_catalog(args.catalog, root=Path(args.home).resolve() if args.home else None)
    # Configuration mistakes are found here, before any vendor's artifact is judged by them.
    policy_checked = catalog.policy_path.is_file()
    if policy_checked:
        policy = load_policy(catalog.policy_path)
        missing = sorted({s.policy_source for s in catalog} - set(policy.sources))
        if missing:
            raise UsageError(f"the trust policy has no entry for {', '.join(missing)} (every source needs one)",
                             artifact=catalog.policy_path)
    for source in catalog:
        if source.suite is not None:
            load_suite(source.suite)
    reverify = _reverify_schedule(args)
    data = {**catalog.describe(), "policy": str(catalog.policy_path), "policy_checked": policy_checked,
            "sources": {s.name: s.as_dict() for s in catalog},
            "reverify_schedule": {"cron": reverify.cron, "timezone": reverify.timezone} if reverify else None}
    state = "checked" if policy_checked else "NOT FOUND, not checked"
    lines = [f"catalog {catalog.path}: version {catalog.version}, {catalog.digest}, policy {catalog.policy_path} "
             f"({state})"]
    lines += [f"  {s.name}: {s.kind} {s.format} from {catalog.resolve(s.uri)}"
              + (f"; scheduled {s.schedule.describe()}" if s.schedule else "") for s in catalog]
    lines.append(f"re-verification of every attested source: {reverify.describe() if reverify else 'never (none)'}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def _reverify_schedule(args: argparse.Namespace) -> Schedule | None:
    """The project's re-verification schedule, checked (a bad one is a usage error here, not in Dagster)."""
    from integrity.intake.schedule import parse_schedule_setting
    from integrity.settings import current

    return parse_schedule_setting(current(home=args.home).reverify_schedule,
                                  where="reverify_schedule ($CAIRN_REVERIFY_SCHEDULE or cairn.yaml)")


def cmd_scan(args: argparse.Namespace) -> int:
    """Exit 0 only when every file is a recognised format with nothing unsafe or unaccounted for."""
    from integrity.scans.modelgate import scan_path

    try:
        report = scan_path(args.path)
    except CairnError:
        raise
    except Exception as error:  # fail closed: a scan that breaks is a refusal, never a pass
        data = {"artifact": args.path, "safe": False, "result": "unsafe",
                "reason": f"the scan failed: {type(error).__name__}: {error}", "findings": []}
        emit(args, data, f"UNSAFE {args.path}: {data['reason']}")
        return EXIT_REJECTED
    data = {**report.as_dict(), "result": "clean" if report.safe else "unsafe"}
    lines = [f"{'CLEAN' if report.safe else 'UNSAFE'} {report.artifact}: {report.files_scanned} file(s), "
             f"allowlist v{report.allowlist_version}"]
    lines += [f"  {where}: {kind}" for where, kind in sorted(report.formats.items())]
    for finding in report.findings:
        extra = f" (callable {finding.callable})" if finding.callable else ""
        lines.append(f"  refused {finding.describe()}{extra}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK if report.safe else EXIT_REJECTED


def cmd_audit(args: argparse.Namespace) -> int:
    """Re-verify a release bundle offline, print its lineage; exit 1 naming every file that fails."""
    from integrity.distribution.audit import audit_release, render_html, render_text
    from integrity.trust.signing import atomic_write

    if args.revoked:  # incident response: every published release that consumed a revoked input
        from integrity.distribution.audit import render_exposure, revoked_exposure

        if args.release or args.html:
            raise UsageError("--revoked lists the whole store; it takes no RELEASE and no --html")
        exposures = revoked_exposure(policy=args.release_policy, key=args.key, model=args.model, store=args.store,
                                     home=Path(args.home).resolve() if args.home else None)
        emit(args, {"exposures": [e.as_dict() for e in exposures]}, render_exposure(exposures))
        return EXIT_REJECTED if any(e.releases for e in exposures) else EXIT_OK
    if not args.release:
        raise UsageError("name the release directory to audit (or pass --revoked)")
    report = audit_release(args.release, policy=args.release_policy, key=args.key, store=args.store,
                           home=Path(args.home).resolve() if args.home else None, trusted_root=args.trusted_root)
    if args.html:
        atomic_write(args.html, render_html(report).encode())
    emit(args, report.as_dict(), render_text(report) + (f"\nHTML report: {args.html}" if args.html else ""))
    if not report.ok:
        for finding in report.audit.failures:
            print(f"cairn audit: {finding.file}: {finding.detail}", file=sys.stderr)
    return report.exit_code


def cmd_release(args: argparse.Namespace) -> int:
    """Fine-tune, gate and release one spec without Dagster (the release assets run the same steps)."""
    from integrity.release.spec import load_release_spec
    from integrity.release.steps import release_model
    from integrity.settings import current

    specs = current(release_spec=args.spec).release_specs
    if len(specs) != 1:
        raise UsageError(f"cairn release takes one release spec; {len(specs)} are configured",
                         advice="Pass --spec SPEC.yaml (or set $CAIRN_RELEASE_SPEC to one file).")
    gate, result = release_model(_ingestion(args), load_release_spec(specs[0]), log=print)
    data = {"gate": gate.as_gate(), "release": str(result.path) if result else None,
            "version": result.version if result else None}
    text = (f"released {result.path} (gate: {gate.reason})" if result else f"NOT released: {gate.reason}")
    emit(args, data, text)
    return EXIT_OK if result else EXIT_REJECTED


def cmd_bench_poisoning(args: argparse.Namespace) -> int:
    """Poisoning benchmark (repository checkout only: the benchmarks package is not installed)."""
    checkout = str(Path(__file__).resolve().parents[2])
    if (Path(checkout) / "benchmarks" / "poisoning").is_dir() and checkout not in sys.path:
        sys.path.insert(0, checkout)
    import importlib
    import importlib.util

    try:  # imported by name: the benchmarks are not part of the typed, installed library
        bench = importlib.import_module("benchmarks.poisoning.bench")
        scan_timing = importlib.import_module("benchmarks.poisoning.scan_timing")
    except ImportError as exc:
        raise UsageError(f"the benchmarks are not importable here ({exc}); run from the repository root") from exc
    if args.models:
        models = importlib.import_module("benchmarks.poisoning.models")
        report = models.run(args.models, Path(args.out), device=args.device or "cpu", regions=args.model_regions)
        print(Path(args.out).with_suffix(".md").read_text())
        print(f"wrote {args.out} ({report['seconds']} s)")
        return EXIT_OK
    if args.time_scan:
        return int(scan_timing.main(["--data", args.data if args.data != "digits" else "fashion_mnist",
                                     "--out", args.out]))
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else bench.METHODS
    needs = {"art": any(m.startswith("art_") for m in methods), "cleanlab": "cleanlab" in methods}
    for module, needed in needs.items():
        if needed and importlib.util.find_spec(module) is None:
            raise UsageError(f"{module} is not installed: run `.venv/bin/pip install -e '.[bench]'` "
                             "(ART and cleanlab are the benchmark's peers)")
    attacks = [a.strip() for a in args.attack.split(",")]
    rates = [float(r) for r in str(args.rate).split(",")]
    report = bench.run(args.data, attacks, rates, args.seeds, Path(args.out), device=args.device,
                       train_size=args.train_size, methods=methods, retrain=not args.no_retrain)
    print(bench.markdown(report["summary"]))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')} ({report['seconds']} s)")
    return EXIT_OK


def register_intake(add: AddCommand) -> None:
    """Register this group's commands with the parser's ``add``."""
    p = add("ingest", cmd_ingest, "run ingestion steps for catalog sources without Dagster (exit 1 if any rejected)")
    p.add_argument("step", choices=["fetch", "verify", "validate", "attest", "run", "reverify"])
    p.add_argument("--source", action="append", help="catalog source (repeatable; default: all)")
    add_location_options(p, catalog=True)

    p = add("store", lambda a: EXIT_USAGE, "check the artifact store")
    store_sub = p.add_subparsers(dest="store_command", required=True)
    c = store_sub.add_parser("verify", help="re-hash every object; report and set aside what fails")
    c.set_defaults(handler=cmd_store_verify)
    add_location_options(c, home=False)
    c.add_argument("--no-quarantine", action="store_true", help="report only; leave corrupted objects in place")
    add_json_option(c)

    p = add("ledger", lambda a: EXIT_USAGE, "check the tamper-evident transparency ledger")
    led_sub = p.add_subparsers(dest="ledger_command", required=True)
    for name, help_text in (("verify", "check every entry and signed tree head"),
                            ("prove", "print an inclusion proof for one entry")):
        c = led_sub.add_parser(name, help=help_text)
        c.set_defaults(handler=cmd_ledger)
        add_location_options(c, home=False)
        c.add_argument("--ledger-key", help="the ledger's pinned public key (PEM; default $CAIRN_LEDGER_PUBLIC_KEY "
                                            "or the project file's ledger_public_key)")
        add_renamed_option(c, "--public-key", "--ledger-key")
        add_json_option(c)
        if name == "prove":
            c.add_argument("index", type=int)
        else:
            c.add_argument("--records", action="store_true", help="also check that logged records are unchanged")
            c.add_argument("--checkpoint", default=None,
                           help="the newest signed head this client saw (default $CAIRN_LEDGER_CHECKPOINT or "
                                "HOME/ledger-checkpoints/<store>.json); a shorter or rewritten ledger is refused")
            c.add_argument("--no-checkpoint-update", action="store_true",
                           help="check against the checkpoint but do not move it forward")


def register_release(add: AddCommand) -> None:
    """Register this group's commands with the parser's ``add``."""
    p = add("scan", cmd_scan, "model-file gate: refuse weights that can run code (exit 0 clean, 1 unsafe, 2 error)")
    p.add_argument("path", help="model file or directory")

    p = add("audit", cmd_audit, "re-verify a release bundle offline and print its lineage (exit 1 if anything fails)")
    p.add_argument("release", nargs="?", help="the release directory (<model>-<version>)")
    p.add_argument("--revoked", action="store_true",
                   help="instead: list every published release that consumed a revoked input (exit 1 if any)")
    p.add_argument("--model", help="with --revoked and --key: the model the key signs")
    p.add_argument("--release-policy", help="release policy YAML (default HOME/release-policy.yaml)")
    add_renamed_option(p, "--policy", "--release-policy")
    p.add_argument("--key", help="instead of a policy: the release identity's pinned public key (PEM)")
    add_location_options(p, store_help="artifact store with the signed revocations (default: the store the release "
                                       "was pulled from, else $CAIRN_STORE, the project file, HOME/store)")
    p.add_argument("--trusted-root", help="Sigstore trusted root for keyless releases")
    p.add_argument("--html", help="also write a self-contained HTML report here")

    p = add("release", cmd_release, "fine-tune from attested inputs, gate, and write the signed release (no Dagster)")
    p.add_argument("--spec", help="release spec YAML (default $CAIRN_RELEASE_SPEC, else the packaged demo spec)")
    add_location_options(p, catalog=True)

    p = add("catalog", lambda a: EXIT_USAGE, "inspect source catalogs")
    cat_sub = p.add_subparsers(dest="catalog_command", required=True)
    c = cat_sub.add_parser("check", help="validate a catalog file and list its sources")
    c.set_defaults(handler=cmd_catalog_check)
    c.add_argument("catalog")
    c.add_argument("--home", help="Cairn home that relative URIs resolve against")
    add_json_option(c)

    p = add("bench", lambda a: EXIT_USAGE, "benchmarks (from a repository checkout)")
    bench_sub = p.add_subparsers(dest="bench_command", required=True)
    c = bench_sub.add_parser("poisoning", help="poisoning scans vs ART and cleanlab on injected attacks")
    c.set_defaults(handler=cmd_bench_poisoning)
    c.add_argument("--data", default="digits", help="digits, breast_cancer, fashion_mnist or FILE.npz (X, y)")
    c.add_argument("--attack", default="badnets", help="label_flip, label_flip_pair, badnets, badnets_single, "
                   "blended, clean_label, clean_label_quantised (comma-separated for several)")
    c.add_argument("--rate", default="0.05", help="poisoned fraction of the training set (comma-separated)")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--out", default="benchmarks/results/poisoning.json")
    c.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    c.add_argument("--train-size", type=int, help="subsample the training split (e.g. Fashion-MNIST on CPU)")
    c.add_argument("--methods", help="comma-separated subset of the methods")
    c.add_argument("--no-retrain", action="store_true",
                   help="detection figures only: skip retraining the victim on what each method keeps")
    c.add_argument("--time-scan", action="store_true",
                   help="time the full-dataset scan on CPU and CUDA instead (Fashion-MNIST or --data FILE.npz)")
    c.add_argument("--models", type=int, default=0,
                   help="model-level benchmark instead: train N clean and N backdoored backbones and scan them")
    c.add_argument("--model-regions", action="store_true",
                   help="with --models: also scan each backbone's trunk as a headless encoder (the pipeline's mode)")
    add_json_option(c)
