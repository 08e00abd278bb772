"""Release bundles for distribution tests, written exactly as docs/release-bundle.md lays them out.

``write_test_bundle`` signs every file with :func:`integrity.trust.signing.sign_artifact` and a
``KeySigner`` (the release identity) and writes ``release.json`` listing every file with its
SHA-256 and size, then ``release.json.sig``. ``write_release_policy`` writes the release policy
that allows that key to sign the model's releases.
"""

import contextlib
import hashlib
import json
import os
import shutil
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity.trust.methods.key import KeySigner
from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key


def safetensors_bytes(tensors: dict[str, bytes]) -> bytes:
    """A valid safetensors file of U8 tensors (8-byte header length, JSON header, raw data)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(tensors.values())


def write_safetensors(path: Path, size: int, *, seed: bytes = b"cairn") -> Path:
    """A safetensors file of about ``size`` bytes of deterministic pseudo-random weights, streamed."""
    header = {"__metadata__": {"format": "pt"}, "weights": {"dtype": "U8", "shape": [size],
                                                             "data_offsets": [0, size]}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    block = hashlib.shake_256(seed).digest(1 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        left = size
        counter = 0
        while left:
            chunk = block if left >= len(block) else block[:left]
            # Vary every MiB so no two blocks are equal (no accidental deduplication anywhere).
            out.write(counter.to_bytes(8, "little") + chunk[8:] if len(chunk) > 8 else chunk)
            left -= len(chunk)
            counter += 1
    return path


def make_release_key(folder: Path, name: str = "release") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if not private.exists():
        generate_key_pair(private, public)
    return private, public


def write_release_policy(path: Path, model: str, public_key: Path, *, version: int = 1) -> Path:
    fingerprint = key_fingerprint(load_public_key(public_key))
    path.write_text(
        f"version: {version}\nsources:\n  {model}:\n    signers:\n"
        f"      - key: {{fingerprint: \"{fingerprint}\", public_key: {public_key}}}\n"
    )
    return path


def write_test_bundle(
    root: Path,
    private_key: Path,
    *,
    model: str = "digits-classifier",
    version: str = "1.0.0",
    sequence: int = 1,
    weights: Path | None = None,
    weights_size: int = 200_000,
    inputs: list[dict[str, Any]] | None = None,
    policy_digest: str = "sha256:" + "0" * 64,
) -> Path:
    """Write ``root`` as a signed release bundle with :func:`integrity.release.bundle.write_bundle`; returns ``root``."""
    from integrity.release.bundle import write_bundle

    signer = KeySigner.from_file(private_key)
    source = root.parent / f".{root.name}-model"
    source.mkdir(parents=True, exist_ok=True)
    target = source / "model.safetensors"
    if weights is not None:
        try:
            os.link(weights, target)
        except OSError:
            target.write_bytes(weights.read_bytes())
    else:
        write_safetensors(target, weights_size, seed=f"{model}@{version}".encode())
    (source / "config.json").write_text(json.dumps(
        {"architecture": "test-mlp", "input_shape": [64], "class_names": [str(i) for i in range(10)],
         "preprocessing": "scale to [0, 1]"}, indent=2))
    inputs = inputs if inputs is not None else [
        {"name": "digits", "kind": "dataset", "digest": "sha256:" + hashlib.sha256(b"digits").hexdigest(),
         "verification_record": "records/verifications/digits.json"}]
    provenance = {
        "_type": "https://in-toto.io/Statement/v1", "subject": [],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://cairn.dev/test-build/v1", "resolvedDependencies": [
            {"name": i["name"], "digest": {"sha256": i["digest"].removeprefix("sha256:")}} for i in inputs]},
            "runDetails": {"builder": {"id": "tests"}}},
    }
    releases = root.parent / f".{root.name}-releases"
    written = write_bundle(
        releases, model=model, version=version, model_dir=source, provenance=provenance,
        bom={"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []},
        lineage={"nodes": [{"id": "model"}, *({"id": i["name"]} for i in inputs)],
                 "edges": [{"from": "model", "to": i["name"]} for i in inputs]},
        lineage_svg=b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        signer=signer, inputs=inputs, policy_digest=policy_digest, catalog_digest="sha256:" + "1" * 64,
        gates={"release_gate": {"passed": True, "clean_accuracy": 0.97}}, sequence=sequence,
        created=datetime.now(UTC),
    )
    os.rename(written, root)
    shutil.rmtree(source)
    releases.rmdir()
    return root


def _sha256_stream(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ThrottledProxy:
    """A loopback TCP proxy that passes server replies on at ``rate`` bytes per second.

    Makes a real download slow enough to kill a pull halfway through, deterministically.
    """

    def __init__(self, target_url: str, rate: int) -> None:
        import socket
        import threading
        from urllib.parse import urlparse

        parsed = urlparse(target_url)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.rate), daemon=True).start()

    def _pump(self, source: Any, sink: Any, rate: int | None) -> None:
        import time

        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
