"""Why a publication or a pull was refused."""


from integrity.errors import (
    StoreError,
    UsageError,
    VerificationError,
)


class PublishConflictError(VerificationError):
    """Another release already holds this version or sequence number; nothing was overwritten."""

    kind = "publish-conflict"
    advice = ("Published releases are immutable. Build the release again with a new version and the next "
              "sequence number.")


class ReleaseNotFoundError(UsageError):
    """No published release matches the model (and version) asked for."""

    kind = "release-not-found"
    advice = ("Check the model name, the version and the store URL; published releases are the records under "
              "releases/<model>/versions/ in the store.")


class IncompleteReleaseError(VerificationError):
    """The release index names an object the store does not have; nothing was pulled."""

    kind = "release-incomplete"
    advice = "The store lost or never received part of this release. Republish it from the signed bundle."


class RollbackError(VerificationError):
    """The store served an older (or replaced) release index than one already seen."""

    kind = "rollback"
    advice = ("Someone replayed an older release index or hid a newer release. Do not use this pull; check the "
              "store's access logs and the transparency ledger.")


class PullTimeoutError(StoreError):
    """The pull did not finish within its deadline; nothing was placed at the destination."""

    kind = "timeout"
    advice = "Check the store's endpoint and the network; raise --timeout (or $CAIRN_PULL_TIMEOUT) for a slow link."
