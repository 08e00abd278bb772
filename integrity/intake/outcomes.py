"""What an ingestion step reports: its outcome, re-verification results and the errors that order steps."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from integrity.errors import CairnError, UsageError, one_sentence

STEPS = ("fetch", "verify", "validate", "attest")
#: How a one-sentence summary names each gate.
GATE_NAMES = {"fetch": "fetching", "verify": "signature verification", "validate": "validation",
              "attest": "attestation", "screen": "the poisoning screen", "scan": "the backdoor scan",
              "release": "the release gate"}


def headline(subject: str, gate: str, passed: bool, reason: str) -> str:
    """One sentence for a check's summary: who, which gate, the verdict and the reason (the trace stays in logs)."""
    name = GATE_NAMES.get(gate, gate)
    for prefix in (f"{subject}: ", "failed: "):
        reason = reason[len(prefix):] if reason.startswith(prefix) else reason
    verdict = f"passed {name}" if passed else f"was rejected at {name}"
    return f"{subject} {verdict}: {one_sentence(reason, limit=220)}"


class StepOrderError(UsageError):
    """A step was asked to run before the step it builds on passed for the current fetch."""

    kind = "step-order"


@dataclass(frozen=True)
class StepOutcome:
    """What one step did to one source; ``passed`` False means the artifact is in quarantine."""

    source: str
    step: str
    passed: bool
    reason: str
    fetch_id: str
    digest: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    record_key: str | None = None
    quarantine_id: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def headline(self) -> str:
        """One sentence: the source, the gate, the verdict and the reason."""
        return headline(self.source, self.step, self.passed, str(self.details.get("cause") or self.reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "step": self.step,
            "passed": self.passed,
            "reason": self.reason,
            "fetch_id": self.fetch_id,
            "digest": self.digest,
            "details": dict(self.details),
            "record_key": self.record_key,
            "quarantine_id": self.quarantine_id,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StepOutcome":
        return cls(
            source=str(data["source"]),
            step=str(data["step"]),
            passed=bool(data["passed"]),
            reason=str(data["reason"]),
            fetch_id=str(data["fetch_id"]),
            digest=data.get("digest"),
            details=dict(data.get("details") or {}),
            record_key=data.get("record_key"),
            quarantine_id=data.get("quarantine_id"),
            at=str(data.get("at", "")),
        )


@dataclass(frozen=True)
class Reverification:
    """The nightly re-check of an attested source against its publisher (``severity``: info, warning, error)."""

    source: str
    passed: bool
    reason: str
    severity: str
    attested_digest: str | None = None
    upstream_digest: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class ContentRejectedError(CairnError):
    """The bytes are authentic but their content failed validation (suite, PHI, model-file gate)."""

    exit_code = 1
    kind = "content-rejected"
    advice = "See the validation record for every failed expectation; fix the data upstream or the suite."
