"""The source catalog: strict parsing with errors that name the entry, and URI resolution."""

from pathlib import Path

import pytest

from integrity.cli import main
from integrity.intake.catalog import CatalogError, load_catalog, parse_catalog

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "integrity" / "data" / "catalogs" / "demo.yaml"


def _catalog(tmp_path: Path, body: str) -> Path:
    suite = tmp_path / "suite.json"
    suite.write_text("{}")
    path = tmp_path / "catalog.yaml"
    path.write_text("version: 1\npolicy: policy.yaml\nsources:\n" + body.replace("SUITE", str(suite)))
    return path


GOOD = """  data-set:
    kind: dataset
    uri: drops/data
    format: csv
    license: MIT
    origin: https://example.org
    suite: SUITE
"""


def test_demo_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(DEMO, root=tmp_path)
    assert {"breast-cancer", "digits", "efficientnet-lite0", "ct-mr-dicom"} <= set(catalog.sources)
    assert catalog.policy_path == tmp_path.resolve() / "policy.yaml"
    assert catalog.digest.startswith("sha256:")
    assert catalog.resolve(catalog.source("digits").uri) == f"file://{tmp_path.resolve()}/drops/digits"
    assert catalog.source("breast-cancer-mirror").policy_source == "breast-cancer"


def test_relative_uris_and_signature_locations(tmp_path: Path) -> None:
    catalog = load_catalog(_catalog(tmp_path, GOOD), root=tmp_path)
    source = catalog.source("data-set")
    assert source.key == "data_set"
    assert source.signature_uri(is_directory=True) == "drops/data/model.sig"
    assert source.signature_uri(is_directory=False) == "drops/data.sig"
    assert catalog.resolve("s3://bucket/x") == "s3://bucket/x"
    assert catalog.resolve("file:///abs/x") == "file:///abs/x"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("    license: MIT\n", "    license: MIT\n    colour: red\n"), "unknown field(s) 'colour'"),
        (("kind: dataset", "kind: dataframe"), "kind must be 'dataset' or 'model'"),
        (("uri: drops/data", "uri: ftp://host/data"), "scheme 'ftp' is not supported"),
        (("format: csv", "format: xlsx"), "format 'xlsx' is not a dataset format"),
        (("    license: MIT\n", ""), "missing required field 'license'"),
        (("    suite: SUITE\n", ""), "needs an expectation suite"),
        (("suite: SUITE", "suite: /nonexistent/suite.json"), "does not exist"),
        (("  data-set:", "  Data Set:"), "names are lowercase"),
    ],
)
def test_bad_entries_name_the_source_and_field(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = _catalog(tmp_path, GOOD.replace(*change))
    with pytest.raises(CatalogError, match="source") as info:
        load_catalog(path, root=tmp_path)
    assert message in str(info.value)
    assert str(path) in info.value.summary()


def test_unknown_top_level_field_and_version(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="unknown top-level field"):
        parse_catalog(b"version: 1\npolicy: p.yaml\nsources: {}\nextra: 1\n")
    with pytest.raises(CatalogError, match="unsupported catalog version"):
        parse_catalog(b"version: 7\npolicy: p.yaml\nsources: {}\n")
    assert list(parse_catalog(b"version: 1\npolicy: p.yaml\nsources: {}\n")) == []  # a new project's catalog
    with pytest.raises(CatalogError, match="must be a mapping"):
        parse_catalog(b"version: 1\npolicy: p.yaml\nsources: [a]\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        parse_catalog(b"version: [1\n")


def test_keys_that_collide_are_refused(tmp_path: Path) -> None:
    body = GOOD + GOOD.replace("data-set", "data_set")
    with pytest.raises(CatalogError, match="differ only by"):
        load_catalog(_catalog(tmp_path, body), root=tmp_path)


def test_catalog_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "check", str(DEMO), "--home", str(tmp_path)]) == 0
    assert "breast-cancer: dataset csv" in capsys.readouterr().out
    bad = _catalog(tmp_path, GOOD.replace("kind: dataset", "kind: spreadsheet"))
    assert main(["catalog", "check", str(bad)]) == 2
    assert "CatalogError" in capsys.readouterr().err


def test_lenient_parsing_sets_bad_entries_aside(tmp_path: Path) -> None:
    body = GOOD + GOOD.replace("data-set", "other").replace("    license: MIT\n", "    licence: MIT\n")
    catalog = load_catalog(_catalog(tmp_path, body), root=tmp_path, strict=False)
    assert list(catalog.sources) == ["data-set"]
    assert "unknown field(s) 'licence'" in catalog.invalid["other"].reason
    with pytest.raises(CatalogError, match="licence"):
        load_catalog(_catalog(tmp_path, body), root=tmp_path)
