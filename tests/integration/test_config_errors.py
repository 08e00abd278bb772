"""Configuration mistakes are usage errors (exit 2) that `cairn catalog check` finds, never a vendor's rejection."""

from pathlib import Path

import pytest

from integrity.cli import main
from integrity.storage import open_store
from pipelines.staging import stage_demo

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "integrity" / "data" / "catalogs" / "demo.yaml"


def test_a_typo_in_the_policy_stops_with_exit_2_and_blames_no_vendor(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    home = stage_demo(tmp_path / "home")
    common = ["--source", "breast-cancer", "--catalog", str(CATALOG), "--home", str(home)]
    assert main(["catalog", "check", str(CATALOG), "--home", str(home)]) == 0
    assert main(["ingest", "fetch", *common]) == 0
    policy = home / "policy.yaml"
    policy.write_text(policy.read_text().replace("signers:", "signerz:", 1))
    capsys.readouterr()
    assert main(["catalog", "check", str(CATALOG), "--home", str(home)]) == 2
    assert "signerz" in capsys.readouterr().err
    assert main(["ingest", "verify", *common]) == 2
    assert "signerz" in capsys.readouterr().err
    store = open_store(home / "store")
    assert store.list_records("verifications") == []  # nothing recorded against the vendor
    assert store.list_quarantine() == []
