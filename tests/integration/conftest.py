"""Fixtures shared by the integration tests that work on the demo's real release (one build per session)."""

from pathlib import Path

import pytest

from tests.support.release_demo import ReleaseDemo, private_home, shared_release_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ReleaseDemo:
    result = shared_release_demo(tmp_path_factory)
    assert result.returncode == 0, result.output[-4000:]
    return result


@pytest.fixture
def home(demo: ReleaseDemo, tmp_path: Path) -> Path:
    """A private copy of the demo home (without the Dagster instance), so a test may break it."""
    return private_home(demo, tmp_path / "home")
