"""The gate against the whole corpus: every bypass family refused, every benign control accepted.

The corpus is generated (never loaded) by ``benchmarks/model_scanners/corpus.py``, the same code
the benchmark uses. Reasons must name the file or member, the offset and the callable.
"""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.model_scanners.corpus import Sample, build_corpus, call0, call4, torch_zip
from integrity.scans.modelgate import scan_path

# The bypass families issue 4 lists, each of which must be covered by at least one sample.
ISSUE_FAMILIES = {"dotted-path", "module-alias", "logging-config", "multiprocessing", "subprocess", "code-eval",
                  "nested-loader", "memo-name", "runtime-name", "framing", "multi-pickle", "zip-duplicate",
                  "joblib-compressed", "keras-lambda", "wrong-extension", "polyglot"}
# A sample of the rules the gate must give for specific files (the reason, not just the verdict).
EXPECTED_RULES = {
    "dotted/shutil_os_system.pkl": ("pickle.dotted-name", "shutil.os.system"),
    "names/memo_rewritten.pkl": ("pickle.memo-rewritten", None),
    "names/runtime_module_name.pkl": ("pickle.name-not-literal", None),
    "framing/straddling_frame.pkl": ("pickle.bad-frame", None),
    "framing/no_stop.pkl": ("pickle.callable-not-allowed", "os.system"),
    "multi/second_pickle.pkl": ("pickle.trailing-data", None),
    "multi/legacy_sysinfo_payload.pt": ("pickle.callable-not-allowed", "os.system"),
    "zip/duplicate_data_pkl.pt": ("zip.duplicate-member", None),
    "zip/local_central_mismatch.pt": ("zip.header-mismatch", None),
    "zip/encrypted_member.pt": ("zip.encrypted", None),
    "zip/reserved_flag.pt": ("zip.reserved-flags", None),
    "zip/bad_crc.pt": ("zip.bad-crc", None),
    "zip/path_escape.zip": ("zip.path-escape", None),
    "zip/bomb.zip": ("zip.bomb", None),
    "zip/prepended_pickle.pt": ("format.polyglot", None),
    "joblib/zlib_payload.joblib": ("pickle.callable-not-allowed", "os.system"),
    "joblib/object_array.joblib": ("pickle.nested-loader", "pickle.load"),
    "keras/lambda.keras": ("keras.lambda", None),
    "keras/lambda.h5": ("keras.lambda", None),
    "keras/keras_utils_get_file.keras": ("keras.custom-object", "keras.utils.get_file"),
    "polyglot/tar_pickle.tar": ("format.polyglot", "os.system"),
    "polyglot/safetensors_zip.safetensors": ("format.polyglot", None),
    "safe/onnx_external_escape": ("onnx.external-path", None),
    "safe/onnx_custom_domain.onnx": ("onnx.custom-domain", None),
    "safe/savedmodel_readfile": ("savedmodel.refused-op", "ReadFile"),
    "safe/gguf_template_ssti.gguf": ("gguf.chat-template", None),
    "nested/storage_load_from_bytes.pt": ("pickle.callable-not-allowed", "torch.storage._load_from_bytes"),
    "logging/dictconfig.pkl": ("pickle.callable-not-allowed", "logging.config.dictConfig"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


def test_every_issue_family_and_the_real_weights_are_in_the_corpus(corpus: tuple[Path, list[Sample]]) -> None:
    _, samples = corpus
    assert {s.family for s in samples if s.malicious} >= ISSUE_FAMILIES
    names = {s.name for s in samples if not s.malicious}
    assert {"benign/efficientnet-lite0.pth", "benign/all-MiniLM-L6-v2.safetensors", "benign/state_dict.pt",
            "benign/weights.safetensors", "benign/array.npy"} <= names


def test_no_malicious_file_passes_and_no_benign_file_is_flagged(corpus: tuple[Path, list[Sample]]) -> None:
    root, samples = corpus
    wrong = []
    for sample in samples:
        report = scan_path(root / sample.name)
        if report.safe == sample.malicious:
            wrong.append(f"{sample.name}: {report.reason}")
        if sample.malicious:
            assert all(f.detail and f.rule and f.path for f in report.findings)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_RULES.items()))
