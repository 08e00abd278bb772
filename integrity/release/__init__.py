"""Release: the release spec, the input evidence chain, training, evaluation, provenance, BOM, lineage,
the signed bundle, its index (the one parser and the one list of revocable subjects) and revocations.

May import every layer below it (base, trust, storage, ledger, scans, intake), never distribution or cli.
"""
