"""A missing release policy is a usage error that says how to create one (not a bare file-not-found)."""

from pathlib import Path

import pytest

from integrity.errors import UsageError
from integrity.release.steps import load_release_policy


def test_a_missing_release_policy_says_how_to_create_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAIRN_RELEASE_POLICY", raising=False)
    monkeypatch.delenv("CAIRN_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        load_release_policy(tmp_path / "home")
    assert caught.value.exit_code == 2 and "no release policy" in caught.value.reason
    assert "cairn policy add" in caught.value.diagnostics()
