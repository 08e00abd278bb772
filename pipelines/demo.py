"""The demo run: materialize every catalog source through Dagster into the project-local instance.

Runs are recorded in ``<home>/dagster`` (SQLite), so ``dagster dev`` pointed at the same
``DAGSTER_HOME`` shows them, with every gate's check result and quarantine reason.
"""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from integrity.errors import EXIT_OK, EXIT_REJECTED
from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from integrity.settings import current
from pipelines.instance import dagster_home
from pipelines.progress import progress_run_config
from pipelines.resources import DEMO_CATALOG, CairnResource


def materialize_catalog(home: Path, catalog: Path = DEMO_CATALOG, *, progress: bool = False
                        ) -> dg.ExecuteInProcessResult:
    """One run of the named job ``ingest_sources`` over every source; failed gates skip only their own
    source's later steps."""
    from pipelines.definitions import INGEST_JOB, build_definitions

    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    sources = load_catalog(catalog, root=home, strict=False)
    defs = build_definitions(sources, CairnResource(home=str(home), catalog=str(catalog)), specs=[])
    return defs.resolve_job_def(INGEST_JOB).execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={"cairn/trigger": "demo"},
        # Progress lines (or silence); the summary table says what happened, the UI has the event log.
        run_config=progress_run_config(progress),
    )


def materialize_releases(home: Path, catalog: Path, *, specs: Sequence[Path] | None = None,
                         progress: bool = False) -> dg.ExecuteInProcessResult:
    """One run of the named job ``release_models`` (the ingestion assets are upstream, already materialized)."""
    from pipelines.definitions import RELEASE_JOB, build_definitions

    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    sources = load_catalog(catalog, root=home, strict=False)
    defs = build_definitions(sources, CairnResource(home=str(home), catalog=str(catalog)), specs=specs)
    return defs.resolve_job_def(RELEASE_JOB).execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={"cairn/trigger": "demo", "cairn/job": "release"},
        run_config=progress_run_config(progress),
    )


def summarize(home: Path, catalog: Path = DEMO_CATALOG) -> list[dict[str, object]]:
    """Where each source ended, read back from the step states the run left."""
    ingestion = Ingestion.open(load_catalog(catalog, root=home, strict=False), home=home)
    rows: list[dict[str, object]] = []
    for name, error in ingestion.catalog.invalid.items():
        rows.append({"source": name, "kind": "?", "status": "quarantined", "gate": "catalog", "sha256": None,
                     "reason": error.summary(), "quarantine_id": None})
    for source in ingestion.catalog:
        state = ingestion.state(source)
        last = next((state[s] for s in ("attest", "validate", "verify", "fetch") if s in state), None)
        attested = last is not None and last.step == "attest" and last.passed
        failed = next((o for o in state.values() if not o.passed), None)
        shown = failed or last
        rows.append({
            "source": source.name,
            "kind": source.kind,
            "status": "attested" if attested else "quarantined" if failed else "not run",
            "gate": failed.step if failed else (last.step if last else "-"),
            "sha256": last.digest if last else None,
            "reason": shown.reason if shown else "",
            "quarantine_id": failed.quarantine_id if failed else None,
        })
        _apply_screening(home, source.key, rows[-1])
    return rows


def _apply_screening(home: Path, key: str, row: dict[str, object]) -> None:
    """An attested source that failed its poisoning scan ends quarantined at the screening gate."""
    path = home / "screened" / f"{key}.json"
    if row["status"] != "attested" or not path.is_file():
        return
    screening = json.loads(path.read_text())
    if not screening.get("passed", False):
        row.update(status="quarantined", gate="screen", reason=screening.get("reason", "poisoning scan failed"),
                   quarantine_id=screening.get("quarantine_id"))
    else:  # attested and screened: the filtered copy is what fine-tuning reads
        row.update(gate="screen", reason=f"screened: {screening.get('reason', 'passed')}")


