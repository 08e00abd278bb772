"""Issue 12, model-file gate: the holes an attacker found, one test per family (each failed on the old gate).

Files come from ``benchmarks/model_scanners/corpus_attacks.py`` (generated, never loaded).
"""

import json
import zipfile
from pathlib import Path

import pytest

from benchmarks.model_scanners import corpus_attacks as attacks
from integrity.scans.modelgate import scan_path
from integrity.scans.modelgate.archives import Limits
from integrity.scans.modelgate.oracle import unpickler_verdict
from integrity.scans.modelgate.templates import check_chat_template


def _rules(path: Path) -> set[str]:
    return {f.rule for f in scan_path(path).findings}


@pytest.mark.parametrize("payload", [attacks.P0_INST, attacks.P0_MEMO_TWICE, attacks.P0_OBJ, attacks.P0_BIG_MEMO,
                                     attacks.P0_AFTER_TEXT], ids=["inst", "memo-twice", "obj", "big-memo", "after-text"])
def test_printable_protocol0_pickles_are_pickles_everywhere(tmp_path: Path, payload: bytes) -> None:
    assert payload.decode("ascii").isprintable() or b"\n" in payload  # text to a naive sniffer
    assert unpickler_verdict(payload).imports
    places = {
        "alone.txt": payload,
        "in.zip": attacks._zip([("notes.txt", payload)]),
        "in.tar": attacks._tar([("notes.txt", payload)]),
    }
    for name, data in places.items():
        (tmp_path / name).write_bytes(data)
        report = scan_path(tmp_path / name)
        assert not report.safe, (name, report.formats)
        assert any(f.rule.startswith("pickle.") for f in report.findings), report.reason
    folder = tmp_path / "model"
    attacks._hf_folder({"optimizer.pt": payload})(folder)
    report = scan_path(folder)
    assert not report.safe and report.formats["optimizer.pt"] == "pickle"
    assert all(f.path == "optimizer.pt" for f in report.findings)


def test_a_walk_that_stops_early_is_a_refusal(tmp_path: Path) -> None:
    # The strict walker refuses INST at once; the payload after it must not matter for the verdict.
    path = tmp_path / "p.pkl"
    path.write_bytes(attacks.P0_INST)
    finding = next(f for f in scan_path(path).findings if f.rule == "pickle.opcode-refused")
    assert "INST" in finding.detail


def test_benign_protocol0_pickle_stays_clean(tmp_path: Path) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(attacks.P0_BENIGN)
    report = scan_path(path)
    assert report.safe and report.formats["list.pkl"] == "pickle"


@pytest.mark.parametrize(("config", "rule"), [
    (json.dumps({"auto_map": {"AutoModel": "m.M"}})[:-1].encode() + b', "x": NaN}', "hf.remote-code"),
    (b'{"auto_map": {}, "auto_map": {"AutoModel": "m.M"}}', "hf.remote-code"),
    (b'{"model_type": "bert", ', "json.malformed"),
])
def test_configs_are_read_as_their_loader_reads_them(tmp_path: Path, config: bytes, rule: str) -> None:
    folder = tmp_path / "model"
    attacks._hf_folder({"config.json": config})(folder)
    rules = _rules(folder)
    assert rule in rules, rules
    if rule == "hf.remote-code":
        assert "json.ambiguous" in rules


def test_keras_duplicate_class_name_is_seen_as_keras_sees_it(tmp_path: Path) -> None:
    layer = ('{"class_name": "Dense", "config": {"name": "d"}, "class_name": "Lambda", "config": {"name": "l", '
             '"function": ["4wEAAAAA", null, null]}}')
    path = tmp_path / "m.keras"
    path.write_bytes(attacks._keras_zip(('{"class_name": "Sequential", "config": {"name": "s", "layers": ['
                                         + layer + ']}}').encode()))
    rules = _rules(path)
    assert "keras.lambda" in rules or "keras.refused-class" in rules or any("keras" in r for r in rules), rules
    assert any(f.rule.startswith("keras") and "Lambda" in f.detail for f in scan_path(path).findings)


