"""Wiring the transparency ledger into Cairn: what gets logged, with which key, and what pulls check.

Every verification record, validation record, attestation (ingestion record), publication and
revocation is appended to the store's ledger (:mod:`integrity.ledger`). A record is logged by
its store key and the SHA-256 of its bytes, so the ledger commits to the record's content:
``cairn ledger verify --records`` finds a record edited or deleted after it was logged, on top
of the ledger's own checks (an entry edited, removed or reordered breaks the signed tree heads).

The ledger key is ``$CAIRN_LEDGER_KEY`` (public key ``$CAIRN_LEDGER_PUBLIC_KEY``, default: the
private key's path with ``.pub``), else ``<home>/keys/ledger.{key,pub}``, created on first use.
Auditors pin the public key: ``cairn ledger verify --ledger-key ledger.pub``.

Optionally each signed tree head is also witnessed by a Rekor instance (``$CAIRN_REKOR_URL``):
see :func:`witness_head` and docs/distribution.md. Nothing here needs the network otherwise.
"""

import base64
import contextlib
import fcntl
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import CairnError, StoreError, VerificationError
from integrity.ledger import Ledger, LedgerError, TreeHead
from integrity.storage import ArtifactStore

LEDGER_KEY_ENV = "CAIRN_LEDGER_KEY"
LEDGER_PUBLIC_KEY_ENV = "CAIRN_LEDGER_PUBLIC_KEY"
REKOR_URL_ENV = "CAIRN_REKOR_URL"
REKOR_CERT_ENV = "CAIRN_LEDGER_CERT"
#: Record kinds as they are logged (the ledger entry's ``kind``).
RECORD_KINDS = {"verifications": "verification", "validations": "validation", "ingestions": "attestation",
                "conversions": "conversion", "revocations": "revocation"}


def ledger_key_paths(home: Path | None = None) -> tuple[Path, Path]:
    """(private, public) key paths of the ledger signer."""
    from integrity.settings import current

    settings = current(home=home)
    private = settings.ledger_key
    if private is not None:
        return private, settings.ledger_public_key or private.with_suffix(".pub")
    return settings.home / "keys" / "ledger.key", settings.home / "keys" / "ledger.pub"


