"""Fuzz targets: every parser that sees untrusted bytes, with the errors each may raise.

A target takes arbitrary bytes. It passes when the parser returns a result or raises one of the
target's documented error types (a :class:`integrity.errors.CairnError` subclass: a refusal with a
reason). Any other exception is a *crash*; a call over the time budget is a *hang*. Used by
``tests/unit/scans/test_fuzz.py`` (a short Hypothesis run in CI) and ``python -m benchmarks.robustness``
(coverage-guided with atheris, longer).
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from integrity.errors import CairnError


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], Any]
    allowed: tuple[type[BaseException], ...] = (CairnError,)
    #: Called once before timing starts (a heavy import, such as Great Expectations', is not a hang).
    warm: Callable[[], Any] | None = None


class Crash(AssertionError):
    """A target raised something other than its documented refusals."""


def call(target: Target, data: bytes) -> None:
    """Run one input; raise :class:`Crash` for anything but a result or an allowed refusal."""
    try:
        target.run(data)
    except target.allowed:
        return
    except Exception as exc:
        raise Crash(f"{target.name}: {type(exc).__name__}: {exc}") from exc


@lru_cache(maxsize=1)
def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="cairn-fuzz-"))


def _file(data: bytes, name: str) -> Path:
    folder = _scratch() / name.replace("/", "_")
    folder.mkdir(exist_ok=True)
    path = folder / name.rsplit("/", 1)[-1]
    path.write_bytes(data)
    return path


# -- the model-file gate ----------------------------------------------------------------------------------


def _scan(name: str) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        from integrity.scans.modelgate import scan_path
        from integrity.scans.modelgate.archives import Limits

        report = scan_path(_file(data, name), limits=Limits(max_total=64 << 20, ratio_floor=8 << 20))
        assert report.safe or report.findings, "an unsafe report must name its findings"
        return report

    return run


def _walker(data: bytes) -> Any:
    from integrity.scans.modelgate.allowlist import load_allowlist
    from integrity.scans.modelgate.pickles import PickleWalker

    walker = PickleWalker("fuzz.pkl", load_allowlist())
    return walker.walk(io.BytesIO(data), 0, len(data))


def _oracle(data: bytes) -> Any:
    from integrity.scans.modelgate.oracle import unpickler_verdict

    return unpickler_verdict(data)


def _zip(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.archives import Limits, read_zip

    return read_zip(io.BytesIO(data), len(data), "fuzz.zip", Findings(), Limits())


def _safetensors(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.tensors import scan_safetensors

    if len(data) < 8:
        return None
    return scan_safetensors(_file(data, "fuzz.safetensors"), "fuzz.safetensors", Findings())


def _gguf(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.allowlist import load_allowlist
    from integrity.scans.modelgate.tensors import scan_gguf

    return scan_gguf(io.BytesIO(data), len(data), "fuzz.gguf", load_allowlist(), Findings())


def _npy(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.tensors import scan_npy

    return scan_npy(io.BytesIO(data), len(data), "fuzz.npy", Findings())


def _onnx(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.allowlist import load_allowlist
    from integrity.scans.modelgate.graphs import scan_onnx

    path = _file(data, "onnx/model.onnx")
    return scan_onnx(data, "model.onnx", path.parent, path.parent, load_allowlist(), Findings())


def _hdf5(data: bytes) -> Any:
    from integrity.scans.modelgate._report import Findings
    from integrity.scans.modelgate.allowlist import load_allowlist
    from integrity.scans.modelgate.keras import scan_hdf5

    return scan_hdf5(data, "fuzz.h5", load_allowlist(), Findings())


def _template(data: bytes) -> Any:
    from integrity.scans.modelgate.templates import check_chat_template

    verdict = check_chat_template(data.decode("utf-8", "replace"))
    assert isinstance(verdict.safe, bool) and verdict.reason
    return verdict


# -- signatures, policies and release documents -----------------------------------------------------------


@lru_cache(maxsize=1)
def _signed_world() -> tuple[Path, Any]:
    """An artifact and a key policy for bundle fuzzing (a real key; the fuzzer supplies the bundle)."""
    from integrity.trust.signing import generate_key_pair, key_fingerprint, load_public_key

    root = _scratch() / "world"
    root.mkdir(exist_ok=True)
    private, public = root / "k.key", root / "k.pub"
    if not private.exists():
        generate_key_pair(private, public)
    artifact = root / "weights.bin"
    artifact.write_bytes(b"weights")
    from integrity.trust.policy import parse_policy

    policy = parse_policy(f"version: 1\nsources:\n  v:\n    signers:\n      - key: {{public_key: {public}, "
                          f"fingerprint: '{key_fingerprint(load_public_key(public))}'}}\n".encode())
    return artifact, policy


def _bundle(data: bytes) -> Any:
    from integrity.trust.verifying import verify_artifact

    artifact, policy = _signed_world()
    bundle = _file(data, "bundle/weights.bin.sig")
    return verify_artifact(artifact, policy.source("v").signers, bundle=bundle)


def _policy(data: bytes) -> Any:
    from integrity.trust.policy import parse_policy

    return parse_policy(data)


def _catalog(data: bytes) -> Any:
    from integrity.intake.catalog import parse_catalog

    return parse_catalog(data, root=_scratch(), strict=False)


def _spec(data: bytes) -> Any:
    from integrity.release.spec import parse_release_spec

    return parse_release_spec(data)


def _release_index(data: bytes) -> Any:
    from integrity.distribution import ReleaseIndex

    return ReleaseIndex.parse(data)


def _json(data: bytes) -> Any:
    from integrity.safeio import parse_json

    return parse_json(data)


def _yaml(data: bytes) -> Any:
    from integrity.safeio import parse_yaml

    return parse_yaml(data)


@lru_cache(maxsize=1)
def _ledger_world() -> tuple[Path, Path]:
    from integrity.ledger.transparency import open_ledger
    from integrity.storage import open_store

    root = _scratch() / "ledger-world"
    if not root.exists():
        store = open_store(root / "store")
        ledger = open_ledger(store, home=root / "home")
        for index in range(3):
            ledger.append("fuzz", {"n": index, "record": f"records/x/{index}.json", "sha256": "0" * 64})
    return root / "store", root / "home" / "keys" / "ledger.pub"


def _ledger_entry(data: bytes) -> Any:
    from integrity.ledger import Ledger
    from integrity.storage import open_store

    store, public = _ledger_world()
    copy = _scratch() / "ledger-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    victim = copy / "ledger" / "entries" / "000000000001.json"
    victim.chmod(0o644)
    victim.write_bytes(data)
    return Ledger(open_store(copy), public_key=public).verify()


# -- the report server, the image reader and dataset suites (issue 25) -----------------------------------


def _report_target(data: bytes) -> Any:
    """A request target as the report server parses it (bytes as they arrive on the socket)."""
    from integrity.distribution.serving import parse_target

    return parse_target(data)


@lru_cache(maxsize=1)
def _served_root() -> Path:
    """A served area with a file, a folder, a link out of it and a FIFO, to resolve paths against."""
    import os

    root = _scratch() / "served"
    (root / "records" / "kind").mkdir(parents=True, exist_ok=True)
    (root / "records" / "kind" / "a.json").write_bytes(b"{}")
    (root / "secret.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    link = root / "records" / "link.json"
    if not link.is_symlink():
        link.symlink_to(root / "secret.key")
    fifo = root / "records" / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    return root


def _report_path(data: bytes) -> Any:
    """Path resolution without following links: the parts come from the parser, then are opened beneath the root."""
    from integrity.distribution.serving import parse_target, read_beneath

    parts = parse_target(b"/records/" + data)
    return read_beneath(_served_root(), parts, max_bytes=1 << 16)


def _image(data: bytes) -> Any:
    from integrity.scans.images import decode_image

    return decode_image(data, "fuzz.png")


def _image_folder(data: bytes) -> Any:
    from integrity.scans.images import read_images

    return read_images({"a/x.png": data, "b/y.png": data}, where="fuzz")


def _gguf_parse(data: bytes) -> Any:
    from integrity.scans.modelgate.gguf import parse_gguf

    return parse_gguf(data)


def _config(name: str) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        from integrity.scans.modelgate.configtargets import scan_config_bytes

        return scan_config_bytes(data, name)

    return run


def _import_gx() -> None:
    import great_expectations  # noqa: F401 - imported on a suite's first unknown type, in tens of seconds


def _suite(data: bytes) -> Any:
    from integrity.scans.expectations import parse_suite

    return parse_suite(data)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("pickle-walker", _walker),
    Target("pickle-oracle", _oracle),
    Target("gate-file", _scan("model.bin")),
    Target("zip", _zip),
    Target("safetensors", _safetensors),
    Target("gguf", _gguf),
    Target("npy", _npy),
    Target("onnx", _onnx),
    Target("hdf5", _hdf5),
    Target("chat-template", _template),
    Target("sigstore-bundle", _bundle),
    Target("trust-policy", _policy),
    Target("catalog", _catalog),
    Target("release-spec", _spec),
    Target("release-index", _release_index),
    Target("json", _json),
    Target("yaml", _yaml),
    Target("ledger-entry", _ledger_entry),
    Target("report-target", _report_target, (CairnError, PermissionError, LookupError)),
    Target("report-path", _report_path, (CairnError, PermissionError, LookupError)),
    Target("image", _image),
    Target("image-folder", _image_folder),
    Target("suite", _suite, warm=_import_gx),
    Target("gguf-parse", _gguf_parse),
    Target("config-yaml", _config("model_config.yaml")),
    Target("config-json", _config("config.json")),
)}
