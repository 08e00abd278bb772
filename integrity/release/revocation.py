"""Signed revocations: a release, source, signer, policy version or artifact that must no longer be trusted.

A revocation is an in-toto statement signed by a revocation authority (by default the
pipeline's release identity) and kept in the artifact store under ``records/revocations/``.
Readers load the list with the authority they pin; an entry whose signature does not verify
is not ignored but stops the read (fail closed: someone wrote to the store who should not).

Subjects are exact strings per kind::

    release   MODEL@VERSION            (a published release)
    source    NAME                     (a catalog source: every version of it)
    signer    sha256:<key or cert fingerprint> | <Sigstore identity>
    policy    sha256:<policy file digest> (a reviewed policy version)
    artifact  sha256:<content digest>  (exact bytes, whatever they are called)
"""

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from integrity import safeio
from integrity.errors import RevokedError, StoreError, UsageError, VerificationError
from integrity.storage import ArtifactStore, MissingObjectError
from integrity.trust.policy import SignerRule
from integrity.trust.signing import Signer
from integrity.trust.statements import statement
from integrity.trust.statements import subject as subject_of

REVOCATION_PREDICATE_TYPE = "https://cairn.dev/attestations/revocation/v1"
RECORD_KIND = "revocations"
SubjectKind = Literal["release", "source", "signer", "policy", "artifact"]
SUBJECT_KINDS: tuple[str, ...] = get_args(SubjectKind)
_HEX64 = re.compile(r"[0-9a-f]{64}")


class RevocationListError(VerificationError):
    """The revocation list cannot be trusted (an entry's signature does not verify)."""

    kind = "revocation-list"
    advice = "Do not use any release until the store's revocations are checked; someone wrote to it without authority."


@dataclass(frozen=True)
class Revocation:
    kind: SubjectKind
    subject: str
    reason: str
    revoked_at: str
    revoked_by: Mapping[str, str]
    record_key: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.subject} revoked at {self.revoked_at}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "reason": self.reason, "revokedAt": self.revoked_at,
                "revokedBy": dict(self.revoked_by), "record": self.record_key}


def _check(kind: str, subject: str) -> tuple[SubjectKind, str]:
    """The kind and the subject as every reader compares it; a digest that could never match is refused.

    Digests (policy and artifact subjects, and a signer's fingerprint) are ``sha256:`` plus 64 hex
    digits, normalised to lower case: a revocation of ``SHA256:AB..``, a 16-hex prefix or a digest
    with a stray space would be signed and logged and then never match anything.
    """
    if kind not in SUBJECT_KINDS:
        raise UsageError(f"unknown revocation kind {kind!r}; choose one of {', '.join(SUBJECT_KINDS)}")
    if not subject.strip():
        raise UsageError(f"a {kind} revocation needs a subject")
    if kind == "release" and ("@" not in subject or subject != subject.strip()):
        raise UsageError(f"a release is revoked as MODEL@VERSION, not {subject!r}")
    if kind in ("policy", "artifact") or (kind == "signer" and subject.strip().lower().startswith("sha256:")):
        subject = revocable_digest(subject, what=f"a {kind}")
    elif subject != subject.strip():
        raise UsageError(f"a {kind} subject has leading or trailing white space: {subject!r}")
    return kind, subject  # type: ignore[return-value]


def revocation_subject(kind: str, subject: str) -> tuple[SubjectKind, str]:
    """A revocation's kind and subject, validated and normalised as :func:`revoke` stores them."""
    return _check(kind, subject)


def revocable_digest(value: str, *, what: str = "a digest") -> str:
    """``sha256:`` plus 64 lower-case hex digits, from any case; anything else is a usage error (exit 2)."""
    text = value.strip()
    if not text.lower().startswith("sha256:") or not _HEX64.fullmatch(text[7:].lower()) or text != value:
        raise UsageError(f"{what} is revoked by its full digest, sha256: and 64 hex digits, not {value!r}",
                         advice="Copy the digest as `cairn verify` or the record prints it (64 hex digits).")
    return "sha256:" + text[7:].lower()


def record_name(kind: str, subject: str) -> str:
    """One record per subject, so revoking twice is idempotent and a later write cannot replace it."""
    return f"{kind}-{hashlib.sha256(subject.encode()).hexdigest()[:40]}"