def test_model_sig_is_scanned_like_every_other_file(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    attacks._hf_folder({"model.sig": attacks.P0_INST})(folder)
    report = scan_path(folder)
    assert not report.safe and any(f.path == "model.sig" for f in report.findings)
    good = tmp_path / "good"
    attacks._hf_folder({"model.sig": b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}'})(good)
    assert scan_path(good).safe, scan_path(good).reason


def test_empty_and_unidentified_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    assert _rules(tmp_path / "empty.bin") == {"format.empty"}
    (tmp_path / "notes.dat").write_bytes(b"weights follow\n")
    assert "format.unknown" in _rules(tmp_path / "notes.dat")
    (tmp_path / "README.md").write_bytes(b"# fine\n")
    assert scan_path(tmp_path / "README.md").safe


def test_yaml_configs_must_parse_safely(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_bytes(b"lr: !!python/object/apply:os.system ['id']\n")
    assert "yaml.refused" in _rules(tmp_path / "params.yaml")
    (tmp_path / "ok.yaml").write_bytes(b"lr: 0.1\n")
    assert scan_path(tmp_path / "ok.yaml").safe


@pytest.mark.parametrize("template", [attacks.SSTI_ESCAPED, attacks.SSTI_CONTEXT, attacks.SSTI_BUILT_KEY,
                                      attacks.SSTI_ATTR_FILTER, attacks.TEMPLATE_LOOP_DOS],
                         ids=["escaped", "template-reference", "built-key", "attr", "loop-dos"])
def test_chat_templates_that_escape_or_hang_are_refused(tmp_path: Path, template: str) -> None:
    assert not check_chat_template(template).safe
    path = tmp_path / "m.gguf"
    path.write_bytes(attacks._gguf(tmp_path, template))
    assert "gguf.chat-template" in _rules(path)
    folder = tmp_path / "hf"
    attacks._hf_folder({"tokenizer_config.json": json.dumps({"chat_template": template}).encode()})(folder)
    assert "template.unsafe" in _rules(folder)


@pytest.mark.parametrize("template", [attacks.CHATML, attacks.LLAMA3, attacks.MISTRAL, attacks.QWEN_TOOLS,
                                      attacks.GEMMA_NS], ids=["chatml", "llama3", "mistral", "qwen-tools", "gemma"])
def test_real_chat_templates_pass(template: str) -> None:
    verdict = check_chat_template(template)
    assert verdict.safe, verdict.reason


def test_allowlisted_constructors_with_huge_sizes_are_refused(tmp_path: Path) -> None:
    huge = b"\x80\x02cnumpy\nndarray\n(\x8a\x06\x00\x00\x00\x00\x00\x01\x85U\x02f8tR."
    (tmp_path / "h.pkl").write_bytes(huge)
    assert "pickle.allocation" in _rules(tmp_path / "h.pkl")


def test_scratch_space_is_bounded_by_the_input(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    path.write_bytes(attacks.scratch_bomb(members=8, member_size=4 << 20))  # 32 MB in ~32 KB
    limits = Limits(ratio_floor=8 << 20, max_ratio=100)  # each member is under the per-member bomb floor
    report = scan_path(path, limits=limits)
    assert not report.safe and "zip.bomb" in {f.rule for f in report.findings}
    small = tmp_path / "small.zip"
    with zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.md", "# ok\n" * 100)
    assert scan_path(small, limits=limits).safe


def test_gguf_without_tensors_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "meta.gguf"
    path.write_bytes(attacks._gguf(tmp_path, attacks.CHATML, tensors=False))
    report = scan_path(path)
    assert report.safe, report.reason
    path.write_bytes(path.read_bytes() + b"payload")
    assert not scan_path(path).safe
