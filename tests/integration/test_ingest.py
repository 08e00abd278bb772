"""Ingestion steps without Dagster: fetching from local folders and S3 (moto on loopback),
refusing what cannot be fetched safely, enforcing step order, and the drop-location snapshot."""

import os
import shutil
from pathlib import Path

import pytest

from integrity.errors import UsageError
from integrity.intake.catalog import load_catalog
from integrity.intake.drops import changed, snapshot, sources_for
from integrity.intake.ingest import Ingestion
from integrity.intake.outcomes import StepOrderError
from pipelines.resources import DEMO_CATALOG
from pipelines.staging import stage_demo
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_demo(tmp_path_factory.mktemp("staged"))


def _home(tmp_path: Path, staged: Path, extra: str = "") -> Ingestion:
    home = tmp_path / "home"
    shutil.copytree(staged, home, symlinks=True)
    catalog = home / "catalog.yaml"
    catalog.write_text(DEMO_CATALOG.read_text() + extra)
    return Ingestion.open(load_catalog(catalog, root=home), home=home)


def test_verify_before_fetch_is_refused(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    source = ingestion.catalog.source("breast-cancer")
    with pytest.raises(StepOrderError, match="needs a fetch result first"):
        ingestion.verify(source)
    assert ingestion.fetch(source).passed
    with pytest.raises(StepOrderError, match="needs a verify result"):
        ingestion.validate(source)


def test_rejected_step_blocks_the_next_one(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    source = ingestion.catalog.source("digits-unofficial")
    ingestion.fetch(source)
    outcome = ingestion.verify(source)
    assert not outcome.passed and outcome.quarantine_id
    with pytest.raises(StepOrderError, match="verify did not pass"):
        ingestion.validate(source)


def test_a_new_fetch_invalidates_later_steps(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    source = ingestion.catalog.source("breast-cancer")
    ingestion.fetch(source)
    assert ingestion.verify(source).passed
    ingestion.fetch(source)
    assert set(ingestion.state(source)) == {"fetch"}


def test_special_file_in_a_drop_is_refused(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    os.mkfifo(ingestion.home / "drops" / "breast-cancer" / "pipe")
    outcome = ingestion.fetch(ingestion.catalog.source("breast-cancer"))
    assert not outcome.passed
    assert "special file" in outcome.reason


def test_symlink_leaving_the_drop_is_refused(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    os.symlink("/etc/passwd", ingestion.home / "drops" / "breast-cancer" / "extra")
    outcome = ingestion.fetch(ingestion.catalog.source("breast-cancer"))  # copied as a link, never followed
    assert not outcome.passed and "points outside the artifact" in outcome.reason
    assert not (ingestion.work_dir(ingestion.catalog.source("breast-cancer")) / "fetched").exists()


UNREACHABLE = """
  remote:
    kind: dataset
    uri: https://127.0.0.1:9/data.csv
    format: csv
    policy_source: breast-cancer
    license: CC-BY-4.0
    origin: nowhere
    suite: breast_cancer.json
"""


def test_unreachable_https_uri_is_quarantined(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged, UNREACHABLE)
    outcome = ingestion.fetch(ingestion.catalog.source("remote"))
    assert not outcome.passed and "unreachable URI" in outcome.reason
    entry = next(q for q in ingestion.store.list_quarantine() if q.source == "remote")
    assert entry.copy_error  # nothing could be copied, the reason is kept anyway


def test_fetch_and_verify_from_s3(tmp_path: Path, staged: Path, s3_bucket: S3Bucket) -> None:  # noqa: F811
    drop = staged / "drops" / "breast-cancer"
    for path in sorted(drop.rglob("*")):
        if path.is_file():
            s3_bucket.client.upload_file(str(path), s3_bucket.name, f"vendor/bc/{path.relative_to(drop)}")
    extra = f"""
  s3-breast-cancer:
    kind: dataset
    uri: {s3_bucket.url}/vendor/bc
    format: csv
    policy_source: breast-cancer
    license: CC-BY-4.0
    origin: an S3 drop
    suite: breast_cancer.json
  s3-missing:
    kind: dataset
    uri: {s3_bucket.url}/vendor/nothing-here
    format: csv
    policy_source: breast-cancer
    license: CC-BY-4.0
    origin: an empty S3 prefix
    suite: breast_cancer.json
"""
    ingestion = _home(tmp_path, staged, extra)
    source = ingestion.catalog.source("s3-breast-cancer")
    fetched = ingestion.fetch(source)
    assert fetched.passed, fetched.reason
    verified = ingestion.verify(source)
    assert verified.passed, verified.reason
    local = Ingestion.open(ingestion.catalog, home=ingestion.home)
    local.fetch(local.catalog.source("breast-cancer"))
    assert verified.digest == local.verify(local.catalog.source("breast-cancer")).digest
    missing = ingestion.fetch(ingestion.catalog.source("s3-missing"))
    assert not missing.passed and "unreachable URI" in missing.reason

    # The drop sensor's snapshot of an S3 prefix sees the same objects, with ETags.
    objects = snapshot(f"{s3_bucket.url}/vendor")
    assert f"{s3_bucket.url}/vendor/bc/breast_cancer.csv" in objects
    owners, unclaimed = sources_for(objects, ingestion.catalog)
    assert set(owners) == {"s3-breast-cancer"} and not unclaimed


def test_local_drop_snapshot_and_ownership(staged: Path) -> None:
    catalog = load_catalog(DEMO_CATALOG, root=staged)
    first = snapshot(staged / "drops")
    owners, _ = sources_for(first, catalog)
    assert {"breast-cancer", "digits", "efficientnet-lite0"} <= set(owners)
    # "breast-cancer" must not claim "breast-cancer-mirror"'s files.
    assert all("/breast-cancer/" in uri for uri in owners["breast-cancer"])
    assert changed(first, first) == []
    assert snapshot(staged / "no-such-folder") == {}


def test_unreadable_state_is_an_input_error(tmp_path: Path, staged: Path) -> None:
    ingestion = _home(tmp_path, staged)
    source = ingestion.catalog.source("breast-cancer")
    ingestion.fetch(source)
    (ingestion.work_dir(source) / "state.json").write_text("{not json")
    with pytest.raises(UsageError, match="unreadable step state"):
        ingestion.verify(source)
