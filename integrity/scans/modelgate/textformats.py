"""Text inside a model: accepted only when it is positively a known text format for its place.

By the time a file reaches this module the pickle oracle has said no real unpickler reads it as a
pickle. That is not enough to call it harmless text: the loaders that read a model folder's text
files (transformers, Keras, sentence-transformers, tokenizers) read JSON configs with
``json.loads``, which takes ``NaN`` and keeps the *last* of two duplicated keys, while a strict
reader rejects both. A gate that falls back to "just text" when its strict reader fails skips the
``auto_map`` and Keras ``Lambda`` rules the loader then obeys. So:

* a file named like JSON (``*.json``), or of an unknown name that starts like JSON, is read both
  ways; either reading failing, or the two disagreeing, is a refusal, and the rules (remote code,
  Keras objects, chat templates) are applied to what the *loader* reads;
* YAML and TOML by name must parse with a safe, strict reader (no tags, aliases or duplicate keys);
* in every config (JSON, YAML, TOML), the callables it names (Hydra/NeMo ``_target_``, Lightning
  ``class_path``, diffusers and sentence-transformers registries) must be on the allowlist of
  ``config_targets.json`` (see :mod:`integrity.scans.modelgate.configtargets`);
* Jinja chat templates (``*.jinja``, ``chat_template`` in a tokenizer config) must pass
  :func:`integrity.scans.modelgate.templates.check_chat_template`;
* plain text is accepted under the names models ship it with (README, LICENSE, ``vocab.txt``,
  ``merges.txt``, ``*.md``, ...); any other text, and an empty file, is refused as unidentified.
"""

import tomllib
from pathlib import Path
from typing import Any

from integrity.scans.modelgate import keras
from integrity.scans.modelgate._report import Findings
from integrity.scans.modelgate.allowlist import Allowlist
from integrity.scans.modelgate.configtargets import check_config_targets
from integrity.scans.modelgate.templates import check_chat_template
from integrity.scans.modelgate.tensors import loader_json

MAX_TEXT_BYTES = 64 << 20
PLAIN_SUFFIXES = (".txt", ".md", ".rst", ".csv", ".tsv", ".vocab", ".license", ".cff")
PLAIN_NAMES = {"readme", "license", "licence", "notice", "copying", "authors", "contributors", "changelog",
               "citation", ".gitattributes", ".gitignore", "vocab", "merges", "version", "usage_policy",
               "model_card", "model-card", "requirements"}
JSON_SUFFIXES = (".json", ".jsonl", ".ipynb-config")
YAML_SUFFIXES = (".yaml", ".yml")
TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2")


def _plain_name(name: str) -> bool:
    lower = name.lower()
    stem = lower.split(".", 1)[0] if not lower.startswith(".") else lower
    return lower.endswith(PLAIN_SUFFIXES) or stem in PLAIN_NAMES or lower in PLAIN_NAMES


def _check_document(document: Any, name: str, where: str, allowlist: Allowlist, out: Findings) -> str:
    """The rules for what a config's loader does with it; returns the format name."""
    kind = "json"
    if isinstance(document, dict) and "auto_map" in document:
        out.add(where, None, "hf.remote-code", "config maps classes to code in the repository (auto_map)")
    if isinstance(document, dict) and "custom_pipelines" in document:
        out.add(where, None, "hf.remote-code", "config maps pipelines to code in the repository (custom_pipelines)")
    check_config_targets(document, name, where, out)  # trust_remote_code at any depth, callable targets
    if isinstance(document, dict) and "chat_template" in document:
        templates = document["chat_template"]
        entries = templates if isinstance(templates, list) else [{"template": templates}]
        for entry in entries:
            source = entry.get("template") if isinstance(entry, dict) else None
            if not isinstance(source, str):
                out.add(where, None, "template.malformed", "chat_template is not a template string")
                continue
            verdict = check_chat_template(source)
            if not verdict.safe:
                out.add(where, None, "template.unsafe", f"chat template refused: {verdict.reason}")
    if isinstance(document, dict) and "class_name" in document and "config" in document:
        keras.check_config(document, where, None, allowlist, out)
        kind = "keras-config"
    return kind


def _json(raw: bytes, name: str, where: str, allowlist: Allowlist, out: Findings) -> str:
    try:
        lenient, why = loader_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        out.add(where, None, "json.malformed", f"{name} is not JSON a loader can read: {exc}")
        return "json"
    if why is not None:
        out.add(where, None, "json.ambiguous",
                f"{name} reads differently to a strict and a lenient JSON reader ({why}); loaders use the lenient one")
    return _check_document(lenient, name, where, allowlist, out)


def _jsonl(raw: bytes, name: str, where: str, allowlist: Allowlist, out: Findings) -> str:
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            _json(line, f"{name} line {number}", where, allowlist, out)
    return "jsonl"


def _yaml(raw: bytes, name: str, where: str, out: Findings) -> str:
    from integrity.safeio import InputFormatError, parse_yaml

    try:
        document = parse_yaml(raw, artifact=where)
    except InputFormatError as exc:
        out.add(where, None, "yaml.refused", f"{name}: {exc.reason}")
        return "yaml"
    check_config_targets(document, name, where, out, omegaconf=True)  # Hydra, NeMo, Lightning read YAML
    return "yaml"


def _toml(raw: bytes, name: str, where: str, out: Findings) -> str:
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        out.add(where, None, "toml.malformed", f"{name} is not TOML: {exc}")
        return "toml"
    check_config_targets(document, name, where, out)
    return "toml"


def check_text(path: Path, where: str, allowlist: Allowlist, out: Findings) -> str:
    """Identify and check a text file; anything not positively known is a finding. Returns its format."""
    name = path.name
    lower = name.lower()
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        out.add(where, None, "text.too-large", f"text file of {size} bytes is over the {MAX_TEXT_BYTES} byte limit")
        return "text"
    raw = path.read_bytes()
    if lower.endswith(".jsonl"):
        return _jsonl(raw, name, where, allowlist, out)
    if lower.endswith(JSON_SUFFIXES):
        return _json(raw, name, where, allowlist, out)
    if lower.endswith(YAML_SUFFIXES):
        return _yaml(raw, name, where, out)
    if lower.endswith(".toml"):
        return _toml(raw, name, where, out)
    if lower.endswith(TEMPLATE_SUFFIXES) or lower.startswith("chat_template"):
        verdict = check_chat_template(raw.decode("utf-8"))
        if not verdict.safe:
            out.add(where, None, "template.unsafe", f"chat template refused: {verdict.reason}")
        return "chat-template"
    if _plain_name(name):
        return "text"
    if raw.lstrip()[:1] in (b"{", b"["):
        return _json(raw, name, where, allowlist, out)  # a config without the usual name: read as its loader would
    out.add(where, None, "format.unknown",
            f"text file {name!r} is not a text format the gate knows for a model (JSON, YAML, TOML, a chat "
            "template, or plain text such as README, LICENSE, vocab.txt, merges.txt)")
    return "text"
