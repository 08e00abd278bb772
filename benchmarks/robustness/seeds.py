"""The committed seed corpus for the fuzz targets: small, valid (or nearly valid) inputs per target.

``python -m benchmarks.robustness.seeds`` rewrites ``benchmarks/robustness/seeds/<target>/``; the
files are committed so fuzzing starts from real structure, and every crash the fuzzers ever found
is kept under ``tests/unit/scans/fuzz_regressions/<target>/`` and replayed by ``tests/unit/scans/test_fuzz.py``.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

SEEDS = Path(__file__).with_name("seeds")
REPO = Path(__file__).resolve().parents[2]


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


def build() -> dict[str, list[bytes]]:
    import numpy as np

    from benchmarks.model_scanners import corpus_attacks as attacks
    from benchmarks.model_scanners.corpus import call0, call4, dense_layer, keras_config, keras_zip, torch_zip

    tmp = Path(tempfile.mkdtemp(prefix="cairn-seeds-"))
    npy = io.BytesIO()
    np.save(npy, np.arange(6, dtype=np.float32).reshape(2, 3))
    state = pickle.dumps({"w": [1.0, 2.0], "names": ("a", "b")}, protocol=2)
    pickles = [state, pickle.dumps({"x": 1}, protocol=4), attacks.P0_BENIGN, attacks.P0_INST,
               call0("os", "system", "id"), call4("collections", "OrderedDict")]
    gguf = attacks._gguf(tmp, attacks.CHATML)
    zips = [torch_zip(state), attacks._zip([("a.npy", npy.getvalue())]), keras_zip(keras_config([dense_layer()]))]
    seeds: dict[str, list[bytes]] = {
        "pickle-walker": pickles,
        "pickle-oracle": [*pickles, b"[PAD]\n[UNK]\n", b'{"a": 1}'],
        "gate-file": [*pickles[:2], _safetensors(), npy.getvalue(), gguf, *zips, b"# README\n"],
        "zip": zips,
        "safetensors": [_safetensors()],
        "gguf": [gguf, attacks._gguf(tmp, None, tensors=False)],
        "npy": [npy.getvalue()],
        "chat-template": [t.encode() for t in (attacks.CHATML, attacks.LLAMA3, attacks.QWEN_TOOLS,
                                               attacks.SSTI_ESCAPED)],
        "json": [b'{"a": [1, 2.5, "x", null, true]}', b"[]"],
        "yaml": [b"version: 1\nsources:\n  a: {kind: dataset}\n", b"- a\n- b\n"],
        "trust-policy": [b"version: 1\nsources:\n  v:\n    digests: ['sha256:" + b"0" * 64 + b"']\n"],
        "catalog": [(REPO / "integrity" / "data" / "catalogs" / "demo.yaml").read_bytes()],
        "release-spec": [p.read_bytes() for p in sorted((REPO / "integrity" / "data" / "releases").glob("*.yaml"))],
    }
    try:
        import onnx  # noqa: F401 - the test extra writes the seed

        from benchmarks.model_scanners.corpus import _onnx_file

        path = tmp / "m.onnx"
        _onnx_file(path, tmp)
        seeds["onnx"] = [path.read_bytes()]
    except ImportError:
        seeds["onnx"] = [b"\x08\x07\x12\x04test"]
    try:
        from benchmarks.model_scanners.corpus import h5_bytes

        seeds["hdf5"] = [h5_bytes({"keras_version": "2.15.0"}, tmp=tmp)]
    except ImportError:
        seeds["hdf5"] = [b"\x89HDF\r\n\x1a\n" + b"\x00" * 64]
    seeds.update(_signed_seeds(tmp))
    seeds.update(_reader_seeds())
    seeds["gguf-parse"] = seeds["gguf"]
    shutil.rmtree(tmp, ignore_errors=True)
    return seeds


def _reader_seeds() -> dict[str, list[bytes]]:
    """Request targets, small PNG and JPEG images and dataset suites (shorthand and native GX)."""
    import numpy as np
    from PIL import Image

    images = []
    for mode, fmt in (("L", "PNG"), ("RGB", "PNG"), ("RGB", "JPEG")):
        buffer = io.BytesIO()
        pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
        Image.fromarray(pixels if mode == "L" else np.stack([pixels] * 3, -1), mode=mode).save(buffer, fmt)
        images.append(buffer.getvalue())
    suites = [p.read_bytes() for p in sorted((REPO / "integrity" / "data" / "expectations").glob("*.json"))]
    suites.append(json.dumps({"name": "native", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "a", "min_value": 0, "max_value": 1}},
    ]}).encode())
    configs = [b"model:\n  _target_: nemo.collections.asr.models.EncDecCTCModel\n  optim:\n"
               b"    _target_: torch.optim.AdamW\n    lr: 0.001\n",
               b"trainer:\n  class_path: lightning.pytorch.Trainer\n  init_args: {max_epochs: 3}\n"]
    return {
        "config-yaml": configs,
        "config-json": [b'{"architectures": ["BertModel"], "hidden_size": 384}',
                        b'{"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.1}}'],
        "report-target": [b"/", b"/store/records/verifications/x.json", b"/releases/m-1.0.0/release.json",
                          b"/audit/m-1.0.0", b"/store/reports/data-docs/a/index.html?x=1"],
        "report-path": [b"kind/a.json", b"link.json", b"fifo", b"kind/%2e%2e/a.json"],
        "image": images,
        "image-folder": images,
        "suite": suites,
    }


def _signed_seeds(tmp: Path) -> dict[str, list[bytes]]:
    """A real signature bundle, release index and ledger entry."""
    from benchmarks.robustness.targets import _ledger_world, _signed_world
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.signing import sign_artifact

    artifact, _ = _signed_world()
    sign_artifact(artifact, KeySigner.from_file(artifact.parent / "k.key"), signature_path=tmp / "weights.bin.sig")
    bundle = tmp / "weights.bin.sig"
    store, _ = _ledger_world()
    from tests.support.distribution import make_release_key, write_test_bundle

    private, _ = make_release_key(tmp / "keys")
    release = write_test_bundle(tmp / "bundle", private, model="m", version="1.0.0", sequence=1)
    return {
        "sigstore-bundle": [Path(bundle).read_bytes()],
        "release-index": [(release / "release.json").read_bytes()],
        "ledger-entry": [(store / "ledger" / "entries" / "000000000001.json").read_bytes()],
    }


def write() -> None:
    for target, items in build().items():
        folder = SEEDS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for number, data in enumerate(items):
            (folder / f"seed-{number:02d}").write_bytes(data)


def load(target: str) -> list[bytes]:
    folder = SEEDS / target
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


if __name__ == "__main__":
    write()
