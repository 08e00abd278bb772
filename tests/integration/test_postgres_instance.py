"""The deployment's Dagster instance on a real PostgreSQL server (infra/dagster.yaml).

A gated ingestion run goes into PostgreSQL: the run, its blocking-check results and the
materializations with content-digest data versions are read back through a fresh instance
and straight from the database, so auditors see the same lineage as with the demo's SQLite.
"""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from pipelines.demo import materialize_catalog
from pipelines.resources import DEMO_CATALOG
from pipelines.staging import stage_demo
from tests.support.postgres import running_postgres

REPO = Path(__file__).resolve().parents[2]


def _catalog_with(home: Path, names: tuple[str, ...]) -> Path:
    """The demo catalog cut down to a few sources (the whole demo runs elsewhere)."""
    import yaml

    full = yaml.safe_load(DEMO_CATALOG.read_text())
    kept = {"version": full["version"], "policy": full["policy"],
            "sources": {n: full["sources"][n] for n in names}}
    path = home / "catalog-pg.yaml"
    path.write_text(yaml.safe_dump(kept, sort_keys=False))
    return path


def test_pipeline_runs_and_checks_are_stored_in_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_postgres() as server:
        for name, value in server.env().items():  # what infra/dagster.yaml reads
            monkeypatch.setenv(name, value)
        home = stage_demo(tmp_path / "home")
        (home / "dagster").mkdir(exist_ok=True)
        shutil.copyfile(REPO / "infra" / "dagster.yaml", home / "dagster" / "dagster.yaml")
        catalog = _catalog_with(home, ("breast-cancer", "breast-cancer-mirror"))

        result = materialize_catalog(home, catalog)

        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        attested = instance.get_latest_materialization_event(dg.AssetKey(["breast_cancer", "attested"]))
        assert attested is not None and attested.asset_materialization is not None
        digest = attested.asset_materialization.metadata["sha256"].value
        assert attested.asset_materialization.tags["dagster/data_version"] == f"sha256:{digest}"
        # The tampered mirror fails its blocking check and never reaches "attested".
        assert instance.get_latest_materialization_event(dg.AssetKey(["breast_cancer_mirror", "attested"])) is None
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(["breast_cancer_mirror", "verified"]), "signature_verified"))
        assert record is not None and record.event is not None and record.event.dagster_event is not None
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "differs from what was signed" in str(evaluation.metadata["reason"].value), evaluation.metadata

        # Straight from the database: the run is really there, not in a SQLite file.
        import psycopg2

        connection = psycopg2.connect(host=server.host, port=server.port, user=server.user, dbname=server.database)
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT run_id FROM runs")
            assert (result.run_id,) in cursor.fetchall()
            cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (result.run_id,))
            (events,) = cursor.fetchone()
            assert events > 10
        connection.close()
        assert not list((home / "dagster").glob("**/*.db")), "nothing may fall back to SQLite"
        instance.dispose()
