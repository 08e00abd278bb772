"""The DVC state an ingestion record carries (dvc.lock digest and stage outputs)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import CairnError
from integrity.trust.hashing import sha256_file


def dvc_lock_entries(project: Path) -> dict[str, Any] | None:
    """The ``dvc.lock`` that describes what a DVC run used: its sha256 and each stage's outputs."""
    lock = project / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        data = safeio.parse_yaml(safeio.read_regular_file(lock, what="dvc.lock"), artifact=lock) or {}
    except CairnError:
        return {"path": str(lock), "error": "unreadable dvc.lock"}
    stages = {}
    for name, stage in (data.get("stages") or {}).items():
        outs = stage.get("outs") or []
        stages[name] = {str(o.get("path")): o.get("md5") for o in outs if isinstance(o, Mapping)}
    return {"path": str(lock), "sha256": sha256_file(lock), "stages": stages}
