"""Intake: the catalog, fetching, verifying, validating and attesting third-party sources; drops and screening.

May import the base modules, :mod:`integrity.trust`, :mod:`integrity.storage`, :mod:`integrity.ledger`
and :mod:`integrity.scans`.
"""
