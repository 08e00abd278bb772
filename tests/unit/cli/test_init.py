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
    assert Path(settings.drop_location) == project / "drops"  # the folder init made, which the sensor watches
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


def test_init_refuses_a_folder_that_already_holds_keys_unless_adopted(tmp_path: Path, capsys) -> None:
    from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key

    project = tmp_path / "acme"
    keys = project / ".cairn" / "keys"
    keys.mkdir(parents=True)
    planted = generate_key_pair(keys / "release.key", keys / "release.pub")
    before = (keys / "release.key").read_bytes()
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert "already holds keys (release.key, release.pub)" in err and "--adopt-keys" in err
    assert not (project / "cairn.yaml").exists()  # nothing written
    assert main(["init", str(project), "--adopt-keys"]) == 0
    assert (keys / "release.key").read_bytes() == before  # adopted, not replaced
    assert key_fingerprint(load_public_key(keys / "release.pub")) == planted


def test_adopting_keys_needs_one_regular_key_pair(tmp_path: Path, capsys) -> None:
    from integrity.trust.signing import generate_key_pair

    mismatched, only_ledger, linked = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (mismatched, only_ledger, linked):
        (folder / ".cairn" / "keys").mkdir(parents=True)
    generate_key_pair(mismatched / ".cairn/keys/release.key", tmp_path / "unused.pub")
    generate_key_pair(tmp_path / "other.key", mismatched / ".cairn/keys/release.pub")
    assert main(["init", str(mismatched), "--adopt-keys"]) == 2
    assert "not one key pair" in capsys.readouterr().err
    (only_ledger / ".cairn/keys/ledger.key").write_text("x")
    assert main(["init", str(only_ledger)]) == 2
    assert main(["init", str(only_ledger), "--adopt-keys"]) == 2
    assert "release.key as a regular file" in capsys.readouterr().err
    generate_key_pair(tmp_path / "elsewhere.key", tmp_path / "elsewhere.pub")
    (linked / ".cairn/keys/release.key").symlink_to(tmp_path / "elsewhere.key")
    (linked / ".cairn/keys/release.pub").symlink_to(tmp_path / "elsewhere.pub")
    assert main(["init", str(linked), "--adopt-keys"]) == 2


def test_policy_add_keeps_comments_bumps_the_version_and_copies_an_outside_key(tmp_path: Path, capsys) -> None:
    from integrity.trust.signing import generate_key_pair

    project = tmp_path / "acme"
    main(["init", str(project)])
    policy = project / "trust-policy.yaml"
    policy.write_text(policy.read_text().replace("sources: {}", "sources:\n  tables:  # the UCI mirror\n"
                                                 "    description: UCI tables\n    signers:\n"
                                                 "      - sigstore: {identity: a@uci.example, issuer: https://id.example}"
                                                 "  # reviewed 2026-11\n") + "# end of the reviewed policy\n")
    generate_key_pair(tmp_path / "vendor.key", tmp_path / "vendor.pub")
    assert main(["policy", "add", str(policy), "garments", "--key", str(tmp_path / "vendor.pub")]) == 0
    out = capsys.readouterr().out
    assert "policy version 2" in out and "copied the key" in out and "{" not in out.split("\n")[0]
    text = policy.read_text()
    for comment in ("# Who may sign each catalog source", "# the UCI mirror", "# reviewed 2026-11"):
        assert comment in text
    assert text.rstrip().endswith("# end of the reviewed policy")  # the new signer lands above it
    assert "version: 2" in text and str(tmp_path) not in text  # no absolute path of this machine
    assert (project / "keys" / "garments.pub").read_bytes() == (tmp_path / "vendor.pub").read_bytes()
    loaded = load_policy(policy)
    assert loaded.version == 2 and len(loaded.source("garments").signers.rules) == 1
    assert len(loaded.source("tables").signers.rules) == 1
    before = policy.read_bytes()
    assert main(["policy", "add", str(policy), "garments", "--key", str(tmp_path / "vendor.pub")]) == 0
    assert "nothing changed" in capsys.readouterr().out and policy.read_bytes() == before
