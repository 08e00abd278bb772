"""Sigstore keyless signing: a short-lived Fulcio certificate and a transparency-log entry.

The bundle is exactly what sigstore-python's ``Signer.sign_dsse`` produces (bundle v0.3,
DSSE envelope with payload type ``application/vnd.in-toto+json``), which is also what
model-signing's ``sigstore`` method writes. The Sigstore instance (Fulcio, Rekor, optional
timestamp authorities, and the trusted root they chain to) comes from a client trust
config JSON file, never from TUF: by default the production config shipped in
``integrity/trust_roots``; tests pass a private instance's file.

The OIDC identity token is taken, in order, from the ``identity_token`` argument, the
``SIGSTORE_ID_TOKEN`` environment variable, or ambient CI credentials (GitHub Actions,
GitLab, Buildkite, CircleCI, GCP). There is deliberately no interactive browser flow.
"""

from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography import x509
from sigstore._internal.fulcio.client import ExpiredCertificate, FulcioClientError
from sigstore._internal.rekor import RekorClientError
from sigstore.dsse import Statement
from sigstore.errors import Error as SigstoreError
from sigstore.models import ClientTrustConfig
from sigstore.oidc import ExpiredIdentity, IdentityError, IdentityToken, detect_credential
from sigstore.sign import Signer, SigningContext
from sigstore.verify import Verifier

from integrity.canonical import canonical_json
from integrity.errors import UsageError
from integrity.settings import package_data

DEFAULT_TRUST_CONFIG = package_data("trust_roots", "production_client_trust_config.json")
ID_TOKEN_ENV = "SIGSTORE_ID_TOKEN"  # noqa: S105 - the variable's name, not a secret

# What sigstore-python and requests raise when a service fails or answers nonsense. sigstore's
# Fulcio/Rekor client errors and its "expired" errors derive from Exception only, and live in
# private modules; sigstore is pinned, and a rename there fails loudly at import.
_SERVICE_ERRORS: tuple[type[BaseException], ...] = (
    SigstoreError,
    FulcioClientError,
    RekorClientError,
    ExpiredCertificate,
    ExpiredIdentity,
    requests.RequestException,
    ValueError,
    KeyError,
    TypeError,
)


def load_trust_config(path: Path | None = None) -> ClientTrustConfig:
    """Read a Sigstore client trust config (trusted root + signing config) from a local file."""
    source = Path(path) if path is not None else DEFAULT_TRUST_CONFIG
    try:
        raw = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot read the Sigstore trust config: {exc.strerror or exc}",
            artifact=source,
            advice="Pass an existing client trust config JSON file (trusted root plus signing config).",
        ) from exc
    try:
        config = ClientTrustConfig.from_json(raw)
        # Both halves are parsed lazily by sigstore; touch them now so a bad file fails here.
        config.trusted_root  # noqa: B018
        config.signing_config  # noqa: B018
    except (SigstoreError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"not a usable Sigstore client trust config: {_describe(exc)}",
            artifact=source,
            advice="Use a file with media type application/vnd.dev.sigstore.clienttrustconfig.v0.1+json "
            "that names a Fulcio CA and a Rekor log.",
        ) from exc
    return config


def discover_identity_token(identity_token: str | None = None) -> tuple[str, str]:
    """Find an OIDC identity token; returns ``(token, where it came from)``.

    Order: the explicit argument, ``$SIGSTORE_ID_TOKEN``, ambient CI credentials.
    """
    if identity_token is not None:
        if not identity_token.strip():
            raise UsageError("the identity token given is empty")
        return identity_token.strip(), "the identity token argument"
    from integrity.settings import current

    from_env = current().sigstore_id_token or ""
    if from_env:
        return from_env, f"${ID_TOKEN_ENV}"
    try:
        ambient = detect_credential()
    except IdentityError as exc:
        raise UsageError(
            f"ambient OIDC credential detection failed: {exc}",
            advice=" ".join(exc.diagnostics().split()),
        ) from exc
    if ambient:
        return ambient, "ambient CI credentials"
    raise UsageError(
        "keyless signing needs an OIDC identity token, and none was found",
        advice=(
            f"Pass one explicitly, set ${ID_TOKEN_ENV}, or run in a CI system that provides ambient "
            "OIDC credentials (in GitHub Actions grant the job `permissions: id-token: write`). "
            "Cairn never opens a browser to log in."
        ),
    )


