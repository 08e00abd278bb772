"""Screening in the pipeline: the demo's correctly signed but poisoned digits drop is stopped by the scan.

Real parts throughout: the demo's signed vendor drops, the ingestion gates, the model-file gate's
safetensors conversion of the EfficientNet-Lite0 weights, Dagster materializing the screening
assets with their blocking checks, and the artifact store's records and quarantine.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from pipelines.assets.screening import build_screening_assets
from pipelines.resources import DEMO_CATALOG, CairnResource
from pipelines.staging import stage_demo

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOURCES = ("digits", "digits-vendor-b", "efficientnet-lite0")




@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ingestion, dg.ExecuteInProcessResult]:
    home = stage_demo(tmp_path_factory.mktemp("home"))
    catalog = load_catalog(DEMO_CATALOG, root=home, strict=False)
    ingestion = Ingestion.open(catalog, home=home)
    for name in SOURCES:
        outcomes = ingestion.run(catalog.source(name))
        assert outcomes[-1].passed, f"{name}: {outcomes[-1].reason}"  # signed correctly: every ingestion gate passes
    wanted = [s for s in catalog if s.name in SOURCES]
    result = dg.materialize(build_screening_assets(wanted), resources={"cairn": CairnResource(home=str(home))},
                            raise_on_error=False)
    return home, ingestion, result


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_the_poisoned_drop_is_blocked_and_the_clean_one_passes(screened) -> None:
    home, _, result = screened
    checks = _checks(result)
    assert checks["efficientnet_lite0/backdoor_scanned:no_backdoor_found"].passed
    assert checks["digits/screened:poisoning_within_policy"].passed
    blocked = checks["digits_vendor_b/screened:poisoning_within_policy"]
    assert not blocked.passed
    assert blocked.severity == dg.AssetCheckSeverity.ERROR
    summary = json.loads((home / "screened" / "digits_vendor_b.json").read_text())
    assert summary["backdoor_classes"] == ["0"] and "backdoor" in summary["reason"]
    assert summary["output"] is None  # nothing of a blocked drop enters the trusted store


def test_flagged_poisons_are_the_injected_ones(screened) -> None:
    from integrity.scans.poisoning.attacks import inject

    home, _, _ = screened
    images = np.load(home / "attested" / "digits" / "digits" / "images.npy")
    labels = np.load(home / "attested" / "digits" / "digits" / "labels.npy")
    truth = inject(images / 16.0, labels, "badnets", 0.04, seed=7, target=0).poison
    summary = json.loads((home / "screened" / "digits_vendor_b.json").read_text())
    entry = next(e for e in screened[1].store.list_quarantine() if e.id == summary["quarantine_id"])
    assert entry.source == "digits_vendor_b"
    record = screened[1].store.get_record("screenings", summary["record"].rsplit("/", 1)[-1].removesuffix(".json"))
    flagged = {f["id"] for f in record["predicate"]["flagged"]}
    poisons = set(np.flatnonzero(truth).tolist())
    assert len(poisons & flagged) / len(poisons) > 0.95
    assert len(flagged - poisons) / len(labels) < 0.03


def test_the_clean_dataset_is_filtered_recorded_and_stored(screened) -> None:
    home, ingestion, _ = screened
    summary = json.loads((home / "screened" / "digits.json").read_text())
    assert summary["passed"] and summary["flagged"] < 0.02 * summary["samples"]
    out = Path(summary["output"])
    kept = np.load(out / "sample_ids.npy")
    assert len(kept) == summary["samples"] - summary["flagged"]
    assert np.array_equal(np.load(out / "labels.npy"),
                          np.load(home / "attested" / "digits" / "digits" / "labels.npy")[kept])
    assert ingestion.store.exists(summary["output_store_digest"])
    for plot in summary["plots"]:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = json.loads((home / "screened" / "efficientnet_lite0.json").read_text())
    assert Path(model["plots"][0]).is_file() and model["score"] < 2.0


def test_asset_metadata_shows_plots_and_figures(screened) -> None:
    _, _, result = screened
    events = {e.asset_key.to_user_string(): e for e in
              (x.event_specific_data.materialization for x in result.get_asset_materialization_events())}
    metadata = events["digits_vendor_b/screened"].metadata
    assert "data:image/png;base64," in metadata["plots"].value
    assert metadata["status"].value == "blocked"
    assert "| class | samples | flagged |" in metadata["per_class"].value
