"""Configs that name code: the callables a model folder's YAML/JSON configs make a loader import and call.

NeMo restores a ``.nemo`` model by calling ``hydra.utils.instantiate`` on its ``model_config.yaml``:
every ``_target_`` in it is imported and called (``_target_: os.system`` runs a command,
CVE-2025-23304). LightningCLI does the same with ``class_path``/``init_args``, NeMo and the CompVis
Stable Diffusion configs with ``target``/``cls`` (Hydra 0.x), sentence-transformers with the
``type`` of ``modules.json``, diffusers with the ``[library, class]`` pairs of
``model_index.json``. Every such name, wherever it sits (nested in mappings and lists), must be a
plain dotted path on the framework's allowlist in ``config_targets.json``; refusals name the file,
the key path (``model.optim._target_``) and the target. Also refused:

* a key that is a look-alike of one of those keys (``_target_`` spelled with a Cyrillic ``a``, a fullwidth
  or zero-width spelling, other case): the framework would ignore it, but no honest config spells
  its keys that way and a reviewer reading it would be misled;
* in YAML (OmegaConf) configs, an interpolation that calls a resolver other than the few listed
  (``${oc.create:...}`` and ``${oc.decode:...}`` build new config nodes, a ``_target_`` among them,
  at resolve time; custom resolvers such as ``eval`` run code);
* ``trust_remote_code: true`` at any depth.

YAML is read by :func:`integrity.safeio.parse_yaml` (no tags such as ``!!python/name``, no anchors
or aliases, no duplicate keys); JSON as the loader reads it (``json.loads``), the caller's business.
:func:`scan_config_bytes` is the bytes entry point for fuzzing.
"""

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from integrity.scans.modelgate._report import Finding, Findings
from integrity.scans.modelgate.targetlist import ConfigTargets, load_config_targets, target_refusal

HYDRA_SHAPE_KEYS = ("_partial_", "_args_")
#: Keys whose look-alikes are refused (besides the callable keys of ``config_targets.json``).
WATCHED_KEYS = ("_partial_", "_args_", "init_args", "_recursive_", "auto_map", "trust_remote_code")
#: Cyrillic and Greek letters that look like the Latin ones of the watched keys (NFKC handles fullwidth forms).
_LOOKALIKES, _LATIN = "аеорсухіјѕԁɡһкмтвнοατερικνυ", "aeopcyxijsdghkmtbhoatepikvu"
_CONFUSABLES = str.maketrans(dict(zip(_LOOKALIKES, _LATIN, strict=True)))
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _skeleton(key: str) -> str:
    folded = unicodedata.normalize("NFKC", key).casefold().translate(_CONFUSABLES)
    return "".join(c for c in folded if not c.isspace() and unicodedata.category(c) not in ("Cf", "Mn"))


def _join(trail: str, key: Any) -> str:
    label = key if isinstance(key, str) and key and key.isprintable() else repr(key)
    return f"{trail}.{label}" if trail else label


