"""Issue 28 item 2: GGUF read to the spec. Files written by gguf-py's own writer, in every metadata type and
layout it writes, are accepted; named chat templates are checked like the single one; truncated, oversized
and malformed files are refused without crashing."""

import contextlib
import io
import math
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from integrity.scans.modelgate import gguf as reader
from integrity.scans.modelgate import scan_path
from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import load_allowlist
from integrity.scans.modelgate.gguf import GGUFFormatError, parse_gguf

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
RAG = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
SUBCLASSES = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
CYCLER = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
SCALARS = {"uint8": 7, "int8": -7, "uint16": 700, "int16": -700, "uint32": 70000, "int32": -70000, "float32": 0.5,
           "uint64": 1 << 40, "int64": -(1 << 40), "float64": 1e-12, "bool": True, "string": "a string value"}
ARRAYS: dict[str, list[Any]] = {"ints": [1, 2, 3, -4], "floats": [0.5, 1.5, -2.25], "strings": ["a", "bb", "ccc"],
                                "bools": [True, False, True], "nested": [[1, 2], [3, 4, 5]],
                                "nested_strings": [["a", "b"], ["c"]], "deep": [[[1.5], [2.5, 3.5]], [[4.5]]]}


def _write(tmp: Path, fill: Callable[[gguf.GGUFWriter], None], *, tensors: bool = True,
           endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE, name: str = "m.gguf") -> Path:
    path = tmp / name
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_block_count(1)
    fill(writer)
    if tensors:
        writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
        writer.add_tensor("output_norm.weight", np.ones(5, dtype=np.float16))
        q8 = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("blk.0.q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _all_types(writer: gguf.GGUFWriter) -> None:
    for kind, value in SCALARS.items():
        getattr(writer, f"add_{kind}")(f"test.value_{kind}", value)
    for kind, value in ARRAYS.items():
        writer.add_array(f"test.array_{kind}", value)
    for vtype in (gguf.GGUFValueType.UINT8, gguf.GGUFValueType.INT16, gguf.GGUFValueType.UINT64,
                  gguf.GGUFValueType.INT64, gguf.GGUFValueType.FLOAT64, gguf.GGUFValueType.UINT16):
        writer.add_key_value(f"test.typed_{vtype.name.lower()}", [1, 2, 3], gguf.GGUFValueType.ARRAY, sub_type=vtype)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(16)])
    writer.add_token_scores([float(-i) for i in range(16)])
    writer.add_token_types([1] * 16)
    writer.add_token_merges(["t o", "to k"])
    writer.add_chat_template(CHATML)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, list | tuple) or hasattr(value, "typecode") else value


def _safe(path: Path) -> None:
    report = scan_path(path)
    assert report.safe, report.reason
    assert report.formats[path.name] == "gguf"


def test_every_metadata_type_gguf_py_writes_is_read_and_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, _all_types)
    _safe(path)
    parsed = parse_gguf(path.read_bytes())
    for kind, value in SCALARS.items():
        got = parsed.metadata[f"test.value_{kind}"].value
        assert got == value or (isinstance(value, float) and math.isclose(got, value, rel_tol=1e-6)), kind
    for kind, value in ARRAYS.items():
        assert _plain(parsed.metadata[f"test.array_{kind}"].value) == value, kind
    assert list(parsed.metadata["test.typed_int64"].value) == [1, 2, 3]
    # Every field gguf-py's own reader finds is there, with the same type and item type.
    theirs = gguf.GGUFReader(path)
    for field in theirs.fields.values():
        if field.name.startswith("GGUF."):
            continue
        ours = parsed.metadata[field.name]
        assert ours.vtype == field.types[0], field.name
        if len(field.types) > 1:
            assert ours.item_type == field.types[1], field.name
    assert {t.name for t in theirs.tensors} == {t.name for t in parsed.tensors}
    assert {t.name: t.data_offset for t in theirs.tensors} == {t.name: parsed.data_start + t.offset
                                                                for t in parsed.tensors}


def test_big_endian_and_custom_alignment_layouts_are_accepted(tmp_path: Path) -> None:
    big = _write(tmp_path, _all_types, endianess=gguf.GGUFEndian.BIG, name="big.gguf")
    _safe(big)
    parsed = parse_gguf(big.read_bytes())
    assert parsed.byteorder == ">" and parsed.metadata["test.value_int64"].value == -(1 << 40)
    assert _plain(parsed.metadata["test.array_floats"].value) == ARRAYS["floats"]
    aligned = _write(tmp_path, lambda w: w.add_custom_alignment(64), name="aligned.gguf")
    _safe(aligned)
    assert parse_gguf(aligned.read_bytes()).alignment == 64
    _safe(_write(tmp_path, _all_types, tensors=False, name="meta.gguf"))


