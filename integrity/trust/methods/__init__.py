"""Signing methods, one module each holding its signer and its verifier (as OpenSSF model-signing does).

``key`` (a pinned ECDSA key), ``certificate`` (X.509 chained to a pinned CA) and ``sigstore``
(keyless: Fulcio and Rekor, verified offline). Each registers its verifier with
:func:`~integrity.trust.methods.registry.register_method`; importing this package registers all three.
May import the base modules and the rest of :mod:`integrity.trust` below it (bundles, signing, policy).
"""

from integrity.trust.methods import certificate, key, sigstore
from integrity.trust.methods.certificate import CertificateSigner
from integrity.trust.methods.key import KeySigner
from integrity.trust.methods.registry import VerifyRequest, register_method, registered_methods, verifier_for
from integrity.trust.methods.sigstore import KeylessSigner

__all__ = ["CertificateSigner", "KeySigner", "KeylessSigner", "VerifyRequest", "certificate", "key",
           "register_method", "registered_methods", "sigstore", "verifier_for"]
