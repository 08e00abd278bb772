"""`cairn revoke` refuses what the store does not know unless --force, and --dry-run writes nothing."""

import json
from pathlib import Path

import pytest

from integrity.cli import main
from integrity.distribution.publication import publish
from integrity.storage import open_store
from integrity.trust.policy import load_policy
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

MODEL = "digits-classifier"


@pytest.fixture
def published(tmp_path: Path) -> dict[str, Path]:
    private, public = make_release_key(tmp_path / "home" / "keys")
    policy = write_release_policy(tmp_path / "release-policy.yaml", MODEL, public)
    bundle = write_test_bundle(tmp_path / "bundle", private, model=MODEL, weights_size=1024)
    publish(open_store(tmp_path / "store"), bundle, load_policy(policy))
    return {"store": tmp_path / "store", "home": tmp_path / "home", "key": private}


def _revoke(paths: dict[str, Path], *args: str) -> int:
    return main(["revoke", *args, "--reason", "test", "--store", str(paths["store"]), "--home", str(paths["home"]),
                 "--key", str(paths["key"]), "--json"])


def test_dry_run_names_the_affected_releases_and_writes_nothing(published: dict[str, Path],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _revoke(published, "--source", "digits", "--dry-run") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["known"] is True and out["affected"] == [f"{MODEL}@1.0.0"]
    assert not (published["store"] / "records" / "revocations").exists()


def test_unknown_subjects_are_refused_unless_forced(published: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _revoke(published, f"{MODEL}@9.9.9") == 2
    assert _revoke(published, "--source", "digtis") == 2  # a typo revokes nothing
    assert "not known to" in capsys.readouterr().err
    assert not (published["store"] / "records" / "revocations").exists()
    assert _revoke(published, "--source", "digtis", "--force") == 0
    assert _revoke(published, f"{MODEL}@1.0.0") == 0
    assert len(list((published["store"] / "records" / "revocations").glob("*.json"))) == 2
