"""DVC reproduces the pipeline without Dagster: `dvc repro` in fresh copies of the repository gives
the same attested digests, outputs round-trip through a local and an S3 remote, and the dvc.lock
digests of what a run used end up in the ingestion records."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integrity.trust.hashing import hash_artifact
from tests.support.s3server import FAKE_ENV, S3Bucket, s3_bucket, s3_server  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
DVC = REPO / ".venv-dvc" / "bin" / "dvc"
KEYS = ("breast_cancer", "digits", "efficientnet_lite0", "ct_mr_dicom")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DVC.exists(), reason=f"DVC tool environment missing at {DVC} (run scripts/bootstrap.sh --test)"),
]


def _fresh_copy(target: Path) -> Path:
    """The working tree as a fresh clone would have it (tracked and new files, nothing ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix))
    git = ["git", "-c", "user.email=ci@cairn.test", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-qm", "fresh"], cwd=target, check=True)
    return target


def _dvc(cwd: Path, *args: str, env: dict | None = None) -> str:
    run = subprocess.run([str(DVC), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})})
    assert run.returncode == 0, f"dvc {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def _attested(copy: Path) -> dict[str, str]:
    found = {}
    for key in KEYS:
        summary = json.loads((copy / ".cairn" / "attested" / f"{key}.json").read_text())
        (artifact,) = list((copy / ".cairn" / "attested" / key).iterdir())
        # The bytes on disk are what was attested (for models: the gate's safetensors conversion).
        assert hash_artifact(artifact).root_digest == summary["usable_digest"]
        found[key] = summary["usable_digest"]
    return found


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    copy = _fresh_copy(tmp_path_factory.mktemp("clone-a"))
    _dvc(copy, "repro")
    return copy, _attested(copy)


def test_repro_in_two_fresh_clones_gives_the_same_digests(reproduced, tmp_path: Path) -> None:
    _, first = reproduced
    other = _fresh_copy(tmp_path / "clone-b")
    _dvc(other, "repro")  # new publisher keys, new signatures: same data, same digests
    assert _attested(other) == first
    publisher_a = (reproduced[0] / ".cairn" / "publishers" / "uci-publisher.pub").read_bytes()
    assert (other / ".cairn" / "publishers" / "uci-publisher.pub").read_bytes() != publisher_a


def test_repro_again_is_up_to_date(reproduced) -> None:
    copy, digests = reproduced
    assert "up to date" in _dvc(copy, "repro").lower()
    assert _attested(copy) == digests


def test_outputs_round_trip_through_the_local_remote(reproduced) -> None:
    copy, digests = reproduced
    _dvc(copy, "push")
    assert any((copy / ".cairn" / "dvc-remote").rglob("*"))
    shutil.rmtree(copy / ".cairn" / "attested" / "digits")
    _dvc(copy, "pull", "ingest@1")
    assert _attested(copy) == digests


def test_push_to_an_s3_remote(reproduced, s3_bucket: S3Bucket) -> None:  # noqa: F811
    copy, _ = reproduced
    _dvc(copy, "remote", "add", "-f", "s3", f"{s3_bucket.url}/dvc")
    _dvc(copy, "remote", "modify", "s3", "endpointurl", s3_bucket.endpoint_url)
    _dvc(copy, "push", "-r", "s3", env=FAKE_ENV)
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name, Prefix="dvc/")
    assert listed.get("KeyCount", 0) > 0


def test_dvc_lock_digests_are_part_of_the_records(reproduced) -> None:
    copy, _ = reproduced
    lock = copy / "dvc.lock"
    run = subprocess.run([str(copy / ".venv" / "bin" / "cairn"), "ingest", "run", "--source", "digits",
                          "--home", ".cairn"], cwd=copy, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads((copy / ".cairn" / "attested" / "digits.json").read_text())
    name = summary["record"].rsplit("/", 1)[-1].removesuffix(".json")
    record = json.loads((copy / ".cairn" / "store" / "records" / "ingestions" / f"{name}.json").read_text())
    dvc_lock = record["predicate"]["dvcLock"]
    assert dvc_lock["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert ".cairn/attested/digits" in dvc_lock["stages"]["ingest@1"]


def test_repro_screens_the_datasets_before_anything_trains(reproduced) -> None:
    copy, _ = reproduced
    screened = copy / ".cairn" / "screened"
    model = json.loads((screened / "efficientnet_lite0.json").read_text())
    assert model["passed"] and model["probes"]["dataset"] == "digits"  # probed with its own dataset's samples
    for key, name, kept in (("digits", "digits", "images.npy"), ("breast_cancer", "breast-cancer", "table.csv")):
        summary = json.loads((screened / f"{key}.json").read_text())
        assert summary["passed"] and (screened / key / name / kept).is_file() and summary["record"]
