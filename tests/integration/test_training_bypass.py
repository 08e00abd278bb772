"""Training is refused on any input whose mandatory gate did not pass: one test per bypass route.

Before: a spec that named ``SOURCE`` (or ``SOURCE/attested``) instead of ``SOURCE/screened`` trained on
the attested copy the poisoning screen never filtered (the backdoored drop's samples included), and a
model named without ``/backdoor_scanned`` skipped its backdoor scan. Works on a copy of the shared demo
home, so the records and bytes are the ones the real pipeline wrote.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from integrity.intake.catalog import CatalogError, load_catalog, parse_catalog
from integrity.intake.ingest import Ingestion
from integrity.release.inputs import UnattestedInputError, resolve_inputs
from integrity.release.spec import load_release_spec
from tests.support.release_demo import REPO, ReleaseDemo

CATALOG = REPO / "integrity" / "data" / "catalogs" / "demo.yaml"




def _resolve(home: Path, demo: ReleaseDemo, tmp_path: Path, old: str, new: str, *,
             catalog: Path = CATALOG) -> list[Any]:
    spec = tmp_path / "spec.yaml"
    text = demo.spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new))
    ingestion = Ingestion.open(load_catalog(catalog, root=home, strict=False), home=home, store=str(home / "store"))
    return resolve_inputs(ingestion, load_release_spec(spec))


def test_the_demo_spec_resolves(home: Path, demo: ReleaseDemo, tmp_path: Path) -> None:
    _resolve(home, demo, tmp_path, "digits/screened", "digits/screened")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("digits/screened", "digits", "must pass its poisoning screen before anything trains on it"),
    ("digits/screened", "digits/attested", "name it digits/screened"),
    ("efficientnet-lite0/backdoor_scanned", "efficientnet-lite0", "name it efficientnet-lite0/backdoor_scanned"),
    ("efficientnet-lite0/backdoor_scanned", "efficientnet-lite0/attested", "must pass its backdoor scan"),
    ("digits/screened", "ct-mr-dicom/screened", "no 'screened' scan applies to 'ct-mr-dicom'"),
    ("digits/screened", "breast-cancer", "must pass its poisoning screen"),  # tables are screened too
    ("digits/screened", "digits-vendor-b/screened", "the poisoning screen did not pass"),
    ("digits/screened", "digits-vendor-b", "must pass its poisoning screen"),
])
def test_each_bypass_route_is_refused(home: Path, demo: ReleaseDemo, tmp_path: Path, old: str, new: str,
                                      message: str) -> None:
    with pytest.raises(UnattestedInputError) as caught:
        _resolve(home, demo, tmp_path, old, new)
    assert message in caught.value.reason, caught.value.reason
    assert caught.value.exit_code == 1


def test_a_mistyped_scan_profile_is_a_catalog_error_not_a_silently_dropped_screen() -> None:
    text = CATALOG.read_bytes().replace(b"scan_profile: images", b"scan_profile: imagse", 1)
    with pytest.raises(CatalogError, match="scan_profile 'imagse' is not registered"):
        parse_catalog(text)


def test_a_model_no_scan_applies_to_needs_the_policy_to_allow_it(home: Path, demo: ReleaseDemo,
                                                                  tmp_path: Path) -> None:
    """No registered backdoor scan covers the model: refused unless a reviewed policy allows it; then recorded."""
    catalog = tmp_path / "catalog.yaml"
    text = CATALOG.read_text()
    assert "scan_profile: image-classifier" in text
    catalog.write_text(text.replace("scan_profile: image-classifier", "scan_profile: default"))
    with pytest.raises(UnattestedInputError, match="does not allow training on it unscanned"):
        _resolve(home, demo, tmp_path, "efficientnet-lite0/backdoor_scanned", "efficientnet-lite0", catalog=catalog)
    with pytest.raises(UnattestedInputError, match="no 'backdoor_scanned' scan applies"):
        _resolve(home, demo, tmp_path, "efficientnet-lite0/backdoor_scanned", "efficientnet-lite0/backdoor_scanned",
                 catalog=catalog)
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["sources"]["efficientnet-lite0"]["allow_unscanned"] = True
    (home / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    base, _digits = _resolve(home, demo, tmp_path, "efficientnet-lite0/backdoor_scanned", "efficientnet-lite0",
                             catalog=catalog)
    decision = base.entry()["scan_decision"]
    assert decision["allowed_by"] == "sources.efficientnet-lite0.allow_unscanned"
    assert "no backdoor scan applies" in decision["reason"]
