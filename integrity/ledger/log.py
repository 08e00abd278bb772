"""A tamper-evident transparency ledger: an append-only Merkle log (RFC 6962 / RFC 9162 hashing).

Every record Cairn wants auditors to be able to trust later (verifications, attestations,
releases, revocations) is appended as a leaf. After each append the ledger signs a *tree head*
(size, root hash, time) with the ledger key. Because a tree head commits to every earlier
entry in order, editing, removing or reordering history changes the root and is detected;
:func:`inclusion_proof` / :func:`consistency_proof` give the standard audit paths.

Storage is the artifact store's backend (local or S3)::

    ledger/entries/000000000042.json   the leaf: {"index", "kind", "digest", "data", "canonical"} (RFC 8785)
    ledger/heads/000000000043.json     a signed tree head for the first 43 entries, with the
                                       tree's compact range (unsigned; trusted only when it
                                       rebuilds the signed root) so the next head reads only
                                       the entries appended since

Entries are written with create-only semantics, so two appenders cannot take the same
index: the loser re-reads the size and tries the next one.
"""

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from integrity import safeio
from integrity.canonical import RFC8785, canonical_json, encode
from integrity.errors import StoreError, VerificationError
from integrity.storage import ArtifactStore
from integrity.trust.signing import key_fingerprint, load_private_key, load_public_key

ENTRY_PREFIX = "ledger/entries/"
HEAD_PREFIX = "ledger/heads/"
_MAX_APPEND_RETRIES = 20


