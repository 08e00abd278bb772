"""Real third-party Sigstore bundles, verified offline against the pinned trusted roots."""

import shutil
from pathlib import Path

import pytest

from integrity.errors import (
    DigestMismatchError,
    IdentityMismatchError,
    ManifestMismatchError,
    SignatureError,
    VerificationError,
)
from integrity.trust.policy import SigstoreIdentity
from integrity.trust.verifying import verify_artifact

WHEEL_ID = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GITHUB = "https://token.actions.githubusercontent.com"
IBM_ID, IBM_ISSUER = "stefanb@us.ibm.com", "https://sigstore.verify.ibm.com/oauth2"
STAGING_ID, STAGING_ISSUER = "william@yossarian.net", "https://github.com/login/oauth"


@pytest.fixture
def wheel(shared_sigstore: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = shared_sigstore / "prod-wheel"
    target = tmp_path / "bundle_v3_github.whl"
    shutil.copyfile(folder / target.name, target)
    return target, folder / "bundle_v3_github.whl.sigstore"


@pytest.fixture
def model_dir_copy(shared_sigstore: Path, tmp_path: Path) -> Path:
    target = tmp_path / "prod-model-dir"
    shutil.copytree(shared_sigstore / "prod-model-dir", target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (TUF, Rekor) fails the test instead of hanging."""
    import socket

    real = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            raise AssertionError(f"network access attempted to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_production_wheel_bundle_verifies_offline(wheel) -> None:
    artifact, bundle = wheel
    result = verify_artifact(artifact, SigstoreIdentity(WHEEL_ID, GITHUB), bundle=bundle)
    assert result.evidence.identity == WHEEL_ID
    assert result.evidence.issuer == GITHUB
    assert result.statement_kind == "message-signature"


@pytest.mark.parametrize(
    ("identity", "issuer", "needle"),
    [
        (WHEEL_ID.replace("v0.1.2", "v0.1.3"), GITHUB, "identity"),
        (WHEEL_ID, "https://accounts.google.com", "issuer"),
    ],
)
def test_production_wheel_rejects_other_identity_or_issuer(wheel, identity: str, issuer: str, needle: str) -> None:
    artifact, bundle = wheel
    with pytest.raises(IdentityMismatchError, match=needle):
        verify_artifact(artifact, SigstoreIdentity(identity, issuer), bundle=bundle)


def test_production_wheel_rejects_changed_byte(wheel) -> None:
    artifact, bundle = wheel
    data = bytearray(artifact.read_bytes())
    data[100] ^= 1
    artifact.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        verify_artifact(artifact, SigstoreIdentity(WHEEL_ID, GITHUB), bundle=bundle)


def test_production_bundle_fails_against_staging_root(wheel) -> None:
    artifact, bundle = wheel
    with pytest.raises(VerificationError):
        verify_artifact(artifact, SigstoreIdentity(WHEEL_ID, GITHUB, "staging"), bundle=bundle)


def test_production_model_directory_verifies_offline(model_dir_copy: Path) -> None:
    result = verify_artifact(model_dir_copy, SigstoreIdentity(IBM_ID, IBM_ISSUER))
    assert result.statement_kind == "model-signing"
    assert sorted(result.manifest.files) == ["signme-1", "signme-2"]  # ignore-me and model.sig left out


@pytest.mark.parametrize(
    ("identity", "issuer"), [("stefanb@us.ibm.co", IBM_ISSUER), (IBM_ID, "https://github.com/login/oauth")]
)
def test_production_model_directory_rejects_other_signers(model_dir_copy: Path, identity: str, issuer: str) -> None:
    with pytest.raises(IdentityMismatchError):
        verify_artifact(model_dir_copy, SigstoreIdentity(identity, issuer))


@pytest.mark.parametrize("change", ["byte", "added", "removed", "renamed"])
def test_production_model_directory_detects_changes(model_dir_copy: Path, change: str) -> None:
    if change == "byte":
        (model_dir_copy / "signme-1").write_bytes(b"signme-X")
    elif change == "added":
        (model_dir_copy / "new-file").write_text("x")
    elif change == "removed":
        (model_dir_copy / "signme-2").unlink()
    else:
        (model_dir_copy / "signme-2").rename(model_dir_copy / "signme-3")
    with pytest.raises(ManifestMismatchError):
        verify_artifact(model_dir_copy, SigstoreIdentity(IBM_ID, IBM_ISSUER))


def test_ignored_file_may_change(model_dir_copy: Path) -> None:
    (model_dir_copy / "ignore-me").write_text("not covered by the signature")
    assert verify_artifact(model_dir_copy, SigstoreIdentity(IBM_ID, IBM_ISSUER)).kind == "directory"


def test_staging_bundle_verifies_with_staging_root(shared_sigstore: Path, tmp_path: Path) -> None:
    folder = shared_sigstore / "staging-blob"
    artifact = tmp_path / "bundle_v3.txt"
    shutil.copyfile(folder / artifact.name, artifact)
    bundle = folder / "bundle_v3.txt.sigstore"
    rule = SigstoreIdentity(STAGING_ID, STAGING_ISSUER, "staging")
    assert verify_artifact(artifact, rule, bundle=bundle).evidence.trusted_root == "staging"
    with pytest.raises(VerificationError):  # not valid under the production root
        verify_artifact(artifact, SigstoreIdentity(STAGING_ID, STAGING_ISSUER), bundle=bundle)
    with pytest.raises(IdentityMismatchError):
        verify_artifact(artifact, SigstoreIdentity("someone@else.net", STAGING_ISSUER, "staging"), bundle=bundle)
    artifact.write_bytes(artifact.read_bytes() + b"!")
    with pytest.raises((DigestMismatchError, SignatureError)):
        verify_artifact(artifact, rule, bundle=bundle)


def test_model_signing_cli_agrees_on_the_model_directory(model_dir_copy: Path, shared_sigstore: Path) -> None:
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "model_signing"
    trust = shared_sigstore / "trust" / "production_client_trust_config.sigstore-4.5.1.json"
    proc = subprocess.run(
        [cli, "verify", "sigstore", model_dir_copy, "--signature", model_dir_copy / "model.sig",
         "--identity", IBM_ID, "--identity_provider", IBM_ISSUER, "--trust_config", trust,
         "--ignore-paths", model_dir_copy / "ignore-me"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
