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


def test_dry_run_predicts_the_real_runs_exit_code(published: dict[str, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _revoke(published, "--source", "digtis", "--dry-run") == 2
    out = json.loads(capsys.readouterr().out)
    assert out["known"] is False and out["would_exit"] == 2
    assert _revoke(published, "--source", "digtis") == 2  # the real run agrees
    assert _revoke(published, "--source", "digtis", "--force", "--dry-run") == 0
    assert not (published["store"] / "records" / "revocations").exists()


@pytest.mark.parametrize("digest", ["sha256:zz", "sha256:" + "ab" * 8, "SHA256: " + "AB" * 32])
def test_revoke_refuses_digests_that_could_never_match(published: dict[str, Path], digest: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert _revoke(published, "--artifact", digest) == 2
    assert _revoke(published, "--policy-digest", digest, "--dry-run") == 2
    assert "64 hex digits" in capsys.readouterr().err
    assert not (published["store"] / "records" / "revocations").exists()


def test_an_upper_case_artifact_digest_is_normalised_and_then_fails_the_pull(
        published: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    digest = hashlib.sha256(b"digits").hexdigest()  # the test bundle's one input
    assert _revoke(published, "--artifact", f"SHA256:{digest.upper()}") == 0
    assert json.loads(capsys.readouterr().out)["subject"] == f"sha256:{digest}"
    policy = tmp_path / "release-policy.yaml"
    code = main(["pull", f"{MODEL}@1.0.0", "--dest", str(tmp_path / "pulled"), "--store", str(published["store"]),
                 "--home", str(published["home"]), "--release-policy", str(policy), "--no-progress"])
    assert code == 1 and "revoked" in capsys.readouterr().err
    assert not (tmp_path / "pulled").exists()
