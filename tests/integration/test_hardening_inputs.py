"""Issue 12: files Cairn reads are strict (duplicate keys, aliases, size, FIFOs), the ledger knows what it
cannot rule out, corrupted store objects are found and healed, and exit codes say what happened."""

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from integrity.errors import ArtifactReadError, PolicyError
from integrity.intake.catalog import CatalogError, parse_catalog
from integrity.ledger import Checkpoint, Ledger, LedgerError
from integrity.release.revocation import revoke
from integrity.release.spec import ReleaseSpecError, parse_release_spec
from integrity.safeio import InputFormatError, parse_json, parse_yaml
from integrity.storage import blob_key, open_store
from integrity.storage.check import verify_store
from integrity.trust.methods.key import KeySigner
from integrity.trust.policy import load_policy, parse_policy
from integrity.trust.signing import key_fingerprint, load_public_key
from tests.support.distribution import make_release_key
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

CLI = [sys.executable, "-m", "integrity.cli"]


def _cairn(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


# -- 6. duplicate keys ---------------------------------------------------------------------------------


def test_a_second_entry_for_a_source_does_not_replace_the_reviewed_one(tmp_path: Path) -> None:
    _, public = make_release_key(tmp_path)
    fingerprint = key_fingerprint(load_public_key(public))
    reviewed = (f"version: 1\nsources:\n  vendor:\n    signers:\n      - key: {{public_key: {public}, "
                f"fingerprint: '{fingerprint}'}}\n")
    appended = reviewed + "  vendor:\n    signers:\n      - key: {public_key: /tmp/attacker.pub}\n"
    assert parse_policy(reviewed.encode()).source("vendor")
    with pytest.raises(PolicyError, match="duplicate key 'vendor'"):
        parse_policy(appended.encode())
    catalog = ("version: 1\npolicy: policy.yaml\nsources:\n  digits:\n    kind: dataset\n    uri: drops/digits\n"
               "    format: npy\n  digits:\n    kind: dataset\n    uri: s3://attacker/digits\n    format: npy\n")
    with pytest.raises(CatalogError, match="duplicate key 'digits'"):
        parse_catalog(catalog.encode(), root=tmp_path)
    with pytest.raises(ReleaseSpecError, match="duplicate key"):
        parse_release_spec(b"version: 1\nmodel: a\nmodel: b\n")
    with pytest.raises(InputFormatError, match="duplicate key 'sha256'"):
        parse_json(b'{"sha256": "aa", "sha256": "bb"}')


# -- 7. YAML aliases and sizes ---------------------------------------------------------------------------


def test_yaml_alias_bombs_and_huge_files_are_refused_at_once(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    bomb = ("version: 1\nsources: {}\n" + "\n".join(lines) + "\n").encode()
    assert len(bomb) < 2000
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r"aliases are refused|anchors are refused"):
        parse_policy(bomb)
    with pytest.raises(InputFormatError, match="over the"):
        parse_yaml(b"version: 1\nsources: {}\n" + b"# padding\n" * 600_000)
    assert time.monotonic() - started < 30  # bounded; the old loader ran until killed
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(b"version: 1\nsources: {}\n" + b"#" * (2 << 20))
    with pytest.raises(PolicyError, match="over the"):
        load_policy(policy)


# -- 9. FIFOs and servers that never answer ----------------------------------------------------------------


def test_fifos_are_refused_as_bundle_key_and_policy(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="FIFO"):
        load_policy(fifo)
    with pytest.raises(ArtifactReadError, match="FIFO"):
        load_public_key(fifo)
    _, public = make_release_key(tmp_path)
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"weights")
    for args in (("--signature", str(fifo), "--key", str(public)), ("--key", str(fifo))):
        run = _cairn("verify", str(artifact), *args, timeout=60)
        assert run.returncode == 2, (args, run.stderr)
        assert "FIFO" in run.stderr and "unexpected" not in run.stderr


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP server on loopback that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_pull_from_an_s3_endpoint_that_never_answers_times_out(tmp_path: Path) -> None:
    server, port = _silent_server()
    try:
        _, public = make_release_key(tmp_path)
        started = time.monotonic()
        run = _cairn("pull", "m@1.0.0", "--dest", str(tmp_path / "out"), "--store", "s3://bucket/x",
                     "--key", str(public), "--state", str(tmp_path / "state.json"), "--no-progress",
                     env={"CAIRN_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "CAIRN_S3_TIMEOUT": "1",
                          "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"},
                     timeout=120)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert run.returncode == 2, run.stderr
    assert "timed out" in run.stderr and "did not answer within 1 s" in run.stderr
    assert elapsed < 60 and not (tmp_path / "out").exists()


# -- 8. ledger truncation, deletion, missing store, corrupted entries --------------------------------------


def _ledger(tmp_path: Path, entries: int = 6) -> tuple[Path, Path]:
    from integrity.ledger.transparency import open_ledger

    store = open_store(tmp_path / "store")
    ledger = open_ledger(store, home=tmp_path / "home")
    for index in range(entries):
        ledger.append("test", {"n": index})
    return tmp_path / "store", tmp_path / "home" / "keys" / "ledger.pub"