def sign_statement_keyless(
    statement: dict[str, Any],
    *,
    trust_config: Path | None = None,
    identity_token: str | None = None,
) -> str:
    """Sign an in-toto statement keylessly; returns the Sigstore bundle as JSON.

    Gets a signing certificate from the config's Fulcio for the token's identity (checking the
    certificate's embedded SCT against the config's CT log keys), signs the statement as a DSSE
    envelope, records it in the config's Rekor log, then verifies the resulting bundle offline
    against the config's trusted root (any identity) so that Cairn never writes a bundle its own
    trust anchors would reject. Every failure is a :class:`UsageError` naming the step.
    """
    source = Path(trust_config) if trust_config is not None else DEFAULT_TRUST_CONFIG
    config = load_trust_config(source)
    raw_token, token_source = discover_identity_token(identity_token)
    try:
        token = IdentityToken(raw_token)
    except IdentityError as exc:
        raise UsageError(
            f"the identity token from {token_source} is not usable: {exc}",
            advice="Obtain a fresh OIDC token with audience 'sigstore'; tokens are short-lived.",
        ) from exc
    try:
        payload = Statement(canonical_json(statement))
    except (SigstoreError, TypeError, ValueError) as exc:
        raise UsageError(f"the statement to sign is not a valid in-toto v1 statement: {_describe(exc)}") from exc

    try:
        signing_config = config.signing_config
        fulcio = signing_config.get_fulcio()
        tlog = signing_config.get_tlogs()[0]
        trusted_root = config.trusted_root
        context = SigningContext(
            fulcio=fulcio, rekor=tlog, trusted_root=trusted_root, tsa_clients=signing_config.get_tsas()
        )
    except _SERVICE_ERRORS as exc:
        raise UsageError(f"cannot set up Sigstore signing: {_describe(exc)}", artifact=source) from exc
    rekor_url = str(getattr(tlog, "url", "the transparency log"))

    try:
        # With cache=True the Signer asks Fulcio for its certificate (and checks the SCT) up front.
        signer = Signer(token, context, cache=True)
    except _SERVICE_ERRORS as exc:
        raise UsageError(
            f"Fulcio at {fulcio.url} did not issue a usable signing certificate for {_token_subject(token)!r} "
            f"(issuer {token.issuer}): {_describe(exc)}",
            advice="Check that the token is fresh and accepted by this Fulcio, and that the trust config "
            "lists the CT log that Fulcio uses.",
        ) from exc
    try:
        bundle = signer.sign_dsse(payload)
    except _SERVICE_ERRORS as exc:
        raise UsageError(
            f"the transparency log at {rekor_url} did not record the signature: {_describe(exc)}",
            advice="Retry later; if it persists, check the Rekor URL in the trust config.",
        ) from exc

    try:
        Verifier(trusted_root=trusted_root).verify_dsse(bundle, _AnyIdentity())
    except _SERVICE_ERRORS as exc:
        raise UsageError(
            f"the new bundle does not verify against the trust config's own trusted root: {_describe(exc)}",
            artifact=source,
            advice="The signing services (Fulcio, CT log, Rekor) and the trusted root in this trust config "
            "do not belong together, or a service returned bad proofs; nothing was written.",
        ) from exc
    return bundle.to_json()


class _AnyIdentity:
    """Verification policy for the post-signing self-check: the signer chose its own identity."""

    def verify(self, cert: x509.Certificate) -> None:
        return None


def _token_subject(token: IdentityToken) -> str:
    """Who the token names, for messages: its email claim if any, else sigstore's identity."""
    try:
        email = jwt.decode(str(token), options={"verify_signature": False}).get("email")
    except jwt.PyJWTError:
        email = None
    return email if isinstance(email, str) and email else token.identity


def _describe(exc: BaseException, limit: int = 400) -> str:
    """The most informative text of an exception (sigstore often raises bare ones with a cause)."""
    text = ""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if candidate is not None and str(candidate).strip():
            text = " ".join(str(candidate).split())
            break
    # sigstore's Fulcio client drops the server's explanation of a 4xx/5xx; recover it.
    http_error = next((e for e in (exc, exc.__cause__) if isinstance(e, requests.HTTPError)), None)
    if http_error is not None and http_error.response is not None:
        try:
            message = http_error.response.json().get("message")
        except (ValueError, AttributeError):
            message = None
        if isinstance(message, str) and message and message not in text:
            text = f"{text} ({message})" if text else message
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
