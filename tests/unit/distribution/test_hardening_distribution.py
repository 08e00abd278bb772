"""Issue 12, distribution: a pull is bound to the version asked for; hostile files and servers fail fast."""

import shutil
from pathlib import Path

import pytest

from integrity.distribution import PullState, RollbackError, StoreSource, publish, pull
from integrity.ledger import Ledger
from integrity.ledger.transparency import open_ledger
from integrity.storage import open_store
from integrity.trust.policy import load_policy
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

MODEL = "digits-classifier"


@pytest.fixture
def env(tmp_path: Path):
    private, public = make_release_key(tmp_path / "keys")
    policy_path = write_release_policy(tmp_path / "release-policy.yaml", MODEL, public)
    return {"private": private, "public": public, "policy_path": policy_path, "policy": load_policy(policy_path),
            "home": tmp_path / "home"}


def _two_versions(tmp_path: Path, env) -> tuple:
    store = open_store(tmp_path / "store")
    ledger = open_ledger(store, home=env["home"])
    for version, sequence in (("1.0.0", 1), ("2.0.0", 2)):
        bundle = write_test_bundle(tmp_path / f"b{sequence}", env["private"], model=MODEL, version=version,
                                   sequence=sequence, weights_size=100 * sequence)
        publish(store, bundle, env["policy"], ledger=ledger)
    return store, ledger


@pytest.mark.parametrize("with_ledger", [False, True])
def test_pull_v2_never_installs_v1_under_a_copied_record(tmp_path: Path, env, with_ledger: bool) -> None:
    store, _ = _two_versions(tmp_path, env)
    versions = tmp_path / "store" / "releases" / MODEL / "versions"
    shutil.copy(versions / "1.0.0.json", versions / "2.0.0.json")  # someone who can write the store
    ledger = Ledger(store, public_key=env["home"] / "keys" / "ledger.pub") if with_ledger else None
    with pytest.raises(RollbackError, match=r"asked for digits-classifier@2\.0\.0.*1\.0\.0"):
        pull(StoreSource(store), MODEL, "2.0.0", tmp_path / "out", env["policy"], ledger=ledger,
             state=PullState(tmp_path / "state.json"), progress=False)
    assert not (tmp_path / "out").exists()
    # The honest version still pulls.
    result = pull(StoreSource(store), MODEL, "1.0.0", tmp_path / "v1", env["policy"], ledger=ledger, progress=False)
    assert result.version == "1.0.0"
