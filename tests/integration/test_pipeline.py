"""The Dagster pipeline, materialized for real: every gate is a blocking check; a failed gate
leaves its source's later assets unexecuted and the artifact in quarantine with its reason,
while the other sources in the same run still attest."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from integrity.storage import open_store
from pipelines.assets.ingestion import STAGES, build_source_assets
from pipelines.definitions import build_definitions
from pipelines.demo import materialize_catalog, summarize
from pipelines.resources import DEMO_CATALOG, CairnResource
from pipelines.staging import EXPECTED, stage_demo

EXTRA_SOURCES = """
  no-signature:
    kind: dataset
    uri: drops/no-signature
    format: csv
    policy_source: breast-cancer
    license: CC-BY-4.0
    origin: a drop whose publisher forgot the signature
    suite: breast_cancer.json
  typo:
    kind: dataset
    uri: drops/breast-cancer
    format: csv
    licence: CC-BY-4.0
    origin: an entry with a misspelt field
    suite: breast_cancer.json
  gone:
    kind: dataset
    uri: drops/does-not-exist
    format: csv
    policy_source: breast-cancer
    license: CC-BY-4.0
    origin: an unreachable URI
    suite: breast_cancer.json
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dg.ExecuteInProcessResult]:
    home = stage_demo(tmp_path_factory.mktemp("home"))
    unsigned = home / "drops" / "no-signature"
    shutil.copytree(home / "drops" / "breast-cancer", unsigned)
    (unsigned / "model.sig").unlink()
    catalog = home / "catalog.yaml"
    catalog.write_text(DEMO_CATALOG.read_text() + EXTRA_SOURCES)
    result = materialize_catalog(home, catalog)
    assert result.job_def.name == "ingest_sources"  # the named job, not __ephemeral_asset_job__
    return home, catalog, result


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
            for event in [event.event_specific_data.materialization]}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_demo_sources_end_as_expected(demo_run) -> None:
    home, catalog, _ = demo_run
    status = {row["source"]: row["status"] for row in summarize(home, catalog)}
    for source, expected in EXPECTED.items():
        assert status[source] == expected, source
    assert status["no-signature"] == "quarantined"
    assert status["gone"] == "quarantined"
    assert status["typo"] == "quarantined"


def test_good_source_passes_every_gate(demo_run) -> None:
    _, _, result = demo_run
    materialized, checks = _materialized(result), _checks(result)
    for stage, _step, check, _ in STAGES:
        assert f"breast_cancer/{stage}" in materialized
        assert checks[f"breast_cancer/{stage}:{check}"].passed


@pytest.mark.parametrize(
    ("source", "gate", "reason"),
    [
        ("breast_cancer_mirror", "verified", "content differs from what was signed (changed: breast_cancer.csv)"),
        ("digits_unofficial", "verified", "signed by a key the policy does not list"),
        ("breast_cancer_export", "validated", "type_drift(worst area)"),
        ("dicom_with_phi", "validated", "phi:PatientName"),
        ("no_signature", "fetched", "missing signature"),
        ("gone", "fetched", "unreachable URI"),
        ("typo", "fetched", "unknown field(s) 'licence'"),
    ],
)
def test_failed_gate_blocks_downstream_and_quarantines(demo_run, source: str, gate: str, reason: str) -> None:
    home, catalog, result = demo_run
    names = [stage for stage, *_ in STAGES]
    check_name = dict((stage, check) for stage, _s, check, _ in STAGES)[gate] if source != "typo" \
        else "catalog_entry_valid"
    evaluation = _checks(result)[f"{source}/{gate}:{check_name}"]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert reason in evaluation.metadata["reason"].value
    materialized = _materialized(result)
    assert f"{source}/{gate}" in materialized  # the gate's own metadata records the rejection
    for later in names[names.index(gate) + 1:]:
        assert f"{source}/{later}" not in materialized, f"{later} ran after a failed {gate}"
    # The quarantine entry carries the reason; the trusted copy was never made.
    ingestion = Ingestion.open(load_catalog(catalog, root=home, strict=False), home=home)
    name = source.replace("_", "-")
    entries = [q for q in ingestion.store.list_quarantine() if q.source == name]
    assert entries and reason in entries[-1].reason
    assert not (home / "attested" / source).exists()