class LedgerError(VerificationError):
    """The ledger's history does not check out (edited, removed, reordered or unsigned)."""

    kind = "ledger"
    advice = "Treat every record after the first failing index as untrusted and investigate who wrote the store."


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162 2.1.1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over leaf hashes (already ``leaf_hash``-ed)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def frontier_push(frontier: list[bytes], size: int, leaf: bytes) -> list[bytes]:
    """The compact range of ``size + 1`` leaves from that of ``size`` leaves and one more leaf.

    The compact range (frontier) is the list of perfect-subtree roots of an RFC 6962 tree, one per
    set bit of its size, largest first: O(log n) hashes that are enough to append and to compute
    the root, so a new tree head never needs the old entries again.
    """
    nodes = [*frontier, leaf]
    carry = size
    while carry & 1:  # each trailing set bit of the old size is a subtree of the new leaf's size: merge
        right, left = nodes.pop(), nodes.pop()
        nodes.append(node_hash(left, right))
        carry >>= 1
    return nodes


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the leaves a compact range stands for (equals :func:`merkle_root`)."""
    if not frontier:
        return hashlib.sha256(b"").digest()
    root = frontier[-1]
    for node in reversed(frontier[:-1]):
        root = node_hash(node, root)
    return root


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree over ``leaves`` (RFC 9162 2.1.3)."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), merkle_root(leaves[:k])]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of ``old_size`` leaves is a prefix of the tree over ``leaves``."""

    def subproof(m: int, nodes: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(nodes)
        if m == n:
            return [] if complete else [merkle_root(nodes)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, nodes[:k], complete), merkle_root(nodes[k:])]
        return [*subproof(m - k, nodes[k:], False), merkle_root(nodes[:k])]

    if old_size == 0 or old_size == len(leaves):
        return []
    return subproof(old_size, leaves, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if old_size == new_size:
        return old_root == new_root and not proof
    if old_size == 0 or old_size > new_size or not proof:
        return old_size == 0
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def _canonical(data: Mapping[str, Any]) -> bytes:
    return canonical_json(data)


def _entry_bytes(entry: Mapping[str, Any]) -> bytes:
    """An entry in the form it was written in (RFC 8785 when marked, else the legacy compact form)."""
    return encode(entry, entry.get("canonical"))


def _data_bytes(entry: Mapping[str, Any]) -> bytes:
    return encode(entry.get("data", {}), entry.get("canonical"))


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: str  # hex
    timestamp: str
    key_fingerprint: str
    signature: str  # base64 DER ECDSA over the canonical JSON of the other fields

    def signed_part(self) -> bytes:
        return _canonical({"size": self.size, "root": self.root, "timestamp": self.timestamp,
                           "key": self.key_fingerprint})

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root, "timestamp": self.timestamp,
                "key": self.key_fingerprint, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TreeHead":
        return cls(int(data["size"]), str(data["root"]), str(data["timestamp"]), str(data["key"]),
                   str(data["signature"]))


@dataclass(frozen=True)
class LedgerReport:
    size: int
    root: str
    heads_checked: int
    latest_head: TreeHead | None
    #: Entries after the newest signed head: an append interrupted before it signed (kill -9), or
    #: entries written around Cairn. Nothing trusts them until a signed head covers them.
    unsigned_tail: int = 0

    @property
    def signed_size(self) -> int:
        """How many entries the newest signed head covers (the only ones anything may trust)."""
        return self.latest_head.size if self.latest_head is not None else 0


class Ledger:
    """The append-only log in an artifact store, signed with the ledger key."""

    def __init__(self, store: ArtifactStore, *, private_key: Path | None = None, public_key: Path | None = None):
        self.store = store
        self.private_key = private_key
        self.public_key = public_key

    # -- reading ----------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        keys = sorted(k for k in self.store.keys(ENTRY_PREFIX) if k.endswith(".json"))
        found = []
        for position, key in enumerate(keys):
            expected = f"{ENTRY_PREFIX}{position:012d}.json"
            if key != expected:
                raise LedgerError(f"entry {position} is missing (found {key.rsplit('/', 1)[-1]} instead)",
                                  artifact=self.store.describe(expected))
            found.append(self._read_json(key, f"entry {position}"))
        return found

    def _read_json(self, key: str, what: str) -> dict[str, Any]:
        """One stored ledger object; anything but a JSON object is a ledger error naming it."""
        try:
            data = safeio.loads(self.store.read_key(key))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise LedgerError(f"{what} is not valid JSON (edited or corrupted): {exc}",
                              artifact=self.store.describe(key)) from exc
        if not isinstance(data, dict):
            raise LedgerError(f"{what} is not a JSON object (edited or corrupted)",
                              artifact=self.store.describe(key))
        return data

    def _size(self) -> int:
        """How many entries exist, from the listing alone (the next index to take)."""
        return sum(1 for key in self.store.keys(ENTRY_PREFIX) if key.endswith(".json"))

    def leaves(self) -> list[bytes]:
        return [leaf_hash(_entry_bytes(entry)) for entry in self.entries()]

    def heads(self) -> list[TreeHead]:
        keys = sorted(k for k in self.store.keys(HEAD_PREFIX) if k.endswith(".json"))
        heads = []
        for key in keys:
            data = self._read_json(key, f"tree head {key.rsplit('/', 1)[-1]}")
            try:
                heads.append(TreeHead.from_dict(data))
            except (KeyError, TypeError, ValueError) as exc:
                raise LedgerError(f"tree head is malformed: {exc!r}",
                                  artifact=self.store.describe(key)) from exc
        return heads

    # -- writing ----------------------------------------------------------------------------

    def append(self, kind: str, data: Mapping[str, Any]) -> tuple[int, TreeHead]:
        """Add one entry and sign the new tree head; returns the entry's index and the head."""
        body = dict(data)
        digest = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
        for _ in range(_MAX_APPEND_RETRIES):
            index = self._size()
            entry = {"index": index, "kind": kind, "digest": digest, "appended_at": datetime.now(UTC).isoformat(),
                     "data": body, "canonical": RFC8785}
            if self.store.write_key(f"{ENTRY_PREFIX}{index:012d}.json", _canonical(entry)):
                return index, self.sign_head()
        raise StoreError("could not append to the ledger: other writers kept taking the next index")

    def sign_head(self) -> TreeHead:
        """Sign a head over every entry, reading only the entries the last trusted head does not cover."""
        if self.private_key is None:
            raise StoreError("the ledger has no signing key configured; cannot sign a tree head")
        key = load_private_key(self.private_key)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise StoreError("the ledger key must be an ECDSA key", artifact=self.private_key)
        size = self._size()
        covered, frontier = self._resume_point(key.public_key(), size)
        for index in range(covered, size):
            name = f"{ENTRY_PREFIX}{index:012d}.json"
            try:
                data = self.store.read_key(name)
            except StoreError as exc:
                raise LedgerError(f"entry {index} cannot be read: {exc.reason}",
                                  artifact=self.store.describe(name)) from exc
            frontier = frontier_push(frontier, index, leaf_hash(_entry_bytes(safeio.loads(data))))
        unsigned = TreeHead(size, frontier_root(frontier).hex(), datetime.now(UTC).isoformat(),
                            key_fingerprint(key.public_key()), "")
        signature = key.sign(unsigned.signed_part(), ec.ECDSA(hashes.SHA256()))
        head = TreeHead(unsigned.size, unsigned.root, unsigned.timestamp, unsigned.key_fingerprint,
                        base64.b64encode(signature).decode())
        # The frontier rides along unsigned: the next signer trusts it only if it rebuilds this signed root.
        stored = {**head.as_dict(), "frontier": [node.hex() for node in frontier]}
        self.store.write_key(f"{HEAD_PREFIX}{head.size:012d}.json", _canonical(stored), overwrite=True)
        return head

    def _resume_point(self, public: ec.EllipticCurvePublicKey, size: int) -> tuple[int, list[bytes]]:
        """(entries covered, compact range) of the newest head this key signed, or (0, []) to start over."""
        keys = sorted(k for k in self.store.keys(HEAD_PREFIX) if k.endswith(".json"))
        for name in reversed(keys):
            try:
                stored = safeio.loads(self.store.read_key(name))
                head = TreeHead.from_dict(stored)
                frontier = [bytes.fromhex(node) for node in stored.get("frontier", [])]
                if head.size > size or head.key_fingerprint != key_fingerprint(public):
                    continue
                if len(frontier) != bin(head.size).count("1") or frontier_root(frontier).hex() != head.root:
                    continue
                public.verify(base64.b64decode(head.signature), head.signed_part(), ec.ECDSA(hashes.SHA256()))
            except (StoreError, ValueError, KeyError, TypeError, InvalidSignature):
                continue  # an unreadable or unverifiable head is never a place to resume from
            return head.size, frontier
        return 0, []

    # -- verifying --------------------------------------------------------------------------

    def _check_signature(self, head: TreeHead) -> None:
        if self.public_key is None:
            raise LedgerError("no ledger public key pinned; tree heads cannot be checked")
        public = load_public_key(self.public_key)
        if key_fingerprint(public) != head.key_fingerprint or not isinstance(public, ec.EllipticCurvePublicKey):
            raise LedgerError(f"tree head of size {head.size} is signed by {head.key_fingerprint}, not the pinned key")
        try:
            public.verify(base64.b64decode(head.signature), head.signed_part(), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as exc:
            raise LedgerError(f"tree head of size {head.size} has an invalid signature") from exc

    def verify(self, checkpoint: "TreeHead | None" = None, *, allow_empty: bool = False) -> LedgerReport:
        """Check every entry, every signed head and the consistency between consecutive heads.

        ``checkpoint`` is the newest signed head this verifier saw before (kept by the client, like
        the pull state): the ledger must still hold it, and extend it consistently. Without one a
        ledger truncated together with its heads cannot be told from a shorter honest one. An empty
        ledger is an error unless ``allow_empty`` (a store that was never written to).
        """
        entries = self.entries()
        if not entries and not allow_empty:
            raise LedgerError("no ledger here: no entries and no signed tree heads (the wrong store path or bucket, "
                              "or the ledger was deleted)", artifact=self.store.url)
        leaves = []
        for position, entry in enumerate(entries):
            if entry.get("index") != position:
                raise LedgerError(f"entry {position} claims index {entry.get('index')} (reordered)")
            recomputed = "sha256:" + hashlib.sha256(_data_bytes(entry)).hexdigest()
            if recomputed != entry.get("digest"):
                raise LedgerError(f"entry {position} was edited: its data no longer matches its digest")
            leaves.append(leaf_hash(_entry_bytes(entry)))
        heads = self.heads()
        previous: TreeHead | None = None
        for head in heads:
            self._check_signature(head)
            if head.size > len(leaves):
                raise LedgerError(f"a signed tree head covers {head.size} entries but only {len(leaves)} exist "
                                  "(entries were removed)")
            if merkle_root(leaves[: head.size]).hex() != head.root:
                raise LedgerError(f"history changed: the first {head.size} entries no longer match their signed "
                                  "tree head (an entry was edited, removed or reordered)")
            if previous is not None:
                proof = consistency_proof(previous.size, leaves[: head.size])
                if not verify_consistency(previous.size, head.size, bytes.fromhex(previous.root),
                                          bytes.fromhex(head.root), proof):
                    raise LedgerError(f"tree heads {previous.size} and {head.size} are not consistent")
            previous = head
        latest = heads[-1] if heads else None
        signed = latest.size if latest is not None else 0
        if checkpoint is not None:
            self._check_signature(checkpoint)
            if checkpoint.size > signed:
                raise LedgerError(f"the ledger's signed heads cover {signed} entries, but this verifier already saw "
                                  f"a signed head of size {checkpoint.size}: entries and heads were removed "
                                  "(truncation)", artifact=self.store.url)
            if merkle_root(leaves[: checkpoint.size]).hex() != checkpoint.root:
                raise LedgerError(f"the first {checkpoint.size} entries no longer match the signed head this "
                                  "verifier saw before (history rewritten)", artifact=self.store.url)
        return LedgerReport(len(leaves), merkle_root(leaves).hex(), len(heads), latest, len(leaves) - signed)

    def prove_inclusion(self, index: int) -> dict[str, Any]:
        """An inclusion proof for one entry against the latest signed head, checked before it is returned."""
        report = self.verify()
        size = report.signed_size
        leaves = self.leaves()[:size]
        if not 0 <= index < size or report.latest_head is None:
            raise LedgerError(f"no entry {index} under a signed tree head (signed size {size})")
        root = report.latest_head.root
        proof = inclusion_proof(index, leaves)
        if not verify_inclusion(index, size, leaves[index], proof, bytes.fromhex(root)):
            raise LedgerError(f"entry {index} is not included in the tree")
        return {"index": index, "size": size, "root": root, "leaf": leaves[index].hex(),
                "proof": [p.hex() for p in proof], "head": report.latest_head.as_dict()}


class Checkpoint:
    """The newest signed tree head this verifier has seen of one ledger, kept on the verifier's side.

    Like the pull state, it is what lets a verifier notice a ledger that was cut back: the store's
    operator can delete the newest entries *and* their heads, and what is left verifies on its own.
    A first verification has no checkpoint and cannot rule that out (trust on first use); a Rekor
    witness (:func:`integrity.ledger.transparency.witness_head`) closes it for heads logged there.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> TreeHead | None:
        if not self.path.exists():
            return None
        try:
            data = safeio.load_json_file(self.path, what="ledger checkpoint")
            return TreeHead.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise safeio.InputFormatError(f"unreadable ledger checkpoint: {exc!r}", artifact=self.path,
                                          advice="Restore it from backup; deleting it turns off truncation "
                                                 "detection for this ledger until the next verification.") from exc

    def save(self, head: TreeHead) -> None:
        from integrity.trust.signing import atomic_write

        current = self.load()
        if current is not None and current.size > head.size:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(head.as_dict(), indent=2, sort_keys=True).encode())


def default_checkpoint(store_url: str, home: Path) -> Checkpoint:
    """``<home>/ledger-checkpoints/<sha256 of the store URL>.json``: one checkpoint per ledger verified."""
    name = hashlib.sha256(store_url.encode()).hexdigest()[:32]
    return Checkpoint(home / "ledger-checkpoints" / f"{name}.json")

