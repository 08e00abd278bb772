"""Cairn's integrity library: hash, sign, verify and store third-party ML artifacts.

It never imports Dagster; the pipeline in ``pipelines/`` builds on it. Layers, lowest first (a layer
imports only the ones before it; ``tests/unit/base/test_architecture.py`` enforces it):

* base modules: ``errors``, ``safeio``, ``settings``, ``canonical`` (RFC 8785), ``schemas`` (typed file formats);
* :mod:`integrity.trust`: hashing, signing, verifying, policies, records;
* :mod:`integrity.storage`: the artifact store and its backends;
* :mod:`integrity.ledger`: the transparency log;
* :mod:`integrity.scans`: model-file gate, poisoning scans, dataset validation;
* :mod:`integrity.intake`: catalog, ingestion, attestation, screening;
* :mod:`integrity.release`: spec, training, evaluation, provenance, the signed bundle and its index;
* :mod:`integrity.distribution`: publish, pull, audit, incident queries;
* :mod:`integrity.cli`: the ``cairn`` command.

The names below are the small public API; they load on first use, so ``import integrity`` is cheap.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "CairnError": "integrity.errors",
    "VerificationError": "integrity.errors",
    "HashingConfig": "integrity.trust.hashing",
    "Manifest": "integrity.trust.hashing",
    "hash_artifact": "integrity.trust.hashing",
    "sha256_file": "integrity.trust.hashing",
    "AllOf": "integrity.trust.policy",
    "AnyOf": "integrity.trust.policy",
    "CertificateIdentity": "integrity.trust.policy",
    "PublicKey": "integrity.trust.policy",
    "SigstoreIdentity": "integrity.trust.policy",
    "TrustPolicy": "integrity.trust.policy",
    "load_policy": "integrity.trust.policy",
    "CertificateSigner": "integrity.trust.methods",
    "KeylessSigner": "integrity.trust.methods",
    "KeySigner": "integrity.trust.methods",
    "sign_artifact": "integrity.trust.signing",
    "VerificationResult": "integrity.trust.verifying",
    "verify_artifact": "integrity.trust.verifying",
    "verify_source": "integrity.trust.verifying",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'integrity' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted([*_API, "__version__"])
