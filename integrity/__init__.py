"""Cairn's integrity library: hash, sign, verify and store third-party ML artifacts.

It never imports Dagster; the pipeline in ``pipelines/`` builds on it. The public API
is small: hashing into manifests, signing them, verifying against a trust policy,
and the errors that say why something was rejected.
"""

from integrity.errors import CairnError, VerificationError
from integrity.hashing import HashingConfig, Manifest, hash_artifact, sha256_file
from integrity.policy import (
    AllOf,
    AnyOf,
    CertificateIdentity,
    PublicKey,
    SigstoreIdentity,
    TrustPolicy,
    load_policy,
)
from integrity.signing import CertificateSigner, KeylessSigner, KeySigner, sign_artifact
from integrity.verifying import VerificationResult, verify_artifact, verify_source

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "AnyOf",
    "CairnError",
    "CertificateIdentity",
    "CertificateSigner",
    "HashingConfig",
    "KeySigner",
    "KeylessSigner",
    "Manifest",
    "PublicKey",
    "SigstoreIdentity",
    "TrustPolicy",
    "VerificationError",
    "VerificationResult",
    "__version__",
    "hash_artifact",
    "load_policy",
    "sha256_file",
    "sign_artifact",
    "verify_artifact",
    "verify_source",
]
