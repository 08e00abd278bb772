"""Shared fixtures: keys, a test PKI, signed example artifacts and the shared Sigstore bundles."""

import os
from pathlib import Path

import pytest

from tests.support.pki import TestPKI

REPO = Path(__file__).resolve().parent.parent
SHARED_SIGSTORE = Path(os.environ.get("CAIRN_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures" / "sigstore"))


@pytest.fixture(scope="session")
def shared_sigstore() -> Path:
    """Real third-party Sigstore bundles beside the repository (skips where absent)."""
    if not (SHARED_SIGSTORE / "README.md").is_file():
        pytest.skip(f"real Sigstore fixtures not found at {SHARED_SIGSTORE} (../shared is absent)")
    return SHARED_SIGSTORE


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: the suite runs two pytest workers on two cores, and torch's
    own threads would oversubscribe them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model-like directory: weights, a config, a nested tokenizer file."""
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(70_000))
    (root / "config.json").write_text('{"hidden": 16}\n')
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is marked ``integration`` (real servers, browser, wheel, pipeline):
    ``scripts/test.sh -m "not integration"`` is the fast inner loop."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(integration):
            item.add_marker(pytest.mark.integration)
