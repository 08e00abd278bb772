"""``cairn bench poisoning``: Cairn's dataset and model scans against ART and cleanlab, side by side."""
