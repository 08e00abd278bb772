"""The project-local Dagster instance the demo and the release job record their runs in."""

from pathlib import Path

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
