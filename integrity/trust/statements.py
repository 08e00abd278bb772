"""In-toto Statement v1: the one builder of the statements Cairn signs and records."""

from collections.abc import Mapping, Sequence
from typing import Any

IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


def subject(name: str, sha256: str | None) -> dict[str, Any]:
    """One subject; a subject whose bytes could not be hashed carries an empty digest."""
    return {"name": name, "digest": {"sha256": sha256} if sha256 else {}}


def statement(subjects: Sequence[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]
              ) -> dict[str, Any]:
    """``{"_type", "subject", "predicateType", "predicate"}`` as in-toto Statement v1 lays it out."""
    return {"_type": IN_TOTO_STATEMENT_TYPE, "subject": [dict(s) for s in subjects],
            "predicateType": predicate_type, "predicate": dict(predicate)}


def stamped(subject_name: str, digest: str | None, predicate_type: str, predicate: Mapping[str, Any]
            ) -> dict[str, Any]:
    """A one-subject statement whose predicate also says when and by which Cairn it was made."""
    from datetime import UTC, datetime

    from integrity import __version__

    body = {**predicate, "at": datetime.now(UTC).isoformat(), "tool": {"name": "cairn", "version": __version__}}
    return statement([subject(subject_name, digest)], predicate_type, body)