def run_pipeline_demo(home: Path, expected: Mapping[str, str], *, json_output: bool = False) -> int:
    from pipelines.demo_project import demo_catalog, demo_release_specs

    catalog = demo_catalog(home)
    progress = not json_output

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    say(f"cairn demo: ingesting the demo project's sources in {home} (Dagster job ingest_sources)")
    result = materialize_catalog(home, catalog, progress=progress)
    rows = summarize(home, catalog)
    unexpected = [r for r in rows if expected.get(str(r["source"])) not in (None, r["status"])]
    say("cairn demo: fine-tuning, gating and releasing (Dagster job release_models)")
    releases = release_demo(home, catalog, specs=demo_release_specs(home), progress=progress)
    say("cairn demo: publishing each release to the store and pulling it back verified")
    unexpected += [r for r in releases if r["status"] != "released"]
    unexpected += [r for r in distribute_demo(home, releases) if r.get("distributed") is False]
    if json_output:
        print(json.dumps({"home": str(home), "run_id": result.run_id, "results": rows, "releases": releases,
                          "unexpected": unexpected}, indent=2))
        return EXIT_REJECTED if unexpected else EXIT_OK
    print(f"Cairn demo: Dagster run {result.run_id} (home {home})\n")
    print("| source | kind | status | gate | sha256 | reason |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        digest = str(row["sha256"] or "-")[:16]
        reason = str(row["reason"]).replace(str(home) + "/", "").replace("|", "/")
        if len(reason) > 160:
            reason = reason[:157] + "..."
        print(f"| {row['source']} | {row['kind']} | {row['status']} | {row['gate']} | {digest} | {reason} |")
    attested = sum(1 for r in rows if r["status"] == "attested")
    print(f"\n{attested} attested, {len(rows) - attested} quarantined. Records: {home / 'store'}; "
          f"attested copies: {home / 'attested'}.")
    print_releases(releases)
    cairn = Path(sys.executable).parent / "cairn"
    print(f"The demo is a project in {home} (cairn.yaml, catalog.yaml, suites/, release-specs/). Open it in the "
          f"Dagster UI (records, Data Docs and audits are linked from it):\n  cd {home} && {cairn} ui")
    if unexpected:
        names = [str(r.get("source") or r.get("model")) for r in unexpected]
        print(f"\nUNEXPECTED: {', '.join(names)} did not end as expected")
    return EXIT_REJECTED if unexpected else EXIT_OK


def release_demo(home: Path, catalog: Path = DEMO_CATALOG, *, specs: Sequence[Path] | None = None,
                 progress: bool = False) -> list[dict[str, object]]:
    """Fine-tune, gate and release every release spec through Dagster; one summary row per model."""
    from pipelines.assets.release import load_release_assets, release_asset_key

    loaded, _ = load_release_assets(specs)
    result = materialize_releases(home, catalog, specs=specs, progress=progress)
    rows: list[dict[str, object]] = []
    for spec in loaded:
        row: dict[str, object] = {"model": spec.model, "status": "not released", "run_id": result.run_id}
        for stage in ("fine_tuned", "evaluated", "released"):
            events = result.asset_materializations_for_node(f"{release_asset_key(spec, stage).to_python_identifier()}")
            metadata = {k: getattr(v, "value", v) for e in events for k, v in e.metadata.items()}
            row[stage] = metadata
        gate = row["evaluated"]
        released = row["released"]
        if isinstance(released, dict) and released.get("release"):
            row.update(status="released", release=str(released["release"]), version=released.get("version"),
                       signer=released.get("signer_identity"))
        failure = _release_failure(result)
        row["reason"] = (gate.get("reason") if isinstance(gate, dict) and gate.get("passed") is False else
                         failure if row["status"] != "released" else "")
        rows.append(row)
    return rows


def _release_failure(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.user_failure_data
            if error is not None and error.description:
                return error.description.splitlines()[0]
            if event.step_failure_data.error is not None:
                return event.step_failure_data.error.message.strip().splitlines()[-1]
    return "release steps did not run (an upstream gate failed)"


def distribute_demo(home: Path, releases: list[dict[str, object]]) -> list[dict[str, object]]:
    """What a release manager does next: publish each release to the store, pull it back verified.

    The store is the demo's own (``<home>/store``; ``$CAIRN_STORE`` for S3). The pull lands in
    ``<home>/pulled/<model>-<version>`` only after every signature, digest and revocation checks out.
    """
    import shutil
    import uuid

    from integrity.distribution import PullState, StoreSource, publish, pull
    from integrity.errors import CairnError
    from integrity.ledger.transparency import open_ledger
    from integrity.release.revocation import RevocationList
    from integrity.storage import open_store
    from integrity.trust.policy import load_policy

    store = open_store(current(home=home).store)
    ledger = open_ledger(store, home=home)
    for row in releases:
        if row["status"] != "released":
            continue
        model, version = str(row["model"]), str(row.get("version"))
        dest = home / "pulled" / f"{model}-{version}"
        try:
            policy = load_policy(home / "release-policy.yaml")
            revocations = RevocationList.load(store, policy.source(model).signers)
            published = publish(store, Path(str(row["release"])), policy, ledger=ledger, revocations=revocations)
            # A second demo run pulls again: into a fresh folder, swapped in only after it verified.
            fresh = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
            pull(StoreSource(store), model, version, fresh, policy, state=PullState(home / "pull-state.json"),
                 ledger=ledger, progress=False)
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(dest, old)
                os.rename(fresh, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(fresh, dest)
            row.update(distributed=True, published=published.publication_key, pulled=str(dest))
        except CairnError as error:
            row.update(distributed=False, reason=error.summary())
    return releases


def print_releases(releases: list[dict[str, object]]) -> None:
    for row in releases:
        if row["status"] == "released":
            print(f"\nReleased {row['model']} {row.get('version')}: {row['release']} (signed by {row.get('signer')}).")
            print(f"  Audit it offline: .venv/bin/cairn audit {row['release']}")
            if row.get("distributed"):
                print(f"  Published to the store ({row['published']}) and pulled back, verified, into {row['pulled']}")
            elif row.get("distributed") is False:
                print(f"  NOT distributed: {row.get('reason')}")
        else:
            print(f"\nNOT released: {row['model']}: {row.get('reason')}")
