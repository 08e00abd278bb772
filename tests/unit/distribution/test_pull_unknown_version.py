"""Pulling a version that is not published says which versions are (issue 27)."""

from pathlib import Path

import pytest

from integrity.cli import main
from integrity.distribution.publication import publish
from integrity.storage import open_store
from integrity.trust.policy import load_policy
from tests.support.distribution import make_release_key, write_release_policy, write_test_bundle

MODEL = "digits-classifier"


def test_an_unknown_version_lists_the_published_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = make_release_key(tmp_path / "home" / "keys")
    policy = write_release_policy(tmp_path / "release-policy.yaml", MODEL, public)
    store = open_store(tmp_path / "store")
    for sequence, version in enumerate(("1.0.0", "1.0.10", "1.0.2"), start=1):
        bundle = write_test_bundle(tmp_path / f"bundle-{version}", private, model=MODEL, version=version,
                                   sequence=sequence, weights_size=256)
        publish(store, bundle, load_policy(policy))
    code = main(["pull", f"{MODEL}@2.0.0", "--dest", str(tmp_path / "out"), "--store", str(tmp_path / "store"),
                 "--home", str(tmp_path / "home"), "--release-policy", str(policy), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "published versions: 1.0.0, 1.0.2, 1.0.10" in err
    assert f"cairn pull {MODEL}@VERSION" in err and not (tmp_path / "out").exists()
    from integrity.distribution.sources import published_versions

    assert published_versions(store, "other-model") == []
