"""The reviewed, versioned data that says which callables a config may name (``config_targets.json``)."""

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from integrity.settings import package_data

CONFIG_TARGETS_PATH = package_data("config_targets.json")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class ConfigTargetsError(ValueError):
    """``config_targets.json`` itself is malformed: the gate refuses to run on it."""


@dataclass(frozen=True)
class FrameworkTargets:
    prefixes: tuple[str, ...]
    names: frozenset[str]


@dataclass(frozen=True)
class ConfigTargets:
    version: int
    #: key -> framework whose allowlist judges its value (``_target_`` -> ``hydra``).
    keys: dict[str, str]
    frameworks: dict[str, FrameworkTargets]
    refused_prefixes: tuple[str, ...]
    refused_segments: frozenset[str]
    diffusers_libraries: frozenset[str]
    resolvers: frozenset[str]


def _entries(section: Any, field: str, where: str) -> list[str]:
    if not isinstance(section, list):
        raise ConfigTargetsError(f"config targets: {where} must be a list")
    values = []
    for entry in section:
        value = entry.get(field) if isinstance(entry, dict) else None
        why = entry.get("why") if isinstance(entry, dict) else None
        if not (isinstance(value, str) and value and isinstance(why, str) and why.strip()):
            raise ConfigTargetsError(f"config targets: every {where} entry needs {field} and why: {entry!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise ConfigTargetsError(f"config targets: {where} lists a {field} twice")
    return values


def _framework(name: str, data: Any) -> FrameworkTargets:
    if not isinstance(data, dict) or not isinstance(data.get("why"), str):
        raise ConfigTargetsError(f"config targets: framework {name} needs prefixes, names and why")
    prefixes = _entries(data.get("prefixes"), "prefix", f"{name} prefixes")
    names = _entries(data.get("names"), "name", f"{name} names")
    for prefix in prefixes:
        if not prefix.endswith(".") or not _DOTTED.fullmatch(prefix[:-1]):
            raise ConfigTargetsError(f"config targets: prefix {prefix!r} must be a dotted package path ending in '.'")
    for exact in names:
        if not _DOTTED.fullmatch(exact) or "." not in exact:
            raise ConfigTargetsError(f"config targets: name {exact!r} must be an exact dotted path")
    return FrameworkTargets(tuple(prefixes), frozenset(names))


def parse_config_targets(data: Any) -> ConfigTargets:
    """Validate the document; an empty or malformed list is an error, never 'allow all'."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise ConfigTargetsError("config targets must be an object with an integer version")
    keys: dict[str, str] = {}
    for entry in data.get("callable_keys", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("why"), str):
            raise ConfigTargetsError(f"config targets: callable key entry needs key, framework and why: {entry!r}")
        keys[str(entry["key"])] = str(entry["framework"])
    frameworks = {name: _framework(name, section) for name, section in dict(data.get("frameworks", {})).items()}
    if not keys or set(keys.values()) - set(frameworks):
        raise ConfigTargetsError("config targets: callable keys missing or naming an unknown framework")
    segments: set[str] = set()
    for group in data.get("refused_segments", []):
        if not isinstance(group, dict) or not isinstance(group.get("why"), str) or not group.get("segments"):
            raise ConfigTargetsError(f"config targets: refused segment group needs segments and why: {group!r}")
        segments.update(str(s) for s in group["segments"])
    return ConfigTargets(
        version=data["version"], keys=keys, frameworks=frameworks,
        refused_prefixes=tuple(_entries(data.get("refused_prefixes"), "prefix", "refused_prefixes")),
        refused_segments=frozenset(segments),
        diffusers_libraries=frozenset(_entries(data.get("diffusers_libraries"), "name", "diffusers_libraries")),
        resolvers=frozenset(_entries(data.get("omegaconf_resolvers"), "name", "omegaconf_resolvers")),
    )


@lru_cache(maxsize=1)
def load_config_targets() -> ConfigTargets:
    return parse_config_targets(json.loads(CONFIG_TARGETS_PATH.read_text(encoding="utf-8")))


def target_refusal(target: str, framework: str, targets: ConfigTargets) -> str | None:
    """Why a config may not name ``target`` for ``framework``; None when it is on that framework's allowlist."""
    if not _DOTTED.fullmatch(target):
        return "is not a plain dotted Python path (spaces, slashes, interpolation or non-ASCII characters)"
    parts = target.split(".")
    private = next((p for p in parts if p.startswith("_")), None)
    if private is not None:
        return f"reaches the private or dunder name {private!r}"
    refused = next((p for p in parts if p in targets.refused_segments), None)
    if refused is not None:
        return f"goes through {refused!r}, which runs code, loads, imports or touches files or the network"
    prefix = next((p for p in targets.refused_prefixes if f"{target}.".startswith(p)), None)
    if prefix is not None:
        return f"is under {prefix[:-1]}, which is refused"
    allowed = targets.frameworks[framework]
    if target in allowed.names or any(target.startswith(p) and len(target) > len(p) for p in allowed.prefixes):
        return None
    return f"is not on the {framework} allowlist of known-safe classes (config_targets.json)"
