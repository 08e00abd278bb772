"""The artifact store against real backends: a local directory and S3 (moto's server)."""

import hashlib
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from integrity.errors import (
    ArtifactReadError,
    DigestMismatchError,
    ManifestMismatchError,
    StoreError,
    UnsafePathError,
    UsageError,
)
from integrity.storage import (
    ArtifactStore,
    LocalBackend,
    MissingObjectError,
    S3Backend,
    blob_key,
    open_store,
    tree_key,
)
from integrity.trust.hashing import HashingConfig, hash_artifact, sha256_file
from tests.support.s3server import S3Bucket, s3_bucket, s3_server  # noqa: F401

MIB = 1024 * 1024


class Harness:
    """A store plus a way to change its bytes behind its back (what an attacker would do)."""

    def __init__(self, store: ArtifactStore, tamper: Callable[[str, bytes], None], bucket: S3Bucket | None) -> None:
        self.store = store
        self.tamper = tamper
        self.bucket = bucket

    def list_keys(self, prefix: str = "") -> list[str]:
        return list(self.store.backend.list_keys(prefix))


def _local(tmp_path: Path) -> Harness:
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store.backend, LocalBackend)
    backend = store.backend

    def tamper(key: str, data: bytes) -> None:
        path = Path(backend.describe(key))
        os.chmod(path, 0o644)
        path.write_bytes(data)

    return Harness(store, tamper, None)


def _s3(bucket: S3Bucket, **options: Any) -> Harness:
    store = open_store(f"s3://{bucket.name}/cairn/test", **options)
    assert isinstance(store.backend, S3Backend)
    backend = store.backend

    def tamper(key: str, data: bytes) -> None:
        bucket.client.put_object(Bucket=bucket.name, Key=backend.full_key(key), Body=data)

    return Harness(store, tamper, bucket)


