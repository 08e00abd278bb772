"""The demo run: materialize every catalog source through Dagster into the project-local instance.

Runs are recorded in ``<home>/dagster`` (SQLite), so ``dagster dev`` pointed at the same
``DAGSTER_HOME`` shows them, with every gate's check result and quarantine reason.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from integrity.catalog import load_catalog
from integrity.errors import EXIT_OK, EXIT_REJECTED
from integrity.ingest import Ingestion
from pipelines.resources import DEMO_CATALOG, CairnResource

DAGSTER_YAML = """# Written by `cairn demo`: a project-local Dagster instance (SQLite), no telemetry.
telemetry:
  enabled: false
"""


def dagster_home(home: Path) -> Path:
    folder = home / "dagster"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return folder


def materialize_catalog(home: Path, catalog: Path = DEMO_CATALOG, *, log_level: str = "CRITICAL"
                        ) -> dg.ExecuteInProcessResult:
    """One Dagster run over every source; failed gates skip only their own source's later steps."""
    from pipelines.assets.ingestion import build_invalid_entry_asset, build_source_assets

    os.environ["CAIRN_HOME"] = str(home)
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    sources = load_catalog(catalog, root=home, strict=False)
    assets = [asset for source in sources for asset in build_source_assets(source)]
    assets += [build_invalid_entry_asset(name, error) for name, error in sources.invalid.items()]
    from pipelines.assets.screening import build_screening_assets

    assets += build_screening_assets(sources)
    return dg.materialize(
        assets,
        instance=instance,
        resources={"cairn": CairnResource(home=str(home), catalog=str(catalog))},
        raise_on_error=False,
        tags={"cairn/trigger": "demo"},
        # The summary table says what happened; the full event log is in the Dagster UI.
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
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


def run_pipeline_demo(home: Path, expected: Mapping[str, str], *, json_output: bool = False) -> int:
    result = materialize_catalog(home)
    rows = summarize(home)
    unexpected = [r for r in rows if expected.get(str(r["source"])) not in (None, r["status"])]
    if json_output:
        print(json.dumps({"home": str(home), "run_id": result.run_id, "results": rows,
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
    print("Open the lineage in the Dagster UI:\n"
          f"  DAGSTER_HOME={home / 'dagster'} CAIRN_HOME={home} .venv/bin/dagster dev -w workspace.yaml")
    if unexpected:
        print(f"\nUNEXPECTED: {', '.join(str(r['source']) for r in unexpected)} did not end as expected")
    return EXIT_REJECTED if unexpected else EXIT_OK
