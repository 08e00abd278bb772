"""The typed schemas: published JSON Schemas are current, real files validate, errors come all at once."""

import json
from pathlib import Path

import pytest

from integrity import safeio
from integrity.errors import UsageError
from integrity.intake.catalog import CatalogError, parse_catalog
from integrity.release.spec import ReleaseSpecError, parse_release_spec
from integrity.schemas import MODELS, problems, render
from integrity.settings import package_data
from integrity.trust.policy import PolicyError, parse_policy

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "premove"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_published_json_schemas_match_the_models(kind: str) -> None:
    published = REPO / "docs" / "schemas" / f"{kind}.schema.json"
    assert published.is_file(), f"missing {published}: run python -m integrity.schemas docs/schemas"
    assert published.read_text() == render(kind), f"{published} is stale: run python -m integrity.schemas docs/schemas"


def test_the_files_cairn_ships_and_writes_fit_their_schemas() -> None:
    assert problems("catalog", safeio.parse_yaml(package_data("catalogs", "demo.yaml").read_bytes())) == []
    for spec in package_data("releases").glob("*.yaml"):
        assert problems("release-spec", safeio.parse_yaml(spec.read_bytes())) == []
    for suite in package_data("expectations").glob("*.json"):
        assert problems("expectation-suite", json.loads(suite.read_text())) == [], suite
    assert problems("trust-policy", safeio.parse_yaml((FIXTURE / "release-policy.yaml").read_bytes())) == []
    assert problems("release-index", json.loads((FIXTURE / "bundle" / "release.json").read_text())) == []
    assert problems("record", json.loads((FIXTURE / "bundle" / "provenance.intoto.json").read_text())) == []
    assert problems("project", {"store": "s3://bucket/cairn", "home": ".cairn"}) == []
    assert problems("project", {"stor": "x"}) != []


def test_a_catalog_error_lists_every_problem_with_its_location() -> None:
    text = b"""version: 1
policy: policy.yaml
sources:
  one:
    kind: dataframe
    uri: drops/one
    format: csv
    license: MIT
    origin: x
    colour: red
  two:
    kind: model
    uri: drops/two
    format: safetensors
    origin: y
"""
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text)
    message = str(caught.value)
    assert "sources.one.kind" in message and "sources.one.colour" in message and "sources.two.license" in message


def test_policy_and_spec_errors_list_every_problem() -> None:
    with pytest.raises(PolicyError) as policy:
        parse_policy(b"version: 0\nsources:\n  a:\n    signers:\n      - key: {fingerprint: nope}\n")
    assert "version" in str(policy.value) and "sources.a.signers.0" in str(policy.value)
    with pytest.raises(ReleaseSpecError) as spec:
        parse_release_spec(b"version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: []\ncolour: red\n")
    assert "datasets" in str(spec.value) and "colour" in str(spec.value)


def test_a_bad_suite_lists_its_problems(tmp_path: Path) -> None:
    from integrity.scans.expectations import load_suite

    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "s", "columns": {"a": {"type": "complex"}}, "colour": 1}))
    with pytest.raises(UsageError) as caught:
        load_suite(suite)
    assert "columns.a.type" in str(caught.value) and "colour" in str(caught.value)