def test_reasons_name_the_rule_and_the_callable(corpus: tuple[Path, list[Sample]], name: str,
                                                expected: tuple[str, str | None]) -> None:
    root, _ = corpus
    rule, callable_name = expected
    findings = scan_path(root / name).findings
    matching = [f for f in findings if f.rule == rule]
    assert matching, [f.describe() for f in findings]
    if callable_name is not None:
        assert any(f.callable == callable_name for f in matching), [f.as_dict() for f in matching]


def test_member_and_offset_are_reported(corpus: tuple[Path, list[Sample]]) -> None:
    root, _ = corpus
    (finding,) = [f for f in scan_path(root / "nested/inside_torch_zip.pt").findings
                  if f.rule == "pickle.callable-not-allowed"]
    assert finding.member == "archive/data.pkl" and finding.offset == 2 and finding.callable == "torch.hub.load"
    deep = scan_path(root / "tar/payload_in_tgz.tar.gz").findings[0]
    assert deep.path == "payload_in_tgz.tar.gz!<gzip>!model/weights.pkl" and deep.callable == "os.system"


def test_formats_are_recognised_by_content(corpus: tuple[Path, list[Sample]]) -> None:
    root, _ = corpus
    expected = {"benign/state_dict.pt": "pytorch-zip", "benign/state_dict_legacy.pt": "pytorch-legacy",
                "benign/weights.safetensors": "safetensors", "benign/array.npy": "npy", "benign/arrays.npz": "npz",
                "benign/arrays.joblib": "joblib", "benign/arrays_compressed.joblib": "joblib+zlib",
                "benign/model.gguf": "gguf", "benign/model.onnx": "onnx", "benign/dense.keras": "keras",
                "benign/dense.h5": "keras-h5", "benign/hf_model.tar.gz": "gzip", "benign/arrays_p4.pkl": "pickle",
                "ext/pickle_as.safetensors": "pickle", "ext/pickle_as.txt": "pickle"}
    for name, kind in expected.items():
        assert scan_path(root / name).formats[Path(name).name] == kind, name
    saved = scan_path(root / "benign/savedmodel").formats
    assert saved == {"saved_model.pb": "tf-savedmodel", "variables/variables.index": "tf-checkpoint-index",
                     "variables/variables.data-00000-of-00001": "tf-checkpoint-data"}


def test_truncated_or_corrupted_files_are_refused_never_crash(corpus: tuple[Path, list[Sample]],
                                                                tmp_path: Path) -> None:
    """Any parse error or unexpected structure is a finding: truncations and bit flips never pass silently."""
    root, samples = corpus
    rng = random.Random(4)
    binary = [s for s in samples if not s.malicious and (root / s.name).is_file()
              and (root / s.name).stat().st_size < 2_000_000]
    assert len(binary) >= 12
    for sample in binary:
        data = (root / sample.name).read_bytes()
        for cut in sorted({8, 20, len(data) // 3, len(data) // 2, len(data) - 1, *rng.sample(range(8, len(data)), 3)}):
            victim = tmp_path / "cut.bin"
            victim.write_bytes(data[:cut])
            report = scan_path(victim)
            assert not report.safe, f"{sample.name} truncated to {cut} bytes passed"
        for _ in range(5):
            flipped = bytearray(data)
            flipped[rng.randrange(min(len(data), 4096))] ^= 1 << rng.randrange(8)
            victim.write_bytes(bytes(flipped))
            scan_path(victim)  # must return a report, whatever the verdict


def test_directory_model_unknown_files_symlinks_and_remote_code(tmp_path: Path,
                                                                corpus: tuple[Path, list[Sample]]) -> None:
    root, _ = corpus
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(root / "benign/weights.safetensors", model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"hidden_size": 4}))
    (model / "README.md").write_text("# a model\n")
    assert scan_path(model).safe, scan_path(model).reason
    (model / "blob.bin").write_bytes(bytes(range(256)))
    (model / "link.safetensors").symlink_to(model / "model.safetensors")
    (model / "modeling_custom.py").write_text("import os\n")
    (model / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "modeling_custom.Model"}}))
    rules = {f.rule for f in scan_path(model).findings}
    assert {"format.unknown", "path.special", "format.code", "hf.remote-code"} <= rules


