"""Trust: hashing into manifests, signing, verifying against a trust policy, in-toto records.

Owns ``hashing`` (files -> manifest), ``signing`` (signers: key, certificate, keyless Sigstore),
``verifying`` (bundles -> verified identity and digests), ``policy`` (who may sign what) and
``records`` (signed in-toto statements Cairn writes). May import only the base modules
(``errors``, ``safeio``, ``settings``, ``canonical``).
"""
