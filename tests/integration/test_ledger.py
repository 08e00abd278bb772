"""The transparency ledger: RFC 9162 proofs, signed tree heads, and detection of edited,
removed or reordered history, on the local store and on S3 (moto on loopback)."""

import json
import threading
from pathlib import Path

import pytest

from integrity.ledger import (
    Ledger,
    LedgerError,
    consistency_proof,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from integrity.storage import open_store
from integrity.trust.signing import generate_key_pair
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401


def test_proofs_verify_for_every_size_and_index() -> None:
    leaves = [leaf_hash(str(i).encode()) for i in range(33)]
    for size in range(1, len(leaves) + 1):
        root = merkle_root(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(index, leaves[:size])
            assert verify_inclusion(index, size, leaves[index], proof, root)
            assert not verify_inclusion(index, size, leaf_hash(b"other"), proof, root)
        for old in range(1, size + 1):
            proof = consistency_proof(old, leaves[:size])
            assert verify_consistency(old, size, merkle_root(leaves[:old]), root, proof), (old, size)
            if old < size:
                assert not verify_consistency(old, size, leaf_hash(b"forged"), root, proof)


def test_the_compact_range_gives_the_merkle_root_at_every_size() -> None:
    leaves = [leaf_hash(str(i).encode()) for i in range(70)]
    frontier: list[bytes] = []
    assert frontier_root(frontier) == merkle_root([])
    for size, leaf in enumerate(leaves):
        frontier = frontier_push(frontier, size, leaf)
        assert len(frontier) == bin(size + 1).count("1")
        assert frontier_root(frontier) == merkle_root(leaves[: size + 1]), size + 1


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    generate_key_pair(private, public)
    return private, public


def _ledger(store, keys) -> Ledger:
    return Ledger(store, private_key=keys[0], public_key=keys[1])


def test_append_verify_and_prove(tmp_path: Path, keys) -> None:
    ledger = _ledger(open_store(tmp_path / "store"), keys)
    for i in range(5):
        index, head = ledger.append("verification", {"source": f"s{i}", "digest": "sha256:" + "ab" * 32})
        assert index == i and head.size == i + 1
    report = ledger.verify()
    assert report.size == 5 and report.heads_checked == 5
    proof = ledger.prove_inclusion(3)
    assert verify_inclusion(3, 5, bytes.fromhex(proof["leaf"]), [bytes.fromhex(p) for p in proof["proof"]],
                            bytes.fromhex(proof["root"]))


def _entry_path(store_root: Path, index: int) -> Path:
    return store_root / "ledger" / "entries" / f"{index:012d}.json"


@pytest.mark.parametrize("attack", ["edit", "remove", "reorder", "rewrite-consistently", "unsigned-append"])
def test_tampering_is_detected(tmp_path: Path, keys, attack: str) -> None:
    root = tmp_path / "store"
    ledger = _ledger(open_store(root), keys)
    for i in range(4):
        ledger.append("attestation", {"n": i})
    if attack == "edit":
        path = _entry_path(root, 1)
        entry = json.loads(path.read_text())
        entry["data"]["n"] = 99
        path.chmod(0o644)
        path.write_text(json.dumps(entry))
        message = "entry 1 was edited"
    elif attack == "remove":
        _entry_path(root, 3).unlink()
        message = "only 3 exist"
    elif attack == "reorder":
        a, b = _entry_path(root, 1), _entry_path(root, 2)
        first, second = a.read_text(), b.read_text()
        a.chmod(0o644)
        b.chmod(0o644)
        a.write_text(second)
        b.write_text(first)
        message = "reordered"
    elif attack == "rewrite-consistently":
        # Edit an entry AND recompute its digest: the signed tree heads still catch it.
        path = _entry_path(root, 0)
        entry = json.loads(path.read_text())
        entry["data"]["n"] = 42
        import hashlib

        entry["digest"] = "sha256:" + hashlib.sha256(
            json.dumps(entry["data"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        path.chmod(0o644)
        path.write_text(json.dumps(entry))
        message = "history changed"
    else:
        Ledger(open_store(root)).store.backend.put_bytes(
            "ledger/entries/000000000004.json",
            json.dumps({"index": 4, "kind": "x", "digest": "sha256:" + "00" * 32, "data": {}}).encode())
        message = "entry 4 was edited"  # appended behind the ledger's back, with a made-up digest
    with pytest.raises(LedgerError, match=message):
        ledger.verify()


def test_a_head_signed_by_another_key_is_refused(tmp_path: Path, keys) -> None:
    ledger = _ledger(open_store(tmp_path / "store"), keys)
    ledger.append("x", {"a": 1})
    other = tmp_path / "other.key", tmp_path / "other.pub"
    generate_key_pair(*other)
    with pytest.raises(LedgerError, match="not the pinned key"):
        Ledger(ledger.store, public_key=other[1]).verify()


def test_concurrent_appends_never_share_an_index(tmp_path: Path, keys) -> None:
    ledger = _ledger(open_store(tmp_path / "store"), keys)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                _ledger(open_store(tmp_path / "store"), keys).append("x", {"worker": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [e["index"] for e in ledger.entries()] == list(range(20))
    # Heads signed concurrently may land out of order; one more head covers everything.
    ledger.sign_head()
    assert ledger.verify().size == 20


def test_ledger_on_s3(keys, s3_bucket: S3Bucket) -> None:  # noqa: F811
    ledger = _ledger(open_store(f"{s3_bucket.url}/cairn"), keys)
    for i in range(3):
        ledger.append("release", {"version": i})
    assert ledger.verify().size == 3
    key = "cairn/ledger/entries/000000000001.json"
    entry = json.loads(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read())
    entry["data"]["version"] = 7
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key, Body=json.dumps(entry).encode())
    with pytest.raises(LedgerError, match="entry 1 was edited"):
        ledger.verify()


def test_ledger_cli(tmp_path: Path, keys, capsys: pytest.CaptureFixture[str]) -> None:
    from integrity.cli import main

    store = tmp_path / "store"
    ledger = _ledger(open_store(store), keys)
    for i in range(3):
        ledger.append("x", {"i": i})
    assert main(["ledger", "verify", "--store", str(store), "--ledger-key", str(keys[1])]) == 0
    assert "3 entries" in capsys.readouterr().out
    assert main(["ledger", "prove", "2", "--store", str(store), "--ledger-key", str(keys[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 3
    _entry_path(store, 2).unlink()
    assert main(["ledger", "verify", "--store", str(store), "--ledger-key", str(keys[1])]) == 1
    assert "LedgerError" in capsys.readouterr().err


def test_a_new_head_extends_the_signed_history_without_rereading_it(tmp_path: Path, keys) -> None:
    """Signing reads only entries past the last trusted head; an old entry edited in the store is not
    folded into the next head (which would bless the edit) and is still caught by verify()."""
    root = tmp_path / "store"
    ledger = _ledger(open_store(root), keys)
    for i in range(6):
        ledger.append("verification", {"n": i})
    head_file = json.loads((root / "ledger" / "heads" / f"{6:012d}.json").read_text())
    assert len(head_file["frontier"]) == 2  # 6 = 4 + 2
    entry = _entry_path(root, 2)
    original = entry.read_bytes()
    edited = json.loads(original)
    edited["data"] = {"n": 99}
    entry.write_text(json.dumps(edited))
    _, head = ledger.append("verification", {"n": 6})
    entry.write_bytes(original)
    assert head.size == 7 and ledger.verify().root == head.root  # the head covers the true history
    entry.write_text(json.dumps(edited))
    with pytest.raises(LedgerError, match="entry 2 was edited"):
        ledger.verify()


def test_a_forged_frontier_is_not_trusted(tmp_path: Path, keys) -> None:
    root = tmp_path / "store"
    ledger = _ledger(open_store(root), keys)
    for i in range(3):
        ledger.append("verification", {"n": i})
    head_path = root / "ledger" / "heads" / f"{3:012d}.json"
    stored = json.loads(head_path.read_text())
    stored["frontier"] = [leaf_hash(b"forged").hex(), leaf_hash(b"forged too").hex()]
    head_path.write_text(json.dumps(stored))
    ledger.append("verification", {"n": 3})  # falls back to the heads before, or to every entry
    assert ledger.verify().size == 4
