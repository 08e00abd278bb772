"""``cairn init`` writes a project whose files load, and refuses to overwrite one; ``cairn policy add``."""

from pathlib import Path

import pytest

from integrity.cli.main import main
from integrity.intake.catalog import load_catalog
from integrity.settings import Settings
from integrity.trust.policy import load_policy


def test_init_writes_a_loadable_project_and_refuses_a_second_time(tmp_path: Path, capsys) -> None:
    project = tmp_path / "acme"
    assert main(["init", str(project)]) == 0
    assert list(load_catalog(project / "catalog.yaml", root=project)) == []  # no sources yet, and valid
    assert load_policy(project / "trust-policy.yaml").sources == {}
    settings = Settings(environ={}, project=project / "cairn.yaml")
    assert settings.catalog == project / "catalog.yaml" and settings.release_specs == []  # nothing of the demo
    assert settings.suites == project / "suites" and settings.home == project / ".cairn"
    assert (project / ".cairn" / "keys" / "release.key").is_file()
    assert main(["init", str(project)]) == 2
    assert "already here" in capsys.readouterr().err


def test_policy_add_adds_a_signer_and_refuses_an_ambiguous_one(tmp_path: Path, capsys) -> None:
    project = tmp_path / "acme"
    main(["init", str(project)])
    policy = project / "release-policy.yaml"
    public = project / ".cairn" / "keys" / "release.pub"
    assert main(["policy", "add", str(policy), "model-a", "--key", str(public)]) == 0
    assert main(["policy", "add", str(policy), "model-a", "--key", str(public)]) == 0  # idempotent
    loaded = load_policy(policy)
    assert len(loaded.source("model-a").signers.rules) == 1
    before = policy.read_bytes()
    assert main(["policy", "add", str(policy), "model-b", "--key", str(public), "--identity", "x"]) == 2
    assert policy.read_bytes() == before  # nothing changed by a refused command
    with pytest.raises(SystemExit):
        main(["policy", "add"])
