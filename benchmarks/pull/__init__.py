"""Pull-and-verify against plain download plus ``sha256sum`` (``python -m benchmarks.pull``)."""