def test_ledger_truncation_is_caught_against_the_clients_checkpoint(tmp_path: Path) -> None:
    store, public = _ledger(tmp_path)
    checkpoint = tmp_path / "checkpoint.json"
    first = _cairn("ledger", "verify", "--store", str(store), "--ledger-key", str(public), "--checkpoint",
                   str(checkpoint))
    assert first.returncode == 0 and "CANNOT RULE OUT" in first.stdout and "first verification" in first.stdout
    assert Checkpoint(checkpoint).load().size == 6  # type: ignore[union-attr]
    for index in (4, 5):  # the newest entries and their heads, removed together
        (store / "ledger" / "entries" / f"{index:012d}.json").unlink()
        (store / "ledger" / "heads" / f"{index + 1:012d}.json").unlink()
    assert Ledger(open_store(store), public_key=public).verify().size == 4  # alone, it still verifies
    run = _cairn("ledger", "verify", "--store", str(store), "--ledger-key", str(public), "--checkpoint",
                 str(checkpoint))
    assert run.returncode == 1 and "truncation" in run.stderr, run.stderr


def test_a_deleted_ledger_or_a_missing_store_is_an_error(tmp_path: Path) -> None:
    store, public = _ledger(tmp_path)
    missing = _cairn("ledger", "verify", "--store", str(tmp_path / "nowhere"), "--ledger-key", str(public))
    assert missing.returncode == 2 and "no store at this path" in missing.stderr
    import shutil

    shutil.rmtree(store / "ledger")
    deleted = _cairn("ledger", "verify", "--store", str(store), "--ledger-key", str(public), "--checkpoint",
                     str(tmp_path / "cp.json"))
    assert deleted.returncode == 1 and "no ledger here" in deleted.stderr


def test_random_byte_edits_give_a_ledger_error_never_an_unexpected_one(tmp_path: Path) -> None:
    store, public = _ledger(tmp_path, entries=4)
    files = sorted((store / "ledger").rglob("*.json"))
    rng = random.Random(12)
    caught = 0
    for _trial in range(50):
        victim = rng.choice(files)
        original = victim.read_bytes()
        data = bytearray(original)
        data[rng.randrange(len(data))] = rng.randrange(256)
        victim.chmod(0o644)
        victim.write_bytes(bytes(data))
        try:
            Ledger(open_store(store), public_key=public).verify()
        except LedgerError:
            caught += 1  # any other exception type fails the test
        finally:
            victim.write_bytes(original)
    assert caught >= 40  # edits of a head's unsigned frontier hint are the only ones verify may ignore


# -- 10. corrupted blobs are found, set aside and healed ----------------------------------------------------


def test_store_verify_finds_sets_aside_and_a_rewrite_heals(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    good = tmp_path / "weights.bin"
    good.write_bytes(b"real weights" * 1000)
    stored = store.put_trusted(good)
    path = tmp_path / "store" / blob_key("trusted", stored.digest)
    path.chmod(0o644)
    path.write_bytes(b"rotten" * 10)
    run = _cairn("store", "verify", "--store", str(tmp_path / "store"), "--json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert not report["ok"] and report["problems"][0]["digest"] == f"sha256:{stored.digest}"
    assert "moved_to" in report["problems"][0] and not path.exists()
    assert verify_store(store).ok  # set aside: the trusted area is clean again
    store.put_trusted(good)  # re-ingest writes the good bytes
    assert path.read_bytes() == good.read_bytes()
    path.chmod(0o644)
    path.write_bytes(b"rotten again")
    store.put_trusted(good)  # a write over a corrupted address heals it directly
    assert path.read_bytes() == good.read_bytes() and store.verify(stored.digest) == good.stat().st_size


# -- 11. exit codes -----------------------------------------------------------------------------------------


def test_a_revocation_bundle_is_not_a_signature(tmp_path: Path) -> None:
    private, public = make_release_key(tmp_path)
    store = open_store(tmp_path / "store")
    revocation = revoke(store, KeySigner.from_file(private), "release", "m@1.0.0", "test")
    artifact = tmp_path / "m.bin"
    artifact.write_text("m@1.0.0")  # the revocation's subject digest is the digest of this text
    run = _cairn("verify", str(artifact), "--signature", str(tmp_path / "store" / revocation.record_key), "--key",
                 str(public))
    assert run.returncode == 1 and "not a publisher's signature" in run.stderr, run.stderr


def test_an_os_error_is_an_input_error_with_its_reason(tmp_path: Path) -> None:
    _, public = make_release_key(tmp_path)
    folder = tmp_path / "bundle-dir"
    folder.mkdir()
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x")
    run = _cairn("verify", str(artifact), "--signature", str(folder), "--key", str(public))
    assert run.returncode == 2 and "unexpected" not in run.stderr, run.stderr


def test_store_verify_on_s3_sets_aside_and_heals(tmp_path: Path, s3_bucket: S3Bucket) -> None:  # noqa: F811
    store = open_store(f"{s3_bucket.url}/st")
    good = tmp_path / "w.bin"
    good.write_bytes(b"weights" * 500)
    stored = store.put_trusted(good)
    key = f"st/{blob_key('trusted', stored.digest)}"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"rotten")
    report = verify_store(store)
    assert not report.ok and "moved_to" in report.problems[0]
    assert report.problems[0]["moved_to"].startswith(f"s3://{s3_bucket.name}/st/corrupt/")
    assert verify_store(store).ok
    store.put_trusted(good)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=b"rotten again")
    store.put_trusted(good)  # heals the address directly
    assert s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read() == good.read_bytes()
