"""The code location: one set of gated assets per catalog source, plus jobs, schedule and sensors."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from integrity.intake.catalog import Catalog
from pipelines.assets.ingestion import build_invalid_entry_asset, build_source_assets
from pipelines.assets.release import RELEASE_GROUP, load_release_assets, release_asset_key
from pipelines.assets.screening import build_screening_assets
from pipelines.checks import build_reverify_check
from pipelines.progress import LOGGER, cairn_progress
from pipelines.resources import CairnResource, load_default_catalog
from pipelines.schedules import build_nightly_reverify, build_source_schedules
from pipelines.sensors import build_drop_sensor, build_revocation_sensor, explain_failed_runs

INGEST_JOB = "ingest_sources"
RELEASE_JOB = "release_models"


def build_definitions(catalog: Catalog, resource: CairnResource | None = None,
                      specs: Sequence[Path] | None = None) -> dg.Definitions:
    """Everything Dagster serves for one catalog (tests build it for their own catalogs).

    Assets are grouped by source (one group per catalog source, its stages in order) and the release
    assets in one group; the named jobs are what the demo, the drop sensor and users run.
    """
    sources = list(catalog)
    ingest_job = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.groups(*(s.key for s in sources), "invalid_catalog_entries"),
        description="Fetch, verify, validate and attest catalog sources (the drop sensor runs it per source).",
        tags={"cairn/job": "ingest"},
    )
    reverify_job, reverify_schedules = build_nightly_reverify(sources)
    source_jobs, source_schedules = build_source_schedules(sources, catalog)
    release_specs, release_assets = load_release_assets(specs)
    release_job = dg.define_asset_job(
        RELEASE_JOB,
        selection=dg.AssetSelection.groups(RELEASE_GROUP),
        description="Fine-tune from attested inputs, run the release gate, and write the signed release bundle.",
        tags={"cairn/job": "release"},
    )
    return dg.Definitions(
        assets=[asset for source in sources for asset in build_source_assets(source)]
        + [build_invalid_entry_asset(name, error) for name, error in catalog.invalid.items()]
        + build_screening_assets(catalog)
        + release_assets,
        asset_checks=[build_reverify_check(source) for source in sources],
        jobs=[ingest_job, reverify_job, release_job, *source_jobs],
        schedules=[*reverify_schedules, *source_schedules],
        sensors=[build_drop_sensor(sources, ingest_job),
                 build_revocation_sensor([release_asset_key(spec, "released") for spec in release_specs]),
                 explain_failed_runs],
        resources={"cairn": resource or CairnResource()},
        loggers={LOGGER: cairn_progress, "console": dg.colored_console_logger},
    )


defs = build_definitions(load_default_catalog())