def test_attested_source_has_records_and_trusted_copy(demo_run) -> None:
    home, catalog, _ = demo_run
    ingestion = Ingestion.open(load_catalog(catalog, root=home, strict=False), home=home)
    source = ingestion.catalog.source("digits")
    summary = ingestion.attested_record(source)
    assert summary is not None
    store = open_store(str(home / "store"))
    assert store.exists(summary["store_digest"])
    ingestion_record = store.get_record("ingestions", summary["record"].rsplit("/", 1)[-1].removesuffix(".json"))
    predicate = ingestion_record["predicate"]
    assert predicate["verification"] == summary["verification"]
    assert predicate["validation"] == summary["validation"]
    assert predicate["catalog"]["digest"].startswith("sha256:")
    assert (ingestion.attested_dir(source) / "digits" / "labels.npy").is_file()


def test_second_run_is_idempotent(demo_run) -> None:
    home, catalog, _ = demo_run
    before = {r["source"]: (r["status"], r["sha256"]) for r in summarize(home, catalog)}
    trusted_before = open_store(str(home / "store")).list_objects()
    materialize_catalog(home, catalog)
    after = {r["source"]: (r["status"], r["sha256"]) for r in summarize(home, catalog)}
    assert after == before
    assert open_store(str(home / "store")).list_objects() == trusted_before


def test_definitions_load_with_jobs_schedule_and_sensors(demo_run) -> None:
    _, catalog, _ = demo_run
    defs = build_definitions(load_catalog(catalog, strict=False))
    repo = defs.get_repository_def()
    assert {"ingest_sources", "nightly_reverify"} <= {job.name for job in repo.get_all_jobs()}
    assert repo.get_schedule_def("nightly_reverify_schedule").cron_schedule == "0 2 * * *"
    assert {"vendor_drop_sensor", "explain_failed_runs"} <= {s.name for s in repo.sensor_defs}
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["breast_cancer", "attested"]) in graph.get_all_asset_keys()


def test_nightly_reverify_detects_changed_and_resigned_sources(demo_run, tmp_path: Path) -> None:
    home, catalog_path, _ = demo_run
    catalog = load_catalog(catalog_path, root=home, strict=False)
    defs = build_definitions(catalog, CairnResource(home=str(home), catalog=str(catalog_path)))
    job = defs.resolve_job_def("nightly_reverify")
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    checks = _checks(result)
    assert checks["breast_cancer/attested:upstream_unchanged"].passed
    # Upstream changes one byte (and the publisher did not re-sign): an ERROR.
    csv = home / "drops" / "digits" / "README.txt"
    original = csv.read_bytes()
    try:
        csv.write_bytes(original + b" ")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        failed = _checks(result)["digits/attested:upstream_unchanged"]
        assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
        assert "no longer verifies" in failed.metadata["reason"].value
    finally:
        csv.write_bytes(original)
    # The publisher re-signs the same bytes: a WARN that names the new signature.
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.signing import sign_artifact

    drop = home / "drops" / "breast-cancer"
    saved = (drop / "model.sig").read_bytes()
    try:
        sign_artifact(drop, KeySigner.from_file(home / "publishers" / "uci-publisher.key"))
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        warned = _checks(result)["breast_cancer/attested:upstream_unchanged"]
        assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
        assert "re-signed upstream" in warned.metadata["reason"].value
    finally:
        (drop / "model.sig").write_bytes(saved)


