"""The cairn command line: exit codes (0 ok, 1 rejected, 2 usage/input), JSON output and records."""

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from integrity import cli
from integrity.trust.methods.key import KeySigner
from integrity.trust.signing import sign_artifact
from tests.support.pki import TestPKI


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def signed(model_dir: Path, pki: TestPKI) -> tuple[Path, Path, Path]:
    private, public, _ = pki.key_pair()
    sign_artifact(model_dir, KeySigner.from_file(private))
    return model_dir, private, public


def test_hash_file_prints_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    target.write_bytes(b"hello\n")
    code, out, _ = run(capsys, "hash", target)
    assert code == 0
    assert out.split()[0] == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"


def test_hash_directory_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hash", model_dir, "--json", "--shard-size", "4096")
    data = json.loads(out)
    assert code == 0
    assert data["serialization"]["method"] == "shards"
    assert data["resources"][0]["name"] == "config.json:0:15"


def test_verify_ok_json_and_record(signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, public = signed
    record = tmp_path / "record.json"
    code, out, _ = run(capsys, "verify", root, "--key", public, "--json", "--record", record)
    assert code == 0
    assert json.loads(out)["result"] == "verified"
    statement = json.loads(record.read_text())
    assert statement["predicate"]["result"] == "passed"
    assert statement["predicate"]["method"] == "key"
    assert statement["subject"][0]["digest"]["sha256"] == json.loads(out)["digest"]["sha256"]


def test_verify_rejection_exits_1_and_records_failure(
    signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _, public = signed
    (root / "weights.bin").write_bytes(b"tampered")
    record = tmp_path / "record.json"
    code, _out, err = run(capsys, "verify", root, "--key", public, "--record", record)
    assert code == 1
    assert "ManifestMismatchError" in err and "weights.bin" in err and str(root) in err
    assert json.loads(record.read_text())["predicate"]["error"]["kind"] == "manifest-mismatch"


def test_verify_json_rejection(signed, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, public = signed
    (root / "config.json").unlink()
    code, out, _ = run(capsys, "verify", root, "--key", public, "--json")
    assert code == 1
    assert json.loads(out) | {"reason": ""} == {
        "result": "rejected", "error": "ManifestMismatchError", "kind": "manifest-mismatch",
        "artifact": str(root), "reason": "",
    }


@pytest.mark.parametrize(
    "args",
    [
        ("--identity", "someone"),  # identity without issuer: never 'any issuer'
        ("--issuer", "https://issuer"),  # issuer without identity
        (),  # no signer at all
        ("--source", "x"),  # source without policy
    ],
)
def test_verify_usage_errors_exit_2(signed, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    root, _, _ = signed
    code, _, err = run(capsys, "verify", root, *args)
    assert code == 2
    assert err


def test_verify_with_policy(signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, public = signed
    code, out, _ = run(capsys, "key", "fingerprint", public)
    fingerprint = out.strip()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f'version: 3\nsources:\n  m:\n    signers:\n      - key: {{fingerprint: "{fingerprint}", public_key: "{public}"}}\n'
    )
    code, out, _ = run(capsys, "verify", root, "--policy", policy, "--source", "m")
    assert code == 0 and "policy v3" in out
    code, _, err = run(capsys, "verify", root, "--policy", policy, "--source", "other")
    assert code == 2 and "not in the trust policy" in err
    policy.write_text(policy.read_text() + "    surprise: true\n")
    code, _, err = run(capsys, "verify", root, "--policy", policy, "--source", "m")
    assert code == 2 and "unknown field" in err


def test_policy_check_prints_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nsources:\n  empty:\n    signers: []\n")
    code, out, _ = run(capsys, "policy", "check", policy)
    assert code == 0 and "sha256:" in out and "NO SIGNERS" in out


def test_sign_with_certificate_and_keygen(tmp_path: Path, pki: TestPKI, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "key", "generate", "--out", tmp_path / "pub", "--json")
    assert code == 0 and json.loads(out)["fingerprint"].startswith("sha256:")
    assert stat.S_IMODE((tmp_path / "pub.key").stat().st_mode) == 0o600
    code, _, err = run(capsys, "key", "generate", "--out", tmp_path / "pub")
    assert code == 2 and "--force" in err
    ca_key, ca_cert, ca_pem = pki.ca()
    issued = pki.leaf(ca_key, ca_cert, "ml@vendor.example")
    artifact = tmp_path / "w.bin"
    artifact.write_bytes(os.urandom(100))
    code, _, _ = run(capsys, "sign", artifact, "--key", issued.key, "--certificate", issued.certificate)
    assert code == 0
    code, _, _ = run(capsys, "verify", artifact, "--ca", ca_pem, "--identity", "ml@vendor.example")
    assert code == 0
    code, _, err = run(capsys, "verify", artifact, "--ca", ca_pem, "--identity", "boss@vendor.example")
    assert code == 1 and "IdentityMismatchError" in err


def test_sign_without_method_is_usage_error(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sign", model_dir)
    assert code == 2 and "choose a signing method" in err


def test_unreadable_file_is_an_input_error(signed) -> None:
    """Exit 2 naming the file. Root reads everything, so as root the check runs as 'nobody'."""
    _root, _, _public = signed
    folder = Path(tempfile.mkdtemp(prefix="cairn-unreadable-"))
    try:
        folder.chmod(0o755)
        target = folder / "secret.bin"
        target.write_bytes(b"x" * 10)
        target.chmod(0)
        if os.geteuid() != 0:
            assert cli.main(["hash", str(target)]) == 2
            return
        pid = os.fork()
        if pid == 0:  # child: drop privileges, then run the CLI in-process
            code = 99
            try:
                os.setgid(65534)
                os.setuid(65534)
                code = cli.main(["hash", str(target)])
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 2
    finally:
        target.chmod(0o600)
        target.unlink()
        folder.rmdir()


def test_version_and_key_generate_into_a_new_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from integrity import __version__

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and f"cairn {__version__}" in capsys.readouterr().out
    assert cli.main(["key", "generate", "--out", str(tmp_path / "new" / "folder" / "k")]) == 0
    assert (tmp_path / "new" / "folder" / "k.key").is_file() and (tmp_path / "new" / "folder" / "k.pub").is_file()
