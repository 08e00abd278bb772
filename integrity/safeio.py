"""Reading the files Cairn is handed, strictly and within bounds.

Every YAML and JSON document Cairn reads (trust policy, catalog, release spec, release policy,
records, bundles, tickets, ledger entries) goes through here, so that one set of rules holds:

* **no duplicate keys**: a reviewed policy with a second ``vendor:`` entry appended at the bottom
  would otherwise silently replace the reviewed one (PyYAML and ``json`` keep the last);
* **no YAML aliases or anchors**: nested aliases expand exponentially (a 1.6 KB "billion laughs"
  policy grows without bound); Cairn's files never need them;
* **bounded size**: configuration files are small; a 5 MB YAML file already takes the pure-Python
  parser half a minute;
* **regular files only**: a FIFO, a device or a socket passed as a bundle, key or policy would
  block a reader forever or feed it endless bytes; it is refused without being opened for a
  blocking read.

Errors are :class:`InputFormatError` (a usage/input error, exit 2) unless the caller names a
more specific class, and always name the file.
"""

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from integrity.errors import CairnError, UsageError

#: Configuration files (policy, catalog, release spec, release policy): far above any real one.
MAX_CONFIG_BYTES = 1 << 20
#: JSON documents Cairn writes and reads back (records, indexes, bundles, tickets, ledger entries).
MAX_DOCUMENT_BYTES = 64 << 20
#: Nesting beyond which a document is refused rather than recursed into.
MAX_DEPTH = 64


class InputFormatError(UsageError):
    """A file Cairn reads is malformed, ambiguous, too large or not a regular file."""

    kind = "input-invalid"
    advice = "Fix the file; Cairn refuses to act on a file it cannot read unambiguously."


def read_regular_file(path: str | Path, *, what: str = "file", max_bytes: int = MAX_DOCUMENT_BYTES,
                      error: type[CairnError] = InputFormatError) -> bytes:
    """The bytes of a regular file (symlinks followed), refusing FIFOs, devices, sockets and oversize files."""
    where = Path(path)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise error(f"{what} does not exist", artifact=where) from exc
    except OSError as exc:
        raise error(f"cannot open {what}: {exc.strerror or exc}", artifact=where) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode)
                    else "a device or socket")
            raise error(f"{what} is {kind}, not a regular file", artifact=where)
        if info.st_size > max_bytes:
            raise error(f"{what} is {info.st_size} bytes, over the {max_bytes} byte limit", artifact=where)
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{what} grew past the {max_bytes} byte limit while being read", artifact=where)
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", artifact=where) from exc
    finally:
        os.close(fd)


# -- YAML -------------------------------------------------------------------------------------------------

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate mapping keys (the constructor is Python even over libyaml)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError as exc:
                raise yaml.constructor.ConstructorError(None, None, f"unhashable mapping key ({exc})",
                                                        key_node.start_mark) from exc
            if duplicate:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {line}; first on line {seen[key]}): the last would "
                    "silently win", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def _line(event: yaml.Event) -> int | str:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else "?"


def parse_yaml(text: bytes | str, *, artifact: str | Path | None = None,
               error: type[CairnError] = InputFormatError, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """One YAML document, strictly: bounded size, no aliases or anchors, no duplicate keys, safe tags only."""
    size = len(text)
    if size > max_bytes:
        raise error(f"YAML of {size} bytes is over the {max_bytes} byte limit", artifact=artifact)
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_BaseLoader):
            if isinstance(event, yaml.AliasEvent):
                raise error(f"YAML alias *{event.anchor} (line {_line(event)}): aliases are refused",
                            artifact=artifact)
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise error(f"YAML anchor &{anchor} (line {_line(event)}): anchors are refused",
                            artifact=artifact)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise error(f"YAML nested deeper than {MAX_DEPTH} levels", artifact=artifact)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"not valid YAML: {exc}", artifact=artifact) from exc
    except RecursionError as exc:
        raise error("YAML nested too deeply", artifact=artifact) from exc


def load_yaml_file(path: str | Path, *, what: str = "YAML file", error: type[CairnError] = InputFormatError,
                   max_bytes: int = MAX_CONFIG_BYTES) -> tuple[bytes, Any]:
    """(bytes, document) of a YAML file read by :func:`read_regular_file` and :func:`parse_yaml`."""
    raw = read_regular_file(path, what=what, max_bytes=max_bytes, error=error)
    return raw, parse_yaml(raw, artifact=path, error=error, max_bytes=max_bytes)


# -- JSON -------------------------------------------------------------------------------------------------


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # A JSONDecodeError (a ValueError), so callers that catch decode errors catch this too.
            raise json.JSONDecodeError(f"duplicate key {key!r}: the last would silently win", "", 0)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that refuses duplicate keys (raising ``ValueError`` like ``json.loads`` does)."""
    return json.loads(raw, object_pairs_hook=_unique_pairs)


def parse_json(raw: bytes | str, *, artifact: str | Path | None = None, error: type[CairnError] = InputFormatError,
               what: str = "JSON", allow_nan: bool = True, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """A JSON document with duplicate keys refused (and NaN/Infinity too unless ``allow_nan``)."""
    if len(raw) > max_bytes:
        raise error(f"{what} of {len(raw)} bytes is over the {max_bytes} byte limit", artifact=artifact)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if allow_nan:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON: {exc}", artifact=artifact) from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply", artifact=artifact) from exc


def parse_json_object(raw: bytes | str, **kwargs: Any) -> dict[str, Any]:
    """:func:`parse_json`, and the document must be an object."""
    data = parse_json(raw, **kwargs)
    if not isinstance(data, dict):
        error: type[CairnError] = kwargs.get("error", InputFormatError)
        raise error(f"{kwargs.get('what', 'JSON')} is not a JSON object", artifact=kwargs.get("artifact"))
    return data


def load_json_file(path: str | Path, *, what: str = "JSON file", error: type[CairnError] = InputFormatError,
                   max_bytes: int = MAX_DOCUMENT_BYTES, allow_nan: bool = True) -> Any:
    raw = read_regular_file(path, what=what, max_bytes=max_bytes, error=error)
    return parse_json(raw, artifact=path, error=error, what=what, allow_nan=allow_nan, max_bytes=max_bytes)