def test_drop_sensor_requests_runs_for_new_objects(demo_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, catalog_path, _ = demo_run
    catalog = load_catalog(catalog_path, root=home, strict=False)
    resource = CairnResource(home=str(home), catalog=str(catalog_path))
    defs = build_definitions(catalog, resource)
    sensor = defs.get_sensor_def("vendor_drop_sensor")
    with dg.build_sensor_context(resources={"cairn": resource}) as context:
        first = sensor.evaluate_tick(context)
    sources = {r.tags["cairn/source"] for r in first.run_requests}
    assert {"breast-cancer", "digits", "efficientnet-lite0"} <= sources
    keys = {k.to_user_string() for r in first.run_requests if r.tags["cairn/source"] == "digits"
            for k in r.asset_selection}
    assert keys == {f"digits/{stage}" for stage, *_ in STAGES} | {"digits/screened"}  # the screen re-runs too
    model_keys = {k.to_user_string() for r in first.run_requests if r.tags["cairn/source"] == "efficientnet-lite0"
                  for k in r.asset_selection}
    assert "efficientnet_lite0/backdoor_scanned" in model_keys
    # Nothing new: skip. A new file in one drop: a run for that source only.
    with dg.build_sensor_context(resources={"cairn": resource}, cursor=first.cursor) as context:
        quiet = sensor.evaluate_tick(context)
    assert not quiet.run_requests and "no new objects" in quiet.skip_message
    (home / "drops" / "digits" / "NOTES.txt").write_text("new upstream file\n")
    (home / "drops" / "stray.bin").write_bytes(b"unowned")
    try:
        with dg.build_sensor_context(resources={"cairn": resource}, cursor=quiet.cursor) as context:
            tick = sensor.evaluate_tick(context)
        assert [r.tags["cairn/source"] for r in tick.run_requests] == ["digits"]
    finally:
        (home / "drops" / "digits" / "NOTES.txt").unlink()
        (home / "drops" / "stray.bin").unlink()


def test_single_asset_chain_materializes_with_plain_dagster_api(tmp_path: Path) -> None:
    """`dagster.materialize` on one source's chain, the way a user would call it."""
    home = stage_demo(tmp_path / "home")
    catalog = load_catalog(DEMO_CATALOG, root=home)
    result = dg.materialize(
        build_source_assets(catalog.source("digits-unofficial")),
        resources={"cairn": CairnResource(home=str(home))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert _materialized(result) == {"digits_unofficial/fetched", "digits_unofficial/verified"}
    state = json.loads((home / "work" / "digits_unofficial" / "state.json").read_text())
    assert not state["steps"]["verify"]["passed"]


def test_failed_run_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run-failure sensor writes which gate failed and the quarantine reason to <home>/alerts."""
    from pipelines.sensors import explain_failed_runs

    home = stage_demo(tmp_path / "home")
    monkeypatch.setenv("CAIRN_HOME", str(home))
    instance = dg.DagsterInstance.ephemeral()
    catalog = load_catalog(DEMO_CATALOG, root=home)
    result = dg.materialize(
        build_source_assets(catalog.source("breast-cancer-mirror")),
        resources={"cairn": CairnResource(home=str(home))},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_run_failure_event()
    context = dg.build_run_status_sensor_context(
        sensor_name="explain_failed_runs", dagster_event=failure, dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    explain_failed_runs(context)
    alert = json.loads((home / "alerts" / f"{result.run_id}.json").read_text())
    reasons = " ".join(r.get("reason", "") + r.get("error", "") for r in alert["reasons"])
    assert "breast_cancer_mirror/verified:signature_verified" in json.dumps(alert)
    assert "content differs from what was signed" in reasons
    # a gate that quarantined as designed, told apart from a broken run in the runs list's tags
    assert alert["outcome"] == "quarantined", alert
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["cairn/outcome"] == "quarantined"
    assert "breast_cancer_mirror/verified:signature_verified" in tags["cairn/quarantined-by"]


def test_a_run_that_broke_is_not_called_a_quarantine() -> None:
    from pipelines.sensors import run_outcome

    assert run_outcome([{"step": "a", "error": "KeyError: 'x'"}]) == "broken"
    assert run_outcome([{"step": "a", "error": "KeyError: 'x'"}, {"check": "a:b", "reason": "r"}]) == "broken"
    assert run_outcome([]) == "broken"


def test_data_versions_are_content_digests(demo_run) -> None:
    _, _, result = demo_run
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == "digits/attested":
            version = materialization.tags["dagster/data_version"]
            assert version == f"sha256:{materialization.metadata['sha256'].value}"
            return
    raise AssertionError("digits/attested was not materialized")


def test_model_is_converted_to_safetensors_before_anyone_uses_it(demo_run) -> None:
    home, catalog, _ = demo_run
    ingestion = Ingestion.open(load_catalog(catalog, root=home, strict=False), home=home)
    source = ingestion.catalog.source("efficientnet-lite0")
    summary = ingestion.attested_record(source)
    assert summary["usable_digest"] != summary["digest"]
    files = sorted(p.name for p in (ingestion.attested_dir(source) / "efficientnet-lite0").iterdir())
    assert files == ["LICENSE.txt", "efficientnet-lite0-57934424.safetensors"]
    (conversion,) = ingestion.state(source)["validate"].details["conversions"]
    record = ingestion.store.get_record("conversions", conversion["record"].rsplit("/", 1)[-1].removesuffix(".json"))
    assert record["predicate"]["source"]["digest"]["sha256"] == conversion["from_sha256"]
    assert record["subject"][0]["digest"]["sha256"] == conversion["to_sha256"]
    assert conversion["tensors"] == 296
