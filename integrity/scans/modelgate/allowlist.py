"""The reviewed, versioned data that says what the gate lets through (``allowlist.json``)."""

import json
from dataclasses import dataclass
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

    def allows(self, module: str, name: str) -> bool:
        return (module, name) in self.callables


class AllowlistError(ValueError):
    """The allowlist file itself is malformed: the gate refuses to run on it."""


def parse_allowlist(data: object) -> Allowlist:
    """Validate the allowlist document; an empty or malformed allowlist is an error, never 'allow all'."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise AllowlistError("allowlist must be an object with an integer version")
    pairs: set[tuple[str, str]] = set()
    for entry in data["pickle"]["callables"]:
        module, name, why = entry.get("module"), entry.get("name"), entry.get("why")
        if not (isinstance(module, str) and isinstance(name, str) and isinstance(why, str) and why.strip()):
            raise AllowlistError(f"callable entry needs module, name and why: {entry!r}")
        if "." in name or not name.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
            raise AllowlistError(f"callable {module}.{name}: names must be exact identifiers, never dotted paths")
        if (module, name) in pairs:
            raise AllowlistError(f"callable {module}.{name} is listed twice")
        pairs.add((module, name))
    if not pairs:
        raise AllowlistError("the pickle allowlist is empty")
    keras, onnx, tf = data["keras"], data["onnx"], data["tensorflow"]
    return Allowlist(
        version=data["version"],
        callables=frozenset(pairs),
        keras_modules=frozenset(str(m) for m in keras["modules"]),
        keras_class_names=frozenset(str(c) for c in keras["class_names"]),
        keras_refused=frozenset(str(c) for c in keras["refused_class_names"]),
        onnx_domains=frozenset(str(d) for d in onnx["domains"]),
        tf_refused_ops=frozenset(str(o) for o in tf["refused_ops"]),
    )


@lru_cache(maxsize=1)
def load_allowlist() -> Allowlist:
    return parse_allowlist(json.loads(ALLOWLIST_PATH.read_text(encoding="utf-8")))
