"""The demo as a project: the files ``cairn demo`` writes into its home, and the ones its run reads."""

from pathlib import Path

from integrity.trust.signing import atomic_write

#: The demo's project files in its home (the same layout a user's `cairn init` project has).
DEMO_PROJECT_FILE = "cairn.yaml"
DEMO_SPECS = "release-specs"  # `releases/` holds the signed bundles in a home


def write_demo_project(home: Path) -> None:
    """Make the demo home a project: its catalog, suites and release specs, copied in once.

    Every later demo run, `cairn ui` and the CLI run from the home use these files, as they would a
    user's project; the packaged originals are only the templates. Files already there are kept
    (edit them to experiment; delete the home to start over).
    """
    import yaml

    from integrity.cli.project import WORKSPACE
    from integrity.settings import package_data

    def once(path: Path, data: bytes) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)

    catalog = yaml.safe_load(package_data("catalogs", "demo.yaml").read_text(encoding="utf-8"))
    catalog = {**catalog, "root": ".", "suites": "suites"}
    header = "# The demo's catalog (a copy `cairn demo` made of the packaged one); edit it like a project's.\n"
    once(home / "catalog.yaml", (header + yaml.safe_dump(catalog, sort_keys=False)).encode())
    for suite in sorted(package_data("expectations").glob("*.json")):
        once(home / "suites" / suite.name, suite.read_bytes())
    for spec in sorted(package_data("releases").glob("*.yaml")):
        once(home / DEMO_SPECS / spec.name, spec.read_bytes())
    once(home / DEMO_PROJECT_FILE, (
        "# The demo project `cairn demo` made: run cairn here (or `cairn ui` here) to use its files.\n"
        f"home: .\ncatalog: catalog.yaml\nsuites: suites\nrelease_spec: {DEMO_SPECS}\n"
        "release_policy: release-policy.yaml\n").encode())
    once(home / "workspace.yaml", WORKSPACE.encode())  # the same file `cairn init` writes


def demo_catalog(home: Path) -> Path:
    """The catalog the demo runs: its project's copy."""
    return home / "catalog.yaml"


def demo_release_specs(home: Path) -> list[Path]:
    """``$CAIRN_RELEASE_SPEC`` where set, else the demo project's release specs."""
    from integrity.settings import current

    settings = current()
    if settings.raw("release_spec"):
        return settings.release_specs
    return sorted((home / DEMO_SPECS).glob("*.yaml"))
