"""Schedules from the catalog (a source's ``schedule:``) and the project file (``reverify_schedule``), checked
where they are read, and turned into Dagster schedules with no Python (issue 27)."""

from pathlib import Path

import pytest

from integrity.errors import UsageError
from integrity.intake.catalog import CatalogError, load_catalog
from integrity.intake.schedule import parse_schedule, parse_schedule_entry, parse_schedule_setting

SOURCE = """version: 1
policy: policy.yaml
sources:
  heart:
    kind: dataset
    uri: drops/heart
    format: csv
    license: CC-BY-4.0
    origin: https://example.org
    suite: SUITE
    schedule: SCHEDULE
  plain:
    kind: dataset
    uri: drops/plain
    format: csv
    license: MIT
    origin: https://example.org
    suite: SUITE
"""


def _write(tmp_path: Path, schedule: str) -> Path:
    suite = tmp_path / "suite.json"
    suite.write_text('{"name": "heart", "columns": {"age": {"type": "int"}}}')
    path = tmp_path / "catalog.yaml"
    path.write_text(SOURCE.replace("SUITE", str(suite)).replace("SCHEDULE", schedule))
    return path


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/15 * * * *", "30 1 * * mon-fri", "0 0 1,15 jan-jun *",
                                  "5 4 * * 7", "0 22 * * 1-5"])
def test_ordinary_cron_expressions_are_accepted(cron: str) -> None:
    assert parse_schedule(cron, "Europe/Berlin", where="x").cron == cron


@pytest.mark.parametrize(("cron", "says"), [
    ("0 3 * *", "five-field"), ("60 * * * *", "outside 0-59"), ("0 24 * * *", "outside 0-23"),
    ("0 0 0 * *", "outside 1-31"), ("0 0 * 13 *", "outside 1-12"), ("0 0 * * 8", "outside 0-7"),
    ("*/0 * * * *", "step of 0"), ("0 5-3 * * *", "outside"), ("@daily", "five-field"), ("0 3 * * fri-mon", "outside"),
    ("0 3 * * $(id)", r"not \*, N"),
])
def test_bad_cron_expressions_are_usage_errors_naming_the_field(cron: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_schedule(cron, where="sources.heart.schedule")


def test_time_zones_and_entry_forms() -> None:
    assert parse_schedule_entry({"cron": "0 3 * * *", "timezone": "America/New_York"}, where="x").timezone == \
        "America/New_York"
    assert parse_schedule_entry("0 3 * * *", where="x").timezone == "UTC"
    with pytest.raises(UsageError, match="IANA time zone"):
        parse_schedule("0 3 * * *", "Mars/Olympus", where="x")
    with pytest.raises(UsageError, match="cron string or"):
        parse_schedule_entry({"cron": "0 3 * * *", "tz": "UTC"}, where="x")
    assert parse_schedule_setting("none", where="x") is None
    assert parse_schedule_setting("0 4 * * sun Europe/Paris", where="x") == parse_schedule("0 4 * * sun",
                                                                                            "Europe/Paris", where="x")


def test_the_catalog_reads_a_sources_schedule_and_refuses_a_bad_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "{cron: '0 3 * * *', timezone: Europe/Berlin}")
    catalog = load_catalog(path, root=tmp_path)
    heart = catalog.source("heart")
    assert heart.schedule is not None and heart.schedule.describe() == "0 3 * * * (Europe/Berlin)"
    assert catalog.source("plain").schedule is None
    assert heart.as_dict()["schedule"] == {"cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    _write(tmp_path, "'0 25 * * *'")
    with pytest.raises(CatalogError, match=r"source 'heart'.*hour field '25' is outside 0-23"):
        load_catalog(path, root=tmp_path)
    isolated = load_catalog(path, root=tmp_path, strict=False)  # Dagster: the entry is isolated, the rest load
    assert [s.name for s in isolated] == ["plain"] and "heart" in isolated.invalid


def test_dagster_builds_a_schedule_per_scheduled_source_and_the_projects_reverify_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.definitions import build_definitions

    path = _write(tmp_path, "{cron: '0 3 * * *', timezone: Europe/Berlin}")
    monkeypatch.setenv("CAIRN_REVERIFY_SCHEDULE", "30 4 * * sun Asia/Tokyo")
    defs = build_definitions(load_catalog(path, root=tmp_path), specs=[])
    schedules = {s.name: s for s in defs.schedules or []}
    heart = schedules["heart_schedule"]
    assert heart.cron_schedule == "0 3 * * *" and heart.execution_timezone == "Europe/Berlin"
    assert heart.job_name == "ingest_heart"
    reverify = schedules["nightly_reverify_schedule"]
    assert reverify.cron_schedule == "30 4 * * sun" and reverify.execution_timezone == "Asia/Tokyo"
    monkeypatch.setenv("CAIRN_REVERIFY_SCHEDULE", "none")
    assert "nightly_reverify_schedule" not in {s.name for s in build_definitions(
        load_catalog(path, root=tmp_path), specs=[]).schedules or []}


def test_catalog_check_reports_schedules_and_refuses_a_bad_reverify_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from integrity.cli import main

    path = _write(tmp_path, "'15 2 * * *'")
    monkeypatch.delenv("CAIRN_REVERIFY_SCHEDULE", raising=False)
    assert main(["catalog", "check", str(path), "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "heart: dataset csv" in out and "scheduled 15 2 * * * (UTC)" in out
    assert "re-verification of every attested source: 0 2 * * * (UTC)" in out
    monkeypatch.setenv("CAIRN_REVERIFY_SCHEDULE", "nightly")
    assert main(["catalog", "check", str(path), "--home", str(tmp_path)]) == 2
    assert "reverify_schedule" in capsys.readouterr().err
