"""Scans: pure checkers over bytes and arrays (the model-file gate, poisoning scans, dataset validation).

They read what they are given and return findings; they neither fetch nor store. May import the base
modules only (and their own sub-packages).
"""
