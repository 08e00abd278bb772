"""Issue 12, swapped and forged inputs: every step pins what the step before produced, and training, release
and pull trust a record only as the signed ledger logged it. Each test works on a copy of the demo home."""

import json
import shutil
from pathlib import Path

import pytest

from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from integrity.release.inputs import UnattestedInputError
from integrity.release.spec import load_release_spec
from integrity.release.steps import ReleaseWork
from tests.support.release_demo import REPO, ReleaseDemo

CATALOG = REPO / "integrity" / "data" / "catalogs" / "demo.yaml"




def _ingestion(home: Path) -> Ingestion:
    return Ingestion.open(load_catalog(CATALOG, root=home, strict=False), home=home, store=str(home / "store"))


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.chmod(0o644)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def test_an_edited_verification_record_is_not_trusted(home: Path, demo: ReleaseDemo) -> None:
    summary = json.loads((home / "attested" / "digits.json").read_text())
    _rewrite(home / "store" / summary["verification"], lambda d: d["predicate"].update(reason="looks fine"))
    with pytest.raises(UnattestedInputError, match=r"untrusted verification record .*changed after the ledger logged"):
        ReleaseWork(_ingestion(home), load_release_spec(demo.spec)).inputs()


def test_a_forged_screening_record_summary_and_tree_do_not_pass_a_quarantined_drop(home: Path,
                                                                                   demo: ReleaseDemo) -> None:
    # The attacker rewrites the screening record (written anew, under a new name, so it is not the
    # logged one) and points the summary at it: whatever it says, it is not in the signed ledger.
    summary_path = home / "screened" / "digits.json"
    summary = json.loads(summary_path.read_text())
    record_path = home / "store" / summary["record"]
    forged_key = summary["record"].replace(".json", "-forged.json")
    forged = json.loads(record_path.read_text())
    forged["predicate"]["flagged"] = []
    (home / "store" / forged_key).write_text(json.dumps(forged))
    summary["record"] = forged_key
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(UnattestedInputError, match=r"untrusted screening record .*not in the signed ledger"):
        ReleaseWork(_ingestion(home), load_release_spec(demo.spec)).inputs()


def test_records_cannot_be_checked_without_the_ledger(home: Path, demo: ReleaseDemo) -> None:
    shutil.rmtree(home / "store" / "ledger")
    with pytest.raises(UnattestedInputError, match="no ledger here"):
        ReleaseWork(_ingestion(home), load_release_spec(demo.spec)).inputs()


def test_weights_swapped_in_the_work_area_between_validate_and_attest_are_refused(home: Path) -> None:
    ingestion = _ingestion(home)
    source = ingestion.catalog.source("efficientnet-lite0")
    assert ingestion.fetch(source).passed and ingestion.verify(source).passed
    assert ingestion.validate(source).passed
    converted = next(ingestion.converted_dir(source).rglob("*.safetensors"))
    data = bytearray(converted.read_bytes())
    data[-3] ^= 0xFF  # a weight changed after validation recorded the conversion's digest
    converted.write_bytes(bytes(data))
    outcome = ingestion.attest(source)
    assert not outcome.passed and "not the ones validation produced" in outcome.reason, outcome.reason
