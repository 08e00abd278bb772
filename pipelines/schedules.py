"""Schedules: nightly re-verification of every attested source."""

from typing import Any

import dagster as dg

from integrity.intake.catalog import Source
from pipelines.checks import reverify_check_keys


def build_nightly_reverify(sources: list[Source]) -> tuple[Any, dg.ScheduleDefinition]:
    job = dg.define_asset_job(
        "nightly_reverify",
        selection=dg.AssetSelection.checks(*reverify_check_keys(sources)),
        description="Re-fetch every attested source and check it against its publisher signature and attested digest.",
        tags={"cairn/job": "reverify"},
    )
    schedule = dg.ScheduleDefinition(
        name="nightly_reverify_schedule",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="02:00 UTC every night: detect sources changed or re-signed upstream.",
    )
    return job, schedule
