"""Ledger: the append-only Merkle log of what Cairn did, its signed tree heads and witnessing.

It knows records and entries, never releases. May import the base modules, :mod:`integrity.trust`
and :mod:`integrity.storage`.
"""

from integrity.ledger.log import (
    ENTRY_PREFIX,
    HEAD_PREFIX,
    Checkpoint,
    Ledger,
    LedgerError,
    LedgerReport,
    TreeHead,
    consistency_proof,
    default_checkpoint,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "ENTRY_PREFIX",
    "HEAD_PREFIX",
    "Checkpoint",
    "Ledger",
    "LedgerError",
    "LedgerReport",
    "TreeHead",
    "consistency_proof",
    "default_checkpoint",
    "frontier_push",
    "frontier_root",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]
