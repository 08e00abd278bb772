"""The registry of signing methods: the bundle form a method writes, and the verifier that reads it."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from integrity.errors import UsageError


@dataclass(frozen=True)
class VerifyRequest:
    """What every verifier gets: the parsed bundle, the artifact, the policy's rules and the context."""

    bundle: Any
    artifact: Path
    rules: list[Any]
    now: datetime
    source: str
    trusted_root: str | Path | None


#: A verifier returns (the signer's evidence, the signed payload or None for a message signature).
Verifier = Callable[[VerifyRequest], tuple[Any, Any]]
_VERIFIERS: dict[str, Verifier] = {}


def register_method(name: str, verifier: Verifier) -> None:
    """Verify bundles whose method is ``name`` with ``verifier`` (see docs/extending.md)."""
    _VERIFIERS[name] = verifier


def verifier_for(name: str) -> Verifier:
    try:
        return _VERIFIERS[name]
    except KeyError:
        raise UsageError(f"no verifier registered for signing method {name!r}") from None


def registered_methods() -> list[str]:
    return sorted(_VERIFIERS)
