"""Cairn's error hierarchy.

Every failure names the artifact it concerns and the reason, and says what the
user can do about it (`diagnostics()`), in the style of sigstore-python. The
class decides the command-line exit code: a *rejection* (the artifact is not
trusted) exits 1, a *usage or input* problem (the command could not judge the
artifact at all) exits 2. Both are fail-closed: nothing is trusted either way.
"""

import re
from pathlib import Path

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def one_sentence(text: str, *, limit: int = 240) -> str:
    """``text`` as one sentence for a summary line: one line, at most ``limit`` characters, ending in a stop.

    A leading ``path: `` (the artifact, which the summary names elsewhere) is dropped.
    """
    flat = " ".join(text.split())
    match = re.match(r"^[^\s:]*/[^\s:]*: (?=\S)", flat)
    if match:
        flat = flat[match.end():]
    if len(flat) > limit:
        cut = flat[: limit - 1]
        flat = (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut).rstrip(" ,;:") + "…"
    elif flat and flat[-1] not in ".!?…":
        flat += "."
    return flat


class CairnError(Exception):
    """Base class: something stopped Cairn from trusting an artifact."""

    exit_code = EXIT_USAGE
    #: Short machine-readable kind, recorded in verification records.
    kind = "error"
    #: What the user can do about it; subclasses override.
    advice = ""

    def __init__(self, reason: str, *, artifact: str | Path | None = None, advice: str = "") -> None:
        self.reason = reason
        self.artifact = str(artifact) if artifact is not None else None
        if advice:
            self.advice = advice
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: the artifact and the reason."""
        if self.artifact:
            return f"{self.artifact}: {self.reason}"
        return self.reason

    def diagnostics(self) -> str:
        """A human-readable explanation: what happened and what to do."""
        lines = [f"{type(self).__name__}: {self.summary()}"]
        if self.advice:
            lines.append(f"What to do: {self.advice}")
        return "\n".join(lines)


# -- usage and input errors (exit 2) ------------------------------------------------


class UsageError(CairnError):
    """The command was called wrongly (missing or conflicting options)."""

    kind = "usage"


class ArtifactReadError(CairnError):
    """An artifact or one of its files cannot be read (missing, permissions, I/O)."""

    kind = "unreadable"
    advice = "Check that the path exists and is readable by this user."


class PolicyError(CairnError):
    """A trust policy file is malformed or names something that does not exist."""

    kind = "policy-invalid"
    advice = "Fix the policy file; Cairn refuses to verify against a policy it cannot fully read."


class StoreError(CairnError):
    """The artifact store could not complete an operation; nothing was changed."""

    kind = "store"


# -- rejections (exit 1) ---------------------------------------------------------------


class VerificationError(CairnError):
    """The artifact is not trusted."""

    exit_code = EXIT_REJECTED
    kind = "rejected"


class UnsafePathError(VerificationError):
    """The artifact contains a path Cairn refuses to follow or hash."""

    kind = "unsafe-path"
    advice = (
        "Remove symbolic links that leave the artifact, special files (devices, FIFOs, sockets) "
        "and names with '..' or absolute paths, then ask the publisher to re-sign."
    )


class EmptyArtifactError(VerificationError):
    """There is nothing to verify: an empty directory proves nothing."""

    kind = "empty"
    advice = "Point Cairn at the directory that holds the signed files."


class BundleFormatError(VerificationError):
    """The signature bundle is malformed, truncated or of an unsupported kind."""

    kind = "bundle-malformed"
    advice = "Obtain the bundle again from the publisher; do not edit it by hand."


class UnsignedArtifactError(VerificationError):
    """No signature was found for the artifact."""

    kind = "unsigned"
    advice = "Ask the publisher for a signature bundle, or pass its location with --signature."


class SignatureError(VerificationError):
    """The cryptographic signature does not verify."""

    kind = "bad-signature"
    advice = "The bundle was altered or made for other content; obtain a fresh signature."


class CertificateError(VerificationError):
    """The signing certificate does not chain to a pinned CA or is not valid at signing time."""

    kind = "bad-certificate"
    advice = (
        "Only certificates issued by a CA pinned in the trust policy and valid at the trusted "
        "signing time are accepted; ask the publisher to re-sign with a current certificate."
    )


class UntrustedCAError(CertificateError):
    """The certificate chain does not end at a CA pinned in the policy (no system CA fallback)."""

    kind = "untrusted-ca"


class CertificateExpiredError(CertificateError):
    """The signing certificate was not valid at the trusted signing time."""

    kind = "certificate-expired"


class IdentityMismatchError(VerificationError):
    """The signature is valid but was made by someone the policy does not allow."""

    kind = "identity-mismatch"


class UntrustedSignerError(VerificationError):
    """The signer (for example a rotated key) is not in the trust policy."""

    kind = "untrusted-signer"


class SubjectMismatchError(VerificationError):
    """The bundle is valid but was made for a different artifact."""

    kind = "subject-mismatch"
    advice = "Use the bundle that belongs to this artifact."


class DigestMismatchError(VerificationError):
    """The artifact's bytes differ from what was signed or pinned."""

    kind = "digest-mismatch"
    advice = (
        "The artifact changed after it was signed. Do not use it; fetch it again from the "
        "publisher and report the change."
    )


class ManifestMismatchError(VerificationError):
    """Files were added, removed, renamed or changed in a signed directory."""

    kind = "manifest-mismatch"
    advice = (
        "The directory no longer matches what the publisher signed. Do not use it; fetch it "
        "again and report the change."
    )

    def __init__(
        self,
        reason: str,
        *,
        artifact: str | Path | None = None,
        added: list[str] | None = None,
        removed: list[str] | None = None,
        changed: list[str] | None = None,
        renamed: list[tuple[str, str]] | None = None,
    ) -> None:
        self.added = added or []
        self.removed = removed or []
        self.changed = changed or []
        self.renamed = renamed or []
        super().__init__(reason, artifact=artifact)


class PolicyViolationError(VerificationError):
    """The artifact is signed correctly but breaks another rule of its policy entry."""

    kind = "policy-violation"


class RevokedError(VerificationError):
    """The artifact, its signer or the policy version it was attested under is revoked."""

    kind = "revoked"
