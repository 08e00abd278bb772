"""Typed schemas (pydantic v2, ``extra="forbid"``) of every file Cairn reads or writes, and their JSON Schemas.

The hand-written parsers (catalog, policy, spec, suite) stay the authority on meaning: they check
what a schema cannot (keys exist, paths resolve, fingerprints match). The schemas are there for two
things: a parser that rejects a file adds *every* schema problem in it, with its location
(:func:`problems`), and users get editor validation from the JSON Schemas published in
``docs/schemas/`` (regenerate with ``python -m integrity.schemas docs/schemas``; a test keeps them current).

Base layer: imports only pydantic (lazily, so light commands never load it) and :mod:`integrity.errors`.
"""

import importlib
import json
from pathlib import Path
from typing import Any

#: File kind -> (module, model class name). One entry per file format.
MODELS: dict[str, tuple[str, str]] = {
    "catalog": ("integrity.schemas.files", "CatalogFile"),
    "trust-policy": ("integrity.schemas.files", "TrustPolicyFile"),
    "release-spec": ("integrity.schemas.files", "ReleaseSpecFile"),
    "expectation-suite": ("integrity.schemas.files", "ExpectationSuiteFile"),
    "project": ("integrity.schemas.files", "ProjectFile"),
    "release-index": ("integrity.schemas.written", "ReleaseIndexFile"),
    "record": ("integrity.schemas.written", "RecordFile"),
    "screen-report": ("integrity.schemas.written", "ScreenReport"),
}


def model(kind: str) -> Any:
    module, name = MODELS[kind]
    return getattr(importlib.import_module(module), name)


def json_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = model(kind).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://cairn.dev/schemas/{kind}.schema.json"
    return schema


def render(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"


def problems(kind: str, data: Any) -> list[str]:
    """Every schema problem in ``data`` as ``location: message`` (empty: the shape is right)."""
    from pydantic import ValidationError

    try:
        model(kind).model_validate(data)
    except ValidationError as exc:
        found = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            found.append(f"{where}: {error['msg']}")
        return found
    return []


def with_problems(reason: str, kind: str, data: Any) -> str:
    """``reason``, followed by every schema problem of the file when there is more than that one."""
    try:
        found = problems(kind, data)
    except Exception:
        return reason
    if not found:
        return reason
    return reason + f"\nall {len(found)} problem(s) in this file:\n" + "\n".join(f"  - {p}" for p in found)


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in MODELS:
        path = folder / f"{kind}.schema.json"
        path.write_text(render(kind))
        written.append(path)
    return written


def add_problems(error: Any, kind: str, document: Any) -> None:
    """Extend a parser's error (a CairnError) with every schema problem of the whole document."""
    reason = with_problems(error.reason, kind, document)
    if reason != error.reason:
        error.reason = reason
        error.args = (error.summary(),)