def _ensure_key(private: Path, public: Path) -> None:
    """Create the ledger key pair once, even with several processes starting at the same time."""
    if private.is_file():
        return
    from integrity.trust.signing import generate_key_pair

    private.parent.mkdir(parents=True, exist_ok=True)
    with open(private.parent / ".ledger-key.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not private.is_file():
            generate_key_pair(private, public)


def open_ledger(store: ArtifactStore, *, home: Path | None = None, create_key: bool = True) -> Ledger:
    """The store's ledger with the signing key (created under ``home`` on first use)."""
    private, public = ledger_key_paths(home)
    if create_key:
        _ensure_key(private, public)
    elif not private.is_file():
        raise StoreError("no ledger signing key; cannot append to the ledger", artifact=private,
                         advice=f"Set ${LEDGER_KEY_ENV} to the ledger's private key.")
    return Ledger(store, private_key=private, public_key=public if public.is_file() else None)


def _after_append(ledger: Ledger, head: TreeHead) -> None:
    from integrity.settings import current

    if current().rekor_url:
        witness_head(ledger, head)


def append_entry(ledger: Ledger, kind: str, data: Mapping[str, Any]) -> int:
    index, head = ledger.append(kind, data)
    _after_append(ledger, head)
    return index


def log_record(store: ArtifactStore, key: str, *, kind: str | None = None, home: Path | None = None,
               ledger: Ledger | None = None) -> int:
    """Append a stored record (by key and content digest) to the ledger; returns its entry index."""
    raw = store.read_key(key)
    record: Any = None
    with contextlib.suppress(ValueError):
        record = safeio.loads(raw)
    parts = key.split("/")
    data: dict[str, Any] = {"record": key, "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(record, dict):
        if isinstance(record.get("predicateType"), str):
            data["predicateType"] = record["predicateType"]
        subjects = record.get("subject")
        if isinstance(subjects, list):
            data["subject"] = [{"name": s.get("name"), "digest": s.get("digest")} for s in subjects
                               if isinstance(s, dict)]
        predicate = record.get("predicate")
        if isinstance(predicate, dict) and isinstance(predicate.get("result"), str):
            data["result"] = predicate["result"]
    entry_kind = kind or RECORD_KINDS.get(parts[1] if len(parts) > 2 else "", "record")
    return append_entry(ledger or open_ledger(store, home=home), entry_kind, data)


class UnloggedRecordError(VerificationError):
    """A record a gate depends on is not in the signed ledger, or its bytes differ from what was logged."""

    kind = "record-unlogged"
    advice = ("Records that gates depend on are trusted only as the signed ledger logged them. Re-run the step "
              "that writes the record; if it was edited in the store, treat the store as tampered with.")


class LoggedRecords:
    """The records the verified, signed ledger vouches for: store key -> the SHA-256 digests logged for it.

    Built once per use (training, release, audit): the ledger is verified against its pinned public
    key first, and only entries covered by a signed tree head count.
    """

    def __init__(self, ledger: Ledger) -> None:
        try:
            report = ledger.verify()
        except LedgerError as exc:
            raise UnloggedRecordError(f"the ledger does not verify, so no record can be trusted: {exc.reason}",
                                      artifact=ledger.store.url) from exc
        self.store = ledger.store
        self.digests: dict[str, set[str]] = {}
        for entry in ledger.entries()[: report.signed_size]:
            data = entry.get("data") or {}
            if isinstance(data.get("record"), str) and isinstance(data.get("sha256"), str):
                self.digests.setdefault(data["record"], set()).add(data["sha256"])

    @classmethod
    def for_store(cls, store: ArtifactStore, home: Path | None = None) -> "LoggedRecords":
        """The store's ledger, checked with the public key under ``home`` (or ``$CAIRN_LEDGER_PUBLIC_KEY``)."""
        _, public = ledger_key_paths(home)
        if not public.is_file():
            raise UnloggedRecordError("no ledger public key to check records against", artifact=public,
                                      advice=f"Set ${LEDGER_PUBLIC_KEY_ENV} to the ledger's public key.")
        return cls(Ledger(store, public_key=public))

    def read(self, key: str) -> bytes:
        """The record's bytes, only if they are exactly what the ledger logged for this key."""
        logged = self.digests.get(key)
        if not logged:
            raise UnloggedRecordError("the record is not in the signed ledger",
                                      artifact=self.store.describe(key))
        raw = self.store.read_key(key)
        if hashlib.sha256(raw).hexdigest() not in logged:
            raise UnloggedRecordError("the record was changed after the ledger logged it",
                                      artifact=self.store.describe(key))
        return raw


def audit_records(ledger: Ledger) -> list[str]:
    """Records logged in the ledger that were since edited or deleted in the store (empty: all intact)."""
    problems = []
    for entry in ledger.entries():
        data = entry.get("data") or {}
        key, digest = data.get("record"), data.get("sha256")
        if not isinstance(key, str) or not isinstance(digest, str):
            continue
        try:
            raw = ledger.store.read_key(key)
        except CairnError:
            problems.append(f"entry {entry.get('index')}: record {key} was deleted")
            continue
        if hashlib.sha256(raw).hexdigest() != digest:
            problems.append(f"entry {entry.get('index')}: record {key} was changed after it was logged")
    return problems


def verify_ledger(ledger: Ledger, *, records: bool = False) -> Any:
    """``Ledger.verify`` plus, with ``records``, the logged records' contents."""
    report = ledger.verify()
    if records:
        problems = audit_records(ledger)
        if problems:
            raise LedgerError("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5
                                                          else ""))
    return report


# -- optional: a Rekor witness for tree heads ---------------------------------------------------


def witness_head(ledger: Ledger, head: TreeHead, *, url: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Upload a signed tree head to Rekor as a ``hashedrekord`` entry; the receipt is kept in the store.

    The verifier is ``$CAIRN_LEDGER_CERT`` (a PEM certificate for the ledger key) when set, else
    the ledger's PEM public key. With the head in a public log, a store operator can no longer
    fork the ledger (show different histories to different auditors) without it being visible.
    """
    import requests
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from integrity.settings import current
    from integrity.trust.signing import load_private_key, public_key_pem

    settings = current()
    base = (url or settings.rekor_url or "").rstrip("/")
    if not base or ledger.private_key is None:
        raise StoreError("Rekor witnessing needs $CAIRN_REKOR_URL and the ledger's private key")
    key = load_private_key(ledger.private_key)
    digest = hashlib.sha256(head.signed_part()).digest()
    signature = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    cert_path = settings.ledger_cert
    verifier = cert_path.read_bytes() if cert_path else public_key_pem(key.public_key())
    body: dict[str, Any] = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": base64.b64encode(signature).decode(),
                      "publicKey": {"content": base64.b64encode(verifier).decode()}}}}
    try:
        response = requests.post(f"{base}/api/v1/log/entries", json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise StoreError(f"Rekor upload failed: {exc}", artifact=base) from exc
    if response.status_code not in (200, 201):
        raise StoreError(f"Rekor refused the tree head: HTTP {response.status_code} {response.text[:200]}",
                         artifact=base)
    (uuid_, entry), *_ = response.json().items()
    receipt = {"rekor": base, "uuid": uuid_, "logIndex": entry.get("logIndex"),
               "integratedTime": entry.get("integratedTime"), "head": head.as_dict()}
    ledger.store.write_key(f"ledger/rekor/{head.size:012d}.json",
                                   json.dumps(receipt, indent=2, sort_keys=True).encode(), overwrite=True)
    return receipt
