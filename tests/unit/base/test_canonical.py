"""One canonical JSON (RFC 8785) for what is signed or hashed; older ledgers (legacy compact JSON) still verify."""

import hashlib
import json
from pathlib import Path

import pytest

from integrity.canonical import RFC8785, canonical_json, legacy_compact
from integrity.errors import UsageError
from integrity.ledger import Ledger
from integrity.storage import open_store
from integrity.trust.signing import generate_key_pair


def test_rfc8785_form() -> None:
    data = {"b": 1, "a": [1.5, 1e-7, "é", None, True], "€": {"z": 0}}
    assert canonical_json(data) == '{"a":[1.5,1e-7,"é",null,true],"b":1,"€":{"z":0}}'.encode()
    assert legacy_compact(data) != canonical_json(data)  # floats differ: 1e-07 in the legacy form
    with pytest.raises(UsageError):
        canonical_json({"too big": 2**60})


def test_new_entries_are_rfc8785_and_old_legacy_entries_still_verify(tmp_path: Path) -> None:
    private, public = tmp_path / "l.key", tmp_path / "l.pub"
    generate_key_pair(private, public)
    store = open_store(tmp_path / "store")
    ledger = Ledger(store, private_key=private, public_key=public)
    ledger.append("scan", {"score": 1e-7, "name": "é"})
    raw = (tmp_path / "store" / "ledger" / "entries" / "000000000000.json").read_bytes()
    entry = json.loads(raw)
    assert entry["canonical"] == RFC8785 and raw == canonical_json(entry)
    # An entry as an older Cairn wrote it: no marker, legacy compact bytes and digest.
    data = {"score": 2.5e-8}
    old = {"index": 1, "kind": "scan", "digest": "sha256:" + hashlib.sha256(legacy_compact(data)).hexdigest(),
           "appended_at": "2026-01-01T00:00:00+00:00", "data": data}
    (tmp_path / "store" / "ledger" / "entries" / "000000000001.json").write_bytes(legacy_compact(old))
    ledger.sign_head()
    report = ledger.verify()
    assert report.size == 2 and report.signed_size == 2
    # Relabelling the old entry as RFC 8785 changes its leaf: refused.
    (tmp_path / "store" / "ledger" / "entries" / "000000000001.json").write_bytes(
        canonical_json({**old, "canonical": RFC8785}))
    with pytest.raises(Exception, match=r"edited|root|head"):
        ledger.verify()