def test_pickle_walker_edge_cases(tmp_path: Path) -> None:
    cases = {
        "leftover_stack.pkl": (b"\x80\x02K\x01K\x02.", "pickle.unbalanced"),
        "unset_memo.pkl": (b"\x80\x02h\x05.", "pickle.bad-memo"),
        "build_on_class.pkl": (b"\x80\x02ccollections\nOrderedDict\n}b.", "pickle.build-non-object"),
        "persid.pkl": (b"\x80\x02X\x01\x00\x00\x00aQ.", "pickle.persistent-id"),
        "second_proto.pkl": (b"\x80\x02\x80\x02N.", "pickle.bad-proto"),
        "frame_overrun.pkl": (b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.", "pickle.bad-frame"),
        "call_non_global.pkl": (b"\x80\x02K\x01)R.", "pickle.call-non-global"),
        "setitem_on_const.pkl": (b"\x80\x02K\x01K\x02K\x03s.", "pickle.container"),
        "backward_hooks.pt": (None, "torch.backward-hooks"),
    }
    hooks = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
             b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)R"
             b"K\x01cposix\nsystem\nstRtR.")
    for name, (data, rule) in cases.items():
        path = tmp_path / name
        path.write_bytes(torch_zip(hooks) if data is None else data)
        findings = scan_path(path).findings
        assert any(f.rule == rule for f in findings), (name, [f.describe() for f in findings])


def test_cli_scan_exit_codes_and_json(tmp_path: Path, corpus: tuple[Path, list[Sample]]) -> None:
    root, _ = corpus
    cairn = [sys.executable, "-m", "integrity.cli", "scan"]
    clean = subprocess.run([*cairn, str(root / "benign/state_dict.pt")], capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stdout.startswith("CLEAN"), clean.stdout + clean.stderr
    evil = subprocess.run([*cairn, str(root / "nested/inside_torch_zip.pt"), "--json"], capture_output=True, text=True)
    assert evil.returncode == 1, evil.stderr
    report = json.loads(evil.stdout)
    assert report["result"] == "unsafe" and report["safe"] is False
    finding = next(f for f in report["findings"] if f["callable"])
    assert finding["member"] == "archive/data.pkl" and finding["offset"] == 2 and finding["callable"] == "torch.hub.load"
    text = subprocess.run([*cairn, str(root / "direct/os_system_p0.pkl")], capture_output=True, text=True)
    assert text.returncode == 1 and "os.system" in text.stdout and "@0" in text.stdout
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x93NUMPY\x01\x00\xff\xff{'descr'")
    assert subprocess.run([*cairn, str(garbage)], capture_output=True).returncode == 1
    assert subprocess.run([*cairn, str(tmp_path / "missing.pt")], capture_output=True).returncode == 2
    assert subprocess.run([*cairn], capture_output=True).returncode == 2
    directory = subprocess.run([*cairn, str(root / "benign/savedmodel"), "--json"], capture_output=True, text=True)
    assert directory.returncode == 0 and json.loads(directory.stdout)["files_scanned"] == 3


def test_text_that_is_a_pickle_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(call0("os", "system", "id"))
    (tmp_path / "plain.txt").write_text("ldots.\nnothing to see\n")
    assert not scan_path(tmp_path / "notes.txt").safe
    assert scan_path(tmp_path / "plain.txt").safe
    assert scan_path(tmp_path / "plain.txt").formats == {"plain.txt": "text"}
    (tmp_path / "p4.bin").write_bytes(call4("os", "system", "id"))
    assert scan_path(tmp_path / "p4.bin").findings[0].callable == "os.system"
