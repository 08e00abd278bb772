"""Digests and manifests: model-signing compatibility, determinism and refusal of unsafe trees."""

import json
import os
import pathlib
import socket

import pytest
from model_signing import hashing as oms_hashing
from model_signing._signing.signing import Payload

from integrity.errors import ArtifactReadError, BundleFormatError, EmptyArtifactError, UnsafePathError
from integrity.trust.hashing import HashingConfig, Manifest, hash_artifact, sha256_file
from integrity.trust.manifests import compare_manifests


def _oms_statement(path: pathlib.Path, config: oms_hashing.Config) -> dict:
    from google.protobuf import json_format

    return json.loads(json_format.MessageToJson(Payload(config.hash(path)).statement.pb))


def _tricky_tree(root: pathlib.Path) -> pathlib.Path:
    # Names whose component order differs from plain string order ('a-c' < 'a/b' as strings).
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").write_bytes(os.urandom(2500))
    (root / "a-c").write_bytes(os.urandom(10))
    (root / "empty").write_bytes(b"")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


@pytest.mark.parametrize("mode", ["files", "shards"])
def test_manifest_matches_model_signing(tmp_path: pathlib.Path, mode: str) -> None:
    root = _tricky_tree(tmp_path / "m")
    if mode == "files":
        ours = hash_artifact(root, HashingConfig()).to_statement()
        theirs = _oms_statement(root, oms_hashing.Config().use_file_serialization())
    else:
        ours = hash_artifact(root, HashingConfig().use_shards(1000)).to_statement()
        theirs = _oms_statement(root, oms_hashing.Config().use_shard_serialization(shard_size=1000))
    assert ours["subject"] == theirs["subject"]
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]
    # Parsing model-signing's own statement (shard_size arrives as a float) gives the same manifest.
    assert Manifest.from_statement(theirs).root_digest == ours["subject"][0]["digest"]["sha256"]


def test_single_file_digest_is_sha256(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "w.bin"
    target.write_bytes(b"hello\n")
    manifest = hash_artifact(target)
    assert manifest.resources[0].name == "."
    assert manifest.resources[0].digest == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert sha256_file(target) == manifest.resources[0].digest


def test_parallel_and_sequential_agree(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    for i in range(40):
        (root / f"part-{i:02d}.bin").write_bytes(os.urandom(1000 + 97 * i))
    big = root / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    one = hash_artifact(root, HashingConfig(chunk_size=65536).with_workers(1).use_shards(1_000_000))
    many = hash_artifact(root, HashingConfig(chunk_size=65536).with_workers(4).use_shards(1_000_000))
    assert one == many
    assert [r.name for r in one.resources][:2] == ["big.bin:0:1000000", "big.bin:1000000:2000000"]
    files = hash_artifact(root, HashingConfig().with_workers(2))
    assert files.files["big.bin"] == sha256_file(big)


def test_ignored_paths_and_signature_are_left_out(tmp_path: pathlib.Path) -> None:
    root = _tricky_tree(tmp_path / "m")
    (root / "model.sig").write_text("{}")
    names = [r.name for r in hash_artifact(root, HashingConfig().ignoring("model.sig")).resources]
    assert names == ["a/b", "a-c", "empty"]


def test_compare_names_added_removed_renamed_changed(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    for name in ("keep", "change", "gone", "move"):
        (root / name).write_text(name)
    before = hash_artifact(root)
    (root / "change").write_text("CHANGED")
    (root / "gone").unlink()
    (root / "move").rename(root / "moved")
    (root / "new").write_text("new")
    with pytest.raises(Exception) as info:
        compare_manifests(before, hash_artifact(root), artifact=str(root))
    error = info.value
    assert error.changed == ["change"]
    assert error.removed == ["gone"]
    assert error.added == ["new"]
    assert error.renamed == [("move", "moved")]
    assert "renamed: move -> moved" in str(error)


def test_symlink_leaving_the_tree_is_refused(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "ok").write_text("x")
    secret = tmp_path / "secret"
    secret.write_text("outside")
    (root / "link").symlink_to(secret)
    with pytest.raises(UnsafePathError, match="points outside the artifact"):
        hash_artifact(root)
    with pytest.raises(UnsafePathError, match="points outside the artifact"):
        hash_artifact(root, HashingConfig(allow_symlinks=True))


def test_symlink_inside_tree_needs_opt_in(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "real").write_text("x")
    (root / "alias").symlink_to("real")
    with pytest.raises(UnsafePathError, match="not allowed"):
        hash_artifact(root)
    manifest = hash_artifact(root, HashingConfig(allow_symlinks=True))
    assert manifest.files["alias"] == manifest.files["real"]


def test_special_files_are_refused(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "ok").write_text("x")
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafePathError, match="special file"):
        hash_artifact(root)
    sock_root = tmp_path / "s"
    sock_root.mkdir()
    (sock_root / "ok").write_text("x")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_root / "sock"))
        with pytest.raises(UnsafePathError, match="special file"):
            hash_artifact(sock_root)
    finally:
        server.close()


def test_empty_directory_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(EmptyArtifactError):
        hash_artifact(tmp_path / "empty")


def test_missing_path_is_an_input_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ArtifactReadError, match="cannot read"):
        hash_artifact(tmp_path / "nope")


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a\\b", "x\ny"])
def test_traversal_names_in_a_signed_manifest_are_refused(tmp_path: pathlib.Path, name: str) -> None:
    import hashlib

    digest = hashlib.sha256(b"x").hexdigest()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": hashlib.sha256(bytes.fromhex(digest)).hexdigest()}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": name, "algorithm": "sha256", "digest": digest}],
        },
    }
    with pytest.raises(UnsafePathError):
        Manifest.from_statement(statement)


def test_inconsistent_statement_is_refused() -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://model_signing/signature/v1.0",
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False},
            "resources": [{"name": "a", "algorithm": "sha256", "digest": "1" * 64}],
        },
    }
    with pytest.raises(BundleFormatError, match="inconsistent"):
        Manifest.from_statement(statement)


@pytest.mark.parametrize("mode", ["files", "shards"])
@pytest.mark.parametrize("change", ["grew", "shrank"])
def test_file_changing_between_listing_and_hashing_is_an_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, mode: str, change: str
) -> None:
    import integrity.trust.hashing as hashing_module

    target = tmp_path / "weights.bin"
    target.write_bytes(b"x" * 4096)
    real_list_files = hashing_module.list_files

    def list_then_modify(root, config):  # the file changes after it was listed, before it is read
        entries = real_list_files(root, config)
        target.write_bytes(b"x" * (8192 if change == "grew" else 1024))
        return entries

    monkeypatch.setattr(hashing_module, "list_files", list_then_modify)
    config = HashingConfig(method="shards", shard_size=1000) if mode == "shards" else HashingConfig()
    with pytest.raises(ArtifactReadError, match=change):
        hash_artifact(tmp_path, config)
