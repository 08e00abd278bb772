"""The reviewed, versioned data that says what the gate lets through (``allowlist.json``)."""

import json
from dataclasses import dataclass, field
from functools import lru_cache

from integrity.settings import package_data

ALLOWLIST_PATH = package_data("allowlist.json")


@dataclass(frozen=True)
class Allowlist:
    version: int
    callables: frozenset[tuple[str, str]]
    keras_modules: frozenset[str]
    keras_class_names: frozenset[str]
    keras_refused: frozenset[str]
    onnx_domains: frozenset[str]
    tf_refused_ops: frozenset[str]
    #: Names a pickle may import but never call, by role (``dtype``, ``qscheme``, ``storage``).
    values: dict[tuple[str, str], str] = field(default_factory=dict, hash=False)

    def allows(self, module: str, name: str) -> bool:
        return (module, name) in self.callables

    def value_role(self, module: str, name: str) -> str | None:
        """The role of an importable non-callable value (a dtype object, say), or None if it is not one."""
        return self.values.get((module, name))


class AllowlistError(ValueError):
    """The allowlist file itself is malformed: the gate refuses to run on it."""


#: What a listed value may be used as (see :mod:`integrity.scans.modelgate.rebuilds`).
VALUE_ROLES = ("dtype", "qscheme", "storage")


def _exact_name(entry: object, pairs: set[tuple[str, str]]) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise AllowlistError(f"allowlist entry must be an object: {entry!r}")
    module, name, why = entry.get("module"), entry.get("name"), entry.get("why")
    if not (isinstance(module, str) and isinstance(name, str) and isinstance(why, str) and why.strip()):
        raise AllowlistError(f"allowlist entry needs module, name and why: {entry!r}")
    if "." in name or not name.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise AllowlistError(f"callable {module}.{name}: names must be exact identifiers, never dotted paths")
    if (module, name) in pairs:
        raise AllowlistError(f"callable {module}.{name} is listed twice")
    pairs.add((module, name))
    return module, name


def parse_allowlist(data: object) -> Allowlist:
    """Validate the allowlist document; an empty or malformed allowlist is an error, never 'allow all'."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise AllowlistError("allowlist must be an object with an integer version")
    pairs: set[tuple[str, str]] = set()
    for entry in data["pickle"]["callables"]:
        _exact_name(entry, pairs)
    if not pairs:
        raise AllowlistError("the pickle allowlist is empty")
    values: dict[tuple[str, str], str] = {}
    for entry in data["pickle"].get("values", []):
        pair = _exact_name(entry, pairs)  # a name is a callable or a value, never both
        if entry.get("role") not in VALUE_ROLES:
            raise AllowlistError(f"value {'.'.join(pair)}: role must be one of {VALUE_ROLES}")
        values[pair] = str(entry["role"])
    keras, onnx, tf = data["keras"], data["onnx"], data["tensorflow"]
    return Allowlist(
        version=data["version"],
        callables=frozenset(pairs - set(values)),
        keras_modules=frozenset(str(m) for m in keras["modules"]),
        keras_class_names=frozenset(str(c) for c in keras["class_names"]),
        keras_refused=frozenset(str(c) for c in keras["refused_class_names"]),
        onnx_domains=frozenset(str(d) for d in onnx["domains"]),
        tf_refused_ops=frozenset(str(o) for o in tf["refused_ops"]),
        values=values,
    )


@lru_cache(maxsize=1)
def load_allowlist() -> Allowlist:
    return parse_allowlist(json.loads(ALLOWLIST_PATH.read_text(encoding="utf-8")))
