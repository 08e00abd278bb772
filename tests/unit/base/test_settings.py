"""integrity.settings: one resolution order for every setting, and the README's table kept in step."""

import re
from pathlib import Path

import pytest

from integrity.errors import EXIT_USAGE, UsageError
from integrity.settings import VARIABLES, Settings, environment_table

REPO = Path(__file__).resolve().parents[3]


def test_flag_beats_environment_beats_project_file_beats_default(tmp_path: Path) -> None:
    project = tmp_path / "cairn.yaml"
    project.write_text("store: s3://from-project/prefix\nhome: state\ncatalog: catalogs/mine.yaml\n")
    none = Settings(environ={}, project=None)
    assert none.store == str(none.home / "store") and none.origin("store") == "default"
    from_file = Settings(environ={}, project=project)
    assert from_file.store == "s3://from-project/prefix"
    assert from_file.home == tmp_path / "state"  # relative to the project file
    assert from_file.catalog == tmp_path / "catalogs" / "mine.yaml"
    assert from_file.origin("store") == f"project file {project}"
    from_env = Settings(environ={"CAIRN_STORE": "/env/store"}, project=project)
    assert from_env.store == "/env/store" and from_env.origin("store") == "$CAIRN_STORE"
    flagged = from_env.with_flags(store="/flag/store")
    assert flagged.store == "/flag/store" and flagged.origin("store") == "flag --store"
    assert flagged.home == tmp_path / "state"  # the rest is unchanged


def test_aws_endpoint_variables_are_fallbacks() -> None:
    assert Settings(environ={"AWS_ENDPOINT_URL": "http://a"}).s3_endpoint_url == "http://a"
    both = Settings(environ={"AWS_ENDPOINT_URL": "http://a", "CAIRN_S3_ENDPOINT_URL": "http://c"})
    assert both.s3_endpoint_url == "http://c"


@pytest.mark.parametrize(("text", "message"), [
    ("stor: /x\n", "unknown setting 'stor'"),
    ("store: [a, b]\n", "store: expected text or a number"),
    ("- a\n", "must be a mapping"),
    ("store: &a /x\nhome: *a\n", "anchor"),
])
def test_a_bad_project_file_is_a_usage_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    project = tmp_path / "cairn.yaml"
    project.write_text(text)
    with pytest.raises(UsageError) as caught:
        Settings(environ={}, project=project)
    assert message in str(caught.value) and caught.value.exit_code == EXIT_USAGE
    assert str(project) in str(caught.value.artifact)


def test_bad_values_are_usage_errors() -> None:
    for name, value in (("CAIRN_S3_TIMEOUT", "soon"), ("CAIRN_PULL_TIMEOUT", "-1"),
                        ("CAIRN_RELEASE_SIGNING", "maybe")):
        settings = Settings(environ={name: value})
        with pytest.raises(UsageError, match=name):
            _ = settings.s3_timeout, settings.pull_timeout, settings.release_signing
    with pytest.raises(UsageError, match="CAIRN_PROJECT"):
        Settings(environ={"CAIRN_PROJECT": "/nonexistent/cairn.yaml"})


def test_the_packaged_defaults_exist() -> None:
    settings = Settings(environ={})
    assert settings.catalog.is_file() and settings.suites.is_dir() and settings.release_specs


def test_readme_environment_table_is_the_settings_table() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", readme, re.S)
    assert found, "README.md lost its settings table markers"
    assert found.group(1).strip() == environment_table(), "regenerate: python -m integrity.settings"
    assert len({v.env for v in VARIABLES}) == len(VARIABLES)


def test_no_module_but_settings_reads_the_environment() -> None:
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "integrity").rglob("*.py")
                 if "os.environ" in p.read_text() and p.name != "settings.py"]
    assert offenders == []
