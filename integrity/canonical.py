"""One canonical JSON for everything Cairn signs or hashes: RFC 8785 (JSON Canonicalization Scheme).

``canonical_json`` is what new ledger entries and tree heads, store tree documents and signed
in-toto payloads are written in. Older Cairn versions wrote compact JSON with sorted keys
(:func:`legacy_compact`); readers accept both where a stored form is recomputed (the ledger marks
each entry with the form it was written in). For text, integers and booleans the two forms agree
byte for byte; they can differ only in how floats are written and in the order of non-BMP keys.

Base layer: imports only the ``rfc8785`` package (a sigstore dependency) and :mod:`integrity.errors`.
"""

import json
from typing import Any

from integrity.errors import UsageError

#: The marker a ledger entry carries when it was written in RFC 8785 form.
RFC8785 = "rfc8785"


def canonical_json(data: Any) -> bytes:
    """``data`` in RFC 8785 form (UTF-8, sorted keys, no whitespace, ES6 number formatting)."""
    import rfc8785

    try:
        return bytes(rfc8785.dumps(data))
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot write canonical JSON: {exc}") from exc


def legacy_compact(data: Any) -> bytes:
    """The compact sorted-key JSON Cairn wrote before RFC 8785 (read, never written)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(data: Any, form: str | None) -> bytes:
    """``data`` in the named form: ``rfc8785``, or the legacy form for anything older (``None``)."""
    return canonical_json(data) if form == RFC8785 else legacy_compact(data)