def revoke(store: ArtifactStore, signer: Signer, kind: str, subject: str, reason: str) -> Revocation:
    """Sign and store a revocation; returns the existing one if the subject is already revoked."""
    checked, subject = _check(kind, subject)
    if not reason.strip():
        raise UsageError("a revocation needs a reason (auditors read it)")
    name = record_name(checked, subject)
    if store.has_key(f"records/{RECORD_KIND}/{name}.json"):
        bundle = store.get_record(RECORD_KIND, name)
        return _from_statement(safeio.loads(_payload(bundle)), f"records/{RECORD_KIND}/{name}.json")
    now = datetime.now(UTC).isoformat()
    body = statement([subject_of(f"{checked}:{subject}", hashlib.sha256(subject.encode()).hexdigest())],
                     REVOCATION_PREDICATE_TYPE,
                     {"kind": checked, "subject": subject, "reason": reason, "revokedAt": now,
                      "revokedBy": signer.describe()})
    bundle = safeio.loads(signer.sign_statement(body))
    key = store.put_record(RECORD_KIND, name, bundle)
    return Revocation(checked, subject, reason, now, signer.describe(), key)


def _payload(bundle: Mapping[str, Any]) -> bytes:
    import base64

    try:
        return base64.b64decode(bundle["dsseEnvelope"]["payload"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RevocationListError("a revocation record is not a signed statement") from exc


def _from_statement(statement: Mapping[str, Any], key: str) -> Revocation:
    predicate = statement.get("predicate") or {}
    try:
        kind, subject = _check(str(predicate["kind"]), str(predicate["subject"]))
        return Revocation(kind, subject, str(predicate["reason"]), str(predicate["revokedAt"]),
                          dict(predicate["revokedBy"]), key)
    except (KeyError, TypeError, UsageError) as exc:
        raise RevocationListError(f"revocation record {key} is malformed: {exc}", artifact=key) from exc


class RevocationList:
    """Every verified revocation in a store; ``check`` raises :class:`RevokedError` for a revoked subject."""

    def __init__(self, revocations: Iterable[Revocation]) -> None:
        self.revocations = tuple(revocations)
        self._index: dict[tuple[str, str], Revocation] = {(r.kind, r.subject): r for r in self.revocations}

    @classmethod
    def load(cls, store: ArtifactStore, authority: SignerRule) -> "RevocationList":
        from integrity.trust.verifying import verify_statement

        found = []
        for name in store.list_records(RECORD_KIND):
            key = f"records/{RECORD_KIND}/{name}.json"
            try:
                raw = store.read_key(key)
            except (MissingObjectError, StoreError) as exc:
                raise RevocationListError(f"cannot read revocation {key}: {exc}", artifact=key) from exc
            try:
                signed = verify_statement(raw, authority, predicate_type=REVOCATION_PREDICATE_TYPE, where=key)
            except VerificationError as exc:
                raise RevocationListError(f"revocation {key} does not verify: {exc.reason}", artifact=key) from exc
            revocation = _from_statement(signed.statement, key)
            filed_as = str((signed.statement.get("predicate") or {}).get("subject"))  # as signed, before normalising
            if record_name(revocation.kind, filed_as) != name:
                raise RevocationListError(f"revocation {key} is filed under another subject's name", artifact=key)
            found.append(revocation)
        return cls(found)

    @classmethod
    def merged(cls, *lists: "RevocationList") -> "RevocationList":
        """Every revocation of several lists (the store at hand and the publisher's revocation sources)."""
        return cls(r for revocations in lists for r in revocations.revocations)

    def find(self, kind: str, subject: str) -> Revocation | None:
        """The revocation of a subject, compared as revocations are stored (digests in lower case)."""
        if kind in ("policy", "artifact", "signer") and subject.lower().startswith("sha256:"):
            subject = subject.lower()
        return self._index.get((kind, subject))

    def check(self, kind: str, subject: str, *, artifact: str | None = None) -> None:
        revocation = self.find(kind, subject)
        if revocation is not None:
            raise RevokedError(revocation.describe(), artifact=artifact or subject,
                               advice="Stop using it; `cairn audit` lists every release that consumed it.")

    def __len__(self) -> int:
        return len(self.revocations)
