"""Revocations that follow a release wherever it is: the store at hand plus the publisher's revocation sources.

A release revoked in the publisher's store could otherwise be published to a second store and pulled
and audited from there as if nothing had happened, since each store holds only its own revocation
records. ``$CAIRN_REVOCATIONS`` (or the project file's ``revocations``; default the configured store)
names the stores whose signed revocation lists ``publish``, ``pull`` and ``audit`` consult as well.
A source that cannot be read stops the command (fail closed): it is not skipped.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from integrity.release.revocation import RevocationList
from integrity.storage import ArtifactStore, open_store
from integrity.trust.policy import SignerRule


@dataclass(frozen=True)
class ConsultedRevocations:
    """The merged list and the store URLs it was read from, in order (the store at hand first)."""

    revocations: RevocationList
    stores: tuple[str, ...]

    def describe(self) -> str:
        return (f"{len(self.revocations)} signed revocation(s) in {', '.join(self.stores)}"
                if self.stores else "no revocation list")


def revocation_stores(sources: Sequence[str], *, besides: str | None = None) -> list[ArtifactStore]:
    """The revocation sources as stores, without the one at hand (``besides``, a store URL)."""
    opened: list[ArtifactStore] = []
    seen = {besides} if besides else set()
    for source in sources:
        store = open_store(source)
        if store.url not in seen:
            seen.add(store.url)
            opened.append(store)
    return opened


def consult(authority: SignerRule, at_hand: RevocationList | None, at_hand_url: str | None,
            sources: Sequence[ArtifactStore]) -> ConsultedRevocations:
    """The revocations of the store at hand (already loaded, or None) merged with every source's."""
    lists = [at_hand] if at_hand is not None else []
    urls = [at_hand_url] if at_hand is not None and at_hand_url else []
    for store in sources:
        lists.append(RevocationList.load(store, authority))
        urls.append(store.url)
    return ConsultedRevocations(RevocationList.merged(*lists), tuple(urls))