def test_named_chat_templates_are_accepted_when_benign(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda w: w.add_chat_template(
        [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": RAG}, {"name": "rag", "template": RAG}]))
    parsed = parse_gguf(path.read_bytes())
    assert sorted(parsed.metadata["tokenizer.chat_templates"].value) == ["rag", "tool_use"]
    assert {"tokenizer.chat_template", "tokenizer.chat_template.rag", "tokenizer.chat_template.tool_use"} <= set(
        parsed.metadata)
    _safe(path)


@pytest.mark.parametrize("template", [SUBCLASSES, CYCLER], ids=["subclasses", "cycler-globals-os"])
@pytest.mark.parametrize("default", [True, False], ids=["with-default", "named-only"])
def test_a_named_template_escaping_the_sandbox_is_refused_naming_its_key(tmp_path: Path, template: str,
                                                                         default: bool) -> None:
    choices = [{"name": "default", "template": CHATML}] if default else []
    path = _write(tmp_path, lambda w: w.add_chat_template([*choices, {"name": "tool_use", "template": RAG},
                                                           {"name": "rag", "template": template}]))
    report = scan_path(path)
    assert not report.safe
    assert [f.rule for f in report.findings] == ["gguf.chat-template"], report.reason
    assert "'tokenizer.chat_template.rag'" in report.findings[0].detail


def test_other_template_carriers_are_checked(tmp_path: Path) -> None:
    listed = _write(tmp_path, lambda w: w.add_array("tokenizer.chat_templates", ["missing"]), name="listed.gguf")
    assert "no tokenizer.chat_template.missing key" in scan_path(listed).reason
    jinja = _write(tmp_path, lambda w: w.add_string("general.description", "{% set x = 1 %}" + SUBCLASSES),
                   name="jinja.gguf")
    finding = scan_path(jinja).findings[0]
    assert finding.rule == "gguf.chat-template" and "'general.description'" in finding.detail
    other = _write(tmp_path, lambda w: w.add_string("tokenizer.rag.chat_template", CYCLER), name="other.gguf")
    assert "gguf.chat-template" in {f.rule for f in scan_path(other).findings}
    not_string = _write(tmp_path, lambda w: w.add_uint32("tokenizer.chat_template", 3), name="int.gguf")
    assert "is not a string" in scan_path(not_string).reason
    _safe(_write(tmp_path, lambda w: w.add_string("general.description", "uses {{ braces }} in prose"),
                 name="prose.gguf"))


def test_a_non_ascii_look_alike_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda w: w.add_string("tokenizer.chat_templ\u0430te", CHATML))
    assert "gguf.key" in {f.rule for f in scan_path(path).findings}


# -- malformed, truncated and oversized files: refused, never a crash ----------------------------------------


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _file(kvs: list[bytes], tensors: tuple[bytes, ...] | list[bytes] = (), data: bytes = b"", *,
          pad: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    if tensors:
        head += b"\x00" * (-len(head) % pad)
    return head + data


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _string(key.encode()) + struct.pack("<I", vtype) + payload


def _tensor(name: str, shape: tuple[int, ...], ttype: int = 0, offset: int = 0) -> bytes:
    return _string(name.encode()) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, ttype, offset)


def _findings(data: bytes) -> set[str]:
    out = Findings()
    reader.scan_gguf(io.BytesIO(data), len(data), "x.gguf", load_allowlist(), out)
    return {f.rule for f in out}


F32x4 = struct.pack("<4f", 1, 2, 3, 4)
BAD_FILES = {
    "bad-magic": (b"GGUX" + b"\x00" * 30, "gguf.malformed"),
    "version-1": (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "gguf.malformed"),
    "huge-key-count": (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "gguf.malformed"),
    "string-past-end": (_file([_kv("a", 8, struct.pack("<Q", 1 << 20) + b"x")]), "gguf.malformed"),
    "string-over-limit": (_file([_kv("a", 8, struct.pack("<Q", 1 << 62))]), "gguf.malformed"),
    "array-over-limit": (_file([_kv("a", 9, struct.pack("<IQ", 0, 1 << 40))]), "gguf.malformed"),
    "unknown-type": (_file([_kv("a", 13, b"\x00" * 8)]), "gguf.malformed"),
    "unknown-item-type": (_file([_kv("a", 9, struct.pack("<IQ", 99, 1))]), "gguf.malformed"),
    "bool-2": (_file([_kv("a", 7, b"\x02")]), "gguf.malformed"),
    "bool-array-2": (_file([_kv("a", 9, struct.pack("<IQ", 7, 2) + b"\x01\x05")]), "gguf.malformed"),
    "invalid-utf8": (_file([_kv("a", 8, _string(b"\xff\xfe"))]), "gguf.malformed"),
    "too-deep": (_file([_kv("a", 9, struct.pack("<IQ", 9, 1) * 9 + struct.pack("<IQ", 0, 0))]), "gguf.malformed"),
    "duplicate-key": (_file([_kv("a", 0, b"\x01"), _kv("a", 0, b"\x02")]), "gguf.duplicate-key"),
    "alignment-not-power": (_file([_kv("general.alignment", 4, struct.pack("<I", 48))]), "gguf.malformed"),
    "alignment-wrong-type": (_file([_kv("general.alignment", 10, struct.pack("<Q", 64))]), "gguf.malformed"),
    "trailing-no-tensors": (_file([_kv("a", 0, b"\x01")]) + b"payload", "gguf.trailing-data"),
    "dims-over-limit": (_file([], [_tensor("t", (1,) * 9)], F32x4), "gguf.malformed"),
    "unknown-tensor-type": (_file([], [_tensor("t", (4,), ttype=99)], F32x4), "gguf.tensor"),
    "partial-block": (_file([], [_tensor("t", (33,), ttype=8)], b"\x00" * 64), "gguf.tensor"),
    "int64-overflow": (_file([], [_tensor("t", (1 << 62, 4))], F32x4), "gguf.tensor"),
    "misaligned": (_file([], [_tensor("t", (4,), offset=4)], b"\x00" * 4 + F32x4), "gguf.offsets"),
    "overlap": (_file([], [_tensor("a", (8,)), _tensor("b", (4,), offset=0)], F32x4 * 2), "gguf.offsets"),
    "hidden-gap": (_file([], [_tensor("a", (4,)), _tensor("b", (4,), offset=64)], F32x4 + b"\x00" * 48 + F32x4),
                   "gguf.offsets"),
    "nonzero-padding": (_file([], [_tensor("a", (4,)), _tensor("b", (4,), offset=32)], F32x4 + b"\x01" * 16 + F32x4),
                        "gguf.padding"),
    "truncated-data": (_file([], [_tensor("t", (64,))], F32x4), "gguf.truncated"),
    "trailing-after-data": (_file([], [_tensor("t", (4,))], F32x4 + b"\x00" * 16 + b"payload"), "gguf.trailing-data"),
    "duplicate-tensor": (_file([], [_tensor("t", (4,)), _tensor("t", (4,), offset=32)], F32x4 + b"\x00" * 16 + F32x4),
                         "gguf.duplicate-tensor"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_malformed_files_are_refused_with_the_right_rule(name: str) -> None:
    data, rule = BAD_FILES[name]
    assert rule in _findings(data), _findings(data)


def test_the_hand_built_files_are_valid_when_unbroken() -> None:
    assert _findings(_file([], [_tensor("a", (4,)), _tensor("b", (4,), offset=32)], F32x4 + b"\x00" * 16 + F32x4)) == set()
    assert _findings(_file([_kv("a", 9, struct.pack("<IQ", 9, 1) * 7 + struct.pack("<IQ", 0, 0))])) == set()


def test_metadata_and_item_bounds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _write(tmp_path, _all_types).read_bytes()
    monkeypatch.setattr(reader, "MAX_METADATA_BYTES", 256)
    with pytest.raises(GGUFFormatError, match="metadata runs past"):
        parse_gguf(data)
    monkeypatch.setattr(reader, "MAX_METADATA_BYTES", 1 << 20)
    monkeypatch.setattr(reader, "MAX_TOTAL_ITEMS", 8)
    with pytest.raises(GGUFFormatError, match="strings and arrays together"):
        parse_gguf(data)


def test_every_truncation_is_refused_cleanly(tmp_path: Path) -> None:
    data = _write(tmp_path, _all_types).read_bytes()
    for cut in sorted({*range(0, 64), *range(64, len(data), 7), len(data) - 1}):
        assert _findings(data[:cut]), cut
        try:
            parsed = parse_gguf(data[:cut])
        except GGUFFormatError:
            continue
        assert parsed.issues and {r for _, r, _ in parsed.issues} <= {"gguf.truncated", "gguf.padding"}, cut


def test_random_mutations_never_crash(tmp_path: Path) -> None:
    seed = _write(tmp_path, _all_types).read_bytes()
    rng = random.Random(28)
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            data[position:position + rng.randint(1, 8)] = rng.randbytes(rng.randint(1, 8))
        with contextlib.suppress(GGUFFormatError):
            parse_gguf(bytes(data))
        _findings(bytes(data))  # never raises


def test_the_ggml_type_table_matches_gguf_py() -> None:
    theirs = {int(k): v for k, v in gguf.constants.GGML_QUANT_SIZES.items()}
    ours = dict(reader.GGML_TYPES)
    assert ours.pop(9) == (32, 36) and theirs.pop(9) == (32, 40)  # Q8_1: ggml's block is 36 bytes
    assert ours == theirs