def _walk(document: Any) -> Iterator[tuple[str, Any, dict[Any, Any] | None, Any]]:
    """(key path, key, the mapping holding it or None for list items, value), depth first."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                path = _join(trail, key)
                yield path, key, node, value
                stack.append((value, path))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                path = f"{trail}[{index}]"
                yield path, index, None, item
                stack.append((item, path))


class _Checker:
    def __init__(self, where: str, out: Findings, targets: ConfigTargets, omegaconf: bool) -> None:
        self.where, self.out, self.targets, self.omegaconf = where, out, targets, omegaconf
        self.watched = {_skeleton(k): k for k in (*targets.keys, *WATCHED_KEYS)}

    def add(self, rule: str, detail: str, target: str | None = None) -> None:
        self.out.add(self.where, None, rule, detail, target)

    def target(self, path: str, key: str, value: Any, holder: dict[Any, Any]) -> None:
        framework = self.targets.keys[key]
        if key in ("target", "cls") and not (isinstance(value, str) and "." in value) and "params" not in holder:
            return  # a plain value, not the Hydra 0.x / NeMo class form
        if not isinstance(value, str):
            self.add("config.callable-target", f"{path}: {framework} target {value!r} is not a dotted path string")
            return
        why = target_refusal(value, framework, self.targets)
        if why is not None:
            self.add("config.callable-target", f"{path}: {framework} target {value[:120]!r} {why}", value[:200])

    def key(self, path: str, key: Any, value: Any, holder: dict[Any, Any] | None) -> None:
        if not isinstance(key, str) or holder is None:
            if isinstance(value, str) and self.omegaconf:
                self.interpolation(path, value)
            return
        if key in self.targets.keys:
            self.target(path, key, value, holder)
        elif self.lookalike(key):
            self.add("config.key-lookalike", f"{path}: key {key!r} is a look-alike of "
                     f"{self.watched[_skeleton(key)]!r} (confusable, fullwidth, zero-width or case variant)")
        if key == "trust_remote_code" and value is True:
            self.add("hf.remote-code", f"{path}: the config asks the loader to trust remote code")
        if key in HYDRA_SHAPE_KEYS and "_target_" not in holder:
            self.add("config.hydra-malformed", f"{path}: {key} without a _target_ beside it")
        if key == "_partial_" and not isinstance(value, bool):
            self.add("config.hydra-malformed", f"{path}: _partial_ must be true or false")
        if key == "_args_" and not isinstance(value, list):
            self.add("config.hydra-malformed", f"{path}: _args_ must be a list")
        if isinstance(value, str) and self.omegaconf:
            self.interpolation(path, value)

    def lookalike(self, key: str) -> bool:
        skeleton = _skeleton(key)
        if skeleton not in self.watched or key in WATCHED_KEYS:
            return False
        return not (key.isascii() and skeleton in ("target", "cls"))  # "Target:" is an ordinary word in data

    def interpolation(self, path: str, value: str) -> None:
        for match in _INTERPOLATION.finditer(value):
            if match.group(1) not in self.targets.resolvers:
                self.add("config.resolver", f"{path}: interpolation calls the resolver {match.group(1)!r}, which "
                         "is not on the allowlist (oc.create/oc.decode build nodes, custom resolvers run code)")

    def diffusers(self, document: dict[Any, Any], index: bool) -> None:
        name = document.get("_class_name")
        if name is not None and not (isinstance(name, str) and _IDENTIFIER.fullmatch(name)):
            self.add("diffusers.custom-code", f"_class_name {name!r} is not a diffusers class name (a [file, class] "
                     "pair or a dotted path loads pipeline code from the repository)", str(name)[:200])
        if not index:
            return
        libraries = self.targets.diffusers_libraries
        for key, value in document.items():
            if not isinstance(key, str) or key.startswith("_"):
                continue
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | None)):
                continue  # a pipeline option (requires_safety_checker), not a [library, class] component
            if value == [None, None]:
                continue
            if value[0] not in libraries or not isinstance(value[1], str) or not _IDENTIFIER.fullmatch(value[1]):
                self.add("diffusers.component", f"{key}: component {value!r} is not a [library, class] pair from "
                         "diffusers, transformers or a diffusers pipeline module", repr(value)[:200])

    def modules(self, document: Any) -> None:
        entries = document if isinstance(document, list) else []
        if not entries or not all(isinstance(e, dict) for e in entries):
            self.add("config.callable-target", "modules.json is not a list of module entries")
            return
        for index, entry in enumerate(entries):
            value = entry.get("type")
            why = (target_refusal(value, "sentence-transformers", self.targets) if isinstance(value, str)
                   else "is not a dotted path string")
            if why is not None:
                self.add("config.callable-target", f"[{index}].type: sentence-transformers module {value!r} {why}",
                         str(value)[:200])


def check_config_targets(document: Any, name: str, where: str, out: Findings, *, omegaconf: bool = False) -> None:
    """Add a finding for every callable ``document`` names that its framework's allowlist does not list."""
    checker = _Checker(where, out, load_config_targets(), omegaconf)
    for path, key, holder, value in _walk(document):
        checker.key(path, key, value, holder)
    if isinstance(document, str) and omegaconf:
        checker.interpolation("(document)", document)
    lower = name.lower()
    if isinstance(document, dict) and ("_diffusers_version" in document or lower.endswith("model_index.json")):
        checker.diffusers(document, lower.endswith("model_index.json"))
    if lower.endswith("modules.json"):
        checker.modules(document)


def parse_config(data: bytes, name: str = "config.yaml") -> Any:
    """A config as its loader reads it: YAML (strictly, see :mod:`integrity.safeio`) or JSON (``json.loads``).

    Raises :class:`integrity.safeio.InputFormatError` (a ``CairnError``) for anything unreadable.
    """
    from integrity.safeio import InputFormatError, parse_yaml
    from integrity.scans.modelgate.tensors import loader_json

    if name.lower().endswith((".yaml", ".yml")):
        return parse_yaml(data, artifact=name)
    try:
        return loader_json(data)[0]
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputFormatError(f"not JSON a loader can read: {exc}", artifact=name) from exc


def scan_config_bytes(data: bytes, name: str = "config.yaml") -> list[Finding]:
    """Fuzzing entry point: the callable-target findings for a config's bytes (raises ``InputFormatError``)."""
    document = parse_config(data, name)
    out = Findings()
    check_config_targets(document, name, name, out, omegaconf=name.lower().endswith((".yaml", ".yml")))
    return list(out)