@pytest.fixture(params=["local", "s3"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "local":
        return _local(tmp_path)
    return _s3(request.getfixturevalue("s3_bucket"))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _model_dir(root: Path) -> Path:
    _write(root / "weights.bin", os.urandom(70_000))
    _write(root / "config.json", b'{"hidden": 16}\n')
    _write(root / "tokenizer" / "vocab.txt", b"a\nb\nc\n")
    _write(root / "empty.txt", b"")
    return root


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- files ----------------------------------------------------------------------------------


def test_put_get_round_trip(h: Harness, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    source = _write(tmp_path / "in" / "model.bin", data)
    digest = hashlib.sha256(data).hexdigest()

    stored = h.store.put_trusted(source)

    assert stored.digest == digest == sha256_file(source)
    assert stored.key == f"trusted/sha256/{digest[:2]}/{digest}"
    assert stored.created and stored.kind == "file" and stored.size == len(data)
    assert stored.location.endswith(stored.key)
    assert h.store.exists(digest)
    assert h.store.list_objects() == [digest]
    out = h.store.get(digest, tmp_path / "out" / "copy.bin")
    assert out.read_bytes() == data
    assert h.store.verify(digest) == len(data)
    assert [p.name for p in out.parent.iterdir()] == ["copy.bin"]  # no temp files left


def test_reput_is_idempotent(h: Harness, tmp_path: Path) -> None:
    source = _write(tmp_path / "a.bin", b"same bytes")
    digest = hashlib.sha256(b"same bytes").hexdigest()
    first = h.store.put_trusted(source)
    again = h.store.put_trusted(source, f"SHA256:{digest.upper()}")
    copy = h.store.put_trusted(_write(tmp_path / "b.bin", b"same bytes"), digest)

    assert first.created and not again.created and not copy.created
    assert first.key == again.key == copy.key
    assert h.list_keys("trusted/") == [first.key]


def test_write_once_existing_address_never_changes(h: Harness, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.bin", b"the real weights")
    stored = h.store.put_trusted(good)

    # A racing or malicious writer going straight to the backend cannot replace the object.
    assert h.store.backend.put_bytes(stored.key, b"other bytes") is False
    # Nor can different content be put at that address through the store.
    evil = _write(tmp_path / "evil.bin", b"poisoned weights")
    with pytest.raises(DigestMismatchError):
        h.store.put_trusted(evil, stored.digest)

    assert h.store.backend.read_bytes(stored.key) == b"the real weights"
    assert h.store.get(stored.digest, tmp_path / "out.bin").read_bytes() == b"the real weights"
    assert h.list_keys("trusted/") == [stored.key]
    if isinstance(h.store.backend, S3Backend):
        assert h.store.backend.conditional_writes  # moto honours If-None-Match: * (no fallback)


def test_concurrent_puts_store_once(h: Harness, tmp_path: Path) -> None:
    source = _write(tmp_path / "a.bin", os.urandom(50_000))
    results: list[bool] = []
    errors: list[BaseException] = []

    def put() -> None:
        try:
            results.append(h.store.put_trusted(source).created)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert len(results) == 6 and results.count(True) <= 1  # exactly one wrote, or it raced to the same bytes
    assert h.list_keys("trusted/") == [blob_key("trusted", sha256_file(source))]


def test_expected_digest_mismatch_stores_nothing(h: Harness, tmp_path: Path) -> None:
    source = _write(tmp_path / "a.bin", b"actual content")
    wrong = hashlib.sha256(b"what was signed").hexdigest()

    with pytest.raises(DigestMismatchError) as info:
        h.store.put_trusted(source, wrong)

    assert info.value.artifact == str(source)
    assert wrong in info.value.reason and "nothing was stored" in info.value.reason
    assert h.list_keys("trusted/") == []
    assert not h.store.exists(wrong)
    if isinstance(h.store.backend, LocalBackend):
        assert list((h.store.backend.root / "tmp").iterdir()) == []


def test_tampered_object_detected_on_get(h: Harness, tmp_path: Path) -> None:
    stored = h.store.put_trusted(_write(tmp_path / "a.bin", b"original weights"))
    h.tamper(stored.key, b"tampered weights")
    dest = _write(tmp_path / "out" / "a.bin", b"previous file")

    with pytest.raises(DigestMismatchError) as info:
        h.store.get(stored.digest, dest)

    assert info.value.artifact is not None and stored.key in info.value.artifact
    assert dest.read_bytes() == b"previous file"
    assert [p.name for p in dest.parent.iterdir()] == ["a.bin"]
    with pytest.raises(DigestMismatchError):
        h.store.verify(stored.digest)
    with pytest.raises(DigestMismatchError):
        h.store.materialize(stored.digest, tmp_path / "fresh.bin")
    assert not (tmp_path / "fresh.bin").exists()


def test_missing_object(h: Harness, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(MissingObjectError):
        h.store.get(digest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert not h.store.exists(digest)
    with pytest.raises(UsageError):
        h.store.get("not-a-digest", tmp_path / "out.bin")


def test_unreadable_source(h: Harness, tmp_path: Path) -> None:
    with pytest.raises(ArtifactReadError) as info:
        h.store.put_trusted(tmp_path / "does-not-exist.bin")
    assert info.value.artifact == str(tmp_path / "does-not-exist.bin")

    if os.path.exists("/proc/self/mem"):
        # A regular file whose read() fails with EIO even for root: the I/O error path.
        with pytest.raises(ArtifactReadError):
            h.store.put_trusted("/proc/self/mem")

    if os.geteuid() != 0:
        locked = _write(tmp_path / "locked.bin", b"secret")
        locked.chmod(0)
        with pytest.raises(ArtifactReadError):
            h.store.put_trusted(locked)

    link = tmp_path / "link.bin"
    link.symlink_to(_write(tmp_path / "target.bin", b"x"))
    with pytest.raises(UnsafePathError):
        h.store.put_trusted(link)
    assert h.list_keys("trusted/") == []


# -- directories ----------------------------------------------------------------------------


def test_tree_round_trip(h: Harness, tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model")
    manifest = hash_artifact(model, HashingConfig())

    stored = h.store.put_trusted(model)

    assert stored.kind == "tree" and stored.created
    assert stored.key == tree_key("trusted", stored.digest)
    assert dict(stored.files) == manifest.files
    assert h.store.tree_files(stored.digest) == manifest.files
    assert sorted(h.store.list_objects()) == sorted(set(manifest.files.values()))

    out = h.store.materialize(stored.digest, tmp_path / "restored" / "model")
    assert _tree_bytes(out) == _tree_bytes(model)
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # staging dir renamed away

    again = h.store.put_trusted(model, stored.digest, expected_files=manifest.files)
    assert not again.created and again.digest == stored.digest
    assert h.store.verify(stored.digest) == sum(len(b) for b in _tree_bytes(model).values())

    with pytest.raises(StoreError):  # never merges into a non-empty directory
        h.store.materialize(stored.digest, out)
    empty = tmp_path / "empty-target"
    empty.mkdir()
    assert _tree_bytes(h.store.materialize(stored.digest, empty)) == _tree_bytes(model)


def test_tree_pins_refuse_changes_and_store_nothing(h: Harness, tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model")
    verified = hash_artifact(model, HashingConfig()).files
    _write(model / "extra.py", b"import os; os.system('curl evil')\n")

    with pytest.raises(ManifestMismatchError) as info:
        h.store.put_trusted(model, expected_files=verified)
    assert info.value.added == ["extra.py"]

    with pytest.raises(DigestMismatchError):
        h.store.put_trusted(model, hashlib.sha256(b"some other tree").hexdigest())
    assert h.list_keys("trusted/") == []

    (model / "extra.py").unlink()
    _write(model / "config.json", b'{"hidden": 17}\n')
    with pytest.raises(DigestMismatchError) as changed:
        h.store.promote(model, expected_files=verified)
    assert "config.json" in changed.value.reason
    assert not any(k.startswith("trusted/trees/") for k in h.list_keys("trusted/"))

    with pytest.raises(UsageError):
        h.store.promote(model)  # promote needs a pin


def test_tampered_tree_file_detected_on_materialize(h: Harness, tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model")
    stored = h.store.put_trusted(model)
    h.tamper(blob_key("trusted", stored.files["config.json"]), b'{"hidden": 99}\n')
    dest = tmp_path / "out" / "restored"

    with pytest.raises(DigestMismatchError) as info:
        h.store.materialize(stored.digest, dest)

    assert info.value.artifact is not None and stored.files["config.json"] in info.value.artifact
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the staging directory was removed

    h.tamper(stored.key, b'{"schema":"cairn.tree/v1","files":[]}')
    with pytest.raises(DigestMismatchError):
        h.store.tree_files(stored.digest)


# -- records --------------------------------------------------------------------------------


def test_records(h: Harness) -> None:
    record = {"result": "passed", "subject": {"sha256": "ab" * 32}, "n": 3}
    key = h.store.put_record("verification", "model-a", record)

    assert key == "records/verification/model-a.json"
    assert h.store.get_record("verification", "model-a") == record
    assert h.store.put_record("verification", "model-a", dict(record)) == key  # same content: no-op
    with pytest.raises(StoreError):
        h.store.put_record("verification", "model-a", {"result": "failed"})  # write-once
    assert h.store.get_record("verification", "model-a") == record
    h.store.put_record("verification", "model-a", {"result": "failed"}, overwrite=True)
    assert h.store.get_record("verification", "model-a") == {"result": "failed"}

    h.store.put_record("verification", "model-b.v2", {"result": "passed"})
    h.store.put_record("other", "x", {})
    assert h.store.list_records("verification") == ["model-a", "model-b.v2"]
    assert h.store.list_records("nothing-here") == []

    with pytest.raises(MissingObjectError):
        h.store.get_record("verification", "absent")
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(UsageError):
            h.store.put_record("verification", bad, {})
    with pytest.raises(StoreError):
        h.store.put_record("verification", "not-json", {"when": datetime.now(UTC)})
    assert h.list_keys("trusted/") == []


# -- quarantine -----------------------------------------------------------------------------


def test_quarantine_records_reason_and_never_touches_trusted(h: Harness, tmp_path: Path) -> None:
    bad = _write(tmp_path / "poisoned.bin", b"backdoored weights")
    digest = sha256_file(bad)
    before = datetime.now(UTC)

    entry = h.store.quarantine(
        bad, "signature does not verify", source="hf:org/model", details={"kind": "bad-signature"}
    )

    assert entry.digest == digest and entry.kind == "file" and entry.stored
    assert entry.key == blob_key("quarantine", digest)
    assert entry.source == "hf:org/model" and entry.reason == "signature does not verify"
    assert before <= entry.quarantined_at <= datetime.now(UTC)
    assert entry.quarantined_at.utcoffset() == timedelta(0)
    assert h.list_keys("trusted/") == []
    assert not h.store.exists(digest)
    assert h.store.exists(digest, area="quarantine")

    raw = json.loads(h.store.backend.read_bytes(entry.record_key))
    assert raw["reason"] == "signature does not verify"
    assert raw["source"] == "hf:org/model"
    assert raw["digest"] == digest
    assert raw["details"] == {"kind": "bad-signature"}
    assert datetime.fromisoformat(raw["quarantined_at"]).utcoffset() is not None

    model = _model_dir(tmp_path / "model")
    tree_entry = h.store.quarantine(model, "unexpected file", source="s3://vendor/model", details={})
    missing = h.store.quarantine(tmp_path / "gone", "download failed", source="https://example.org/m")

    listed = h.store.list_quarantine()
    assert [e.id for e in listed] == [entry.id, tree_entry.id, missing.id]
    assert not [k for k in h.list_keys() if not k.startswith(("quarantine/", "tmp/"))]
    assert listed[0] == entry
    assert tree_entry.kind == "tree"
    assert missing.digest is None and missing.copy_error and "ArtifactReadError" in missing.copy_error
    assert h.list_keys("trusted/") == []

    copy = h.store.get(digest, tmp_path / "forensics.bin", area="quarantine")
    assert copy.read_bytes() == b"backdoored weights"
    with pytest.raises(MissingObjectError):
        h.store.get(digest, tmp_path / "never.bin")  # not in trusted
    assert not (tmp_path / "never.bin").exists()


# -- S3 specifics ---------------------------------------------------------------------------


def test_s3_multipart_for_large_objects(s3_bucket: S3Bucket, tmp_path: Path) -> None:  # noqa: F811
    h = _s3(s3_bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    backend = h.store.backend
    assert isinstance(backend, S3Backend)
    data = os.urandom(11 * MIB)
    source = _write(tmp_path / "big.bin", data)

    stored = h.store.put_trusted(source)

    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=backend.full_key(stored.key))
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert head["Metadata"]["sha256"] == stored.digest
    assert h.store.get(stored.digest, tmp_path / "out.bin").read_bytes() == data
    assert not h.store.put_trusted(source, stored.digest).created

    # A pinned digest that does not match: the upload is aborted and nothing appears.
    other = _write(tmp_path / "other.bin", os.urandom(6 * MIB))
    wrong = hashlib.sha256(b"signed").hexdigest()
    with pytest.raises(DigestMismatchError):
        h.store.put_trusted(other, wrong)
    assert not h.store.exists(wrong)
    assert h.list_keys("trusted/") == [stored.key]
    uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name)
    assert uploads.get("Uploads", []) == []


def test_s3_small_objects_use_single_put(s3_bucket: S3Bucket, tmp_path: Path) -> None:  # noqa: F811
    h = _s3(s3_bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    assert isinstance(h.store.backend, S3Backend)
    stored = h.store.put_trusted(_write(tmp_path / "small.bin", os.urandom(5 * MIB)))
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=h.store.backend.full_key(stored.key))
    assert "-" not in head["ETag"]


def test_s3_falls_back_when_conditional_writes_are_rejected(
    s3_bucket: S3Bucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Some S3-compatible services answer If-None-Match with 501; the store must still be write-once."""
    h = _s3(s3_bucket)
    backend = h.store.backend
    assert isinstance(backend, S3Backend)
    rejected: list[str] = []

    class Http:
        status_code = 501

    def refuse_condition(params: dict[str, Any], **_: Any) -> Any:
        if "If-None-Match" in params.get("headers", {}):
            rejected.append(params["url_path"])
            return Http(), {
                "Error": {"Code": "NotImplemented", "Message": "If-None-Match is not implemented"},
                "ResponseMetadata": {"HTTPStatusCode": 501},
            }
        return None

    backend.client.meta.events.register("before-call.s3.PutObject", refuse_condition)

    first = h.store.put_trusted(_write(tmp_path / "a.bin", b"weights"))
    assert rejected and not backend.conditional_writes
    assert first.created
    assert backend.put_bytes(first.key, b"other") is False
    assert not h.store.put_trusted(tmp_path / "a.bin").created
    assert h.store.get(first.digest, tmp_path / "out.bin").read_bytes() == b"weights"


# -- opening --------------------------------------------------------------------------------


def test_open_store_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAIRN_STORE", "CAIRN_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.chdir(tmp_path)

    default = open_store(None)
    assert isinstance(default.backend, LocalBackend)
    assert default.backend.root == tmp_path / ".cairn" / "store"
    assert not (tmp_path / ".cairn").exists()  # opening creates nothing

    monkeypatch.setenv("CAIRN_STORE", str(tmp_path / "from-env"))
    env = open_store()
    assert isinstance(env.backend, LocalBackend) and env.backend.root == tmp_path / "from-env"

    plain = open_store("relative/store")
    assert isinstance(plain.backend, LocalBackend) and plain.backend.root == tmp_path / "relative" / "store"
    url = open_store((tmp_path / "with space").as_uri())
    assert isinstance(url.backend, LocalBackend) and url.backend.root == tmp_path / "with space"
    assert url.url == (tmp_path / "with space").as_uri()
    assert isinstance(open_store(tmp_path / "p").backend, LocalBackend)

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-env.invalid:9000")
    s3 = open_store("s3://my-bucket/models/prod/")
    assert isinstance(s3.backend, S3Backend)
    assert (s3.backend.bucket, s3.backend.prefix) == ("my-bucket", "models/prod")
    assert s3.backend.endpoint_url == "http://aws-env.invalid:9000"
    assert s3.url == "s3://my-bucket/models/prod"
    assert s3.backend.describe(blob_key("trusted", "ab" * 32)).startswith(
        "s3://my-bucket/models/prod/trusted/sha256/ab/"
    )
    monkeypatch.setenv("CAIRN_S3_ENDPOINT_URL", "http://cairn-env.invalid:9000")
    from_env = open_store("s3://b/p")
    assert isinstance(from_env.backend, S3Backend)
    assert from_env.backend.endpoint_url == "http://cairn-env.invalid:9000"
    explicit = open_store("s3://bucket-only", endpoint_url="http://arg.invalid")
    assert isinstance(explicit.backend, S3Backend)
    assert (explicit.backend.prefix, explicit.backend.endpoint_url) == ("", "http://arg.invalid")

    for bad in ("gs://bucket/x", "s3:///no-bucket", "file://remote-host/path"):
        with pytest.raises(UsageError):
            open_store(bad)
