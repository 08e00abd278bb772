"""Schedules from the catalog and the project file, no Python needed.

* ``reverify_schedule`` (``cairn.yaml`` or ``$CAIRN_REVERIFY_SCHEDULE``; default 02:00 UTC, ``none`` for
  no schedule) re-verifies every attested source against its publisher signature;
* a source's ``schedule:`` in the catalog ingests and screens that source on its own (``ingest_<source>``).
"""

import logging
from typing import Any

import dagster as dg

from integrity.intake.catalog import Catalog, Source
from pipelines.checks import reverify_check_keys

log = logging.getLogger(__name__)


def build_nightly_reverify(sources: list[Source]) -> tuple[Any, list[dg.ScheduleDefinition]]:
    """The re-verify job and, unless the project says ``none``, its schedule (a bad value: no schedule, logged)."""
    from integrity.errors import UsageError
    from integrity.intake.schedule import parse_schedule_setting
    from integrity.settings import current

    job = dg.define_asset_job(
        "nightly_reverify",
        selection=dg.AssetSelection.checks(*reverify_check_keys(sources)),
        description="Re-fetch every attested source and check it against its publisher signature and attested digest.",
        tags={"cairn/job": "reverify"},
    )
    try:
        schedule = parse_schedule_setting(current().reverify_schedule, where="reverify_schedule")
    except UsageError as error:  # `cairn catalog check` reports it; the code location still loads
        log.error("no re-verify schedule: %s", error.summary())
        return job, []
    if schedule is None:  # `none`
        return job, []
    return job, [dg.ScheduleDefinition(
        name="nightly_reverify_schedule",
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{schedule.describe()}: detect sources changed or re-signed upstream (reverify_schedule).",
    )]


def build_source_schedules(sources: list[Source], catalog: Catalog) -> tuple[list[Any], list[dg.ScheduleDefinition]]:
    """One job and schedule per source with a catalog ``schedule:``: ingestion, then its screen or scan."""
    from pipelines.assets.ingestion import source_asset_keys
    from pipelines.assets.screening import screening_asset_keys

    jobs, schedules = [], []
    for source in sources:
        if source.schedule is None:
            continue
        job = dg.define_asset_job(
            f"ingest_{source.key}",
            selection=dg.AssetSelection.assets(*source_asset_keys(source), *screening_asset_keys(source, catalog)),
            description=f"Ingest and screen {source.name} (its catalog schedule: {source.schedule.describe()}).",
            tags={"cairn/job": "ingest", "cairn/source": source.name, "cairn/trigger": "schedule"},
        )
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(
            name=f"{source.key}_schedule", job=job, cron_schedule=source.schedule.cron,
            execution_timezone=source.schedule.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"{source.name}: {source.schedule.describe()} (the catalog's schedule)"))
    return jobs, schedules
