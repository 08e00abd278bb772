"""Revocations that follow a release wherever it is: the store at hand plus the publisher's revocation sources.

A release revoked in the publisher's store could otherwise be published to a second store and pulled
and audited from there as if nothing had happened, since each store holds only its own revocation
records. ``$CAIRN_REVOCATIONS`` (or the project file's ``revocations``; default the configured store)
names the stores whose signed revocation lists ``publish``, ``pull`` and ``audit`` consult as well.
A source that cannot be read stops the command (fail closed): it is not skipped.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from integrity.release.revocation import Revocation, RevocationList
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


@dataclass(frozen=True)
class ReleaseStatus:
    """Whether a release bundle is revoked, as far as the store at hand and the revocation sources say."""

    reference: str
    revoked: tuple[Revocation, ...]
    checked: str  # which lists were read, or why none could be

    @property
    def summary(self) -> str:
        if not self.revoked:
            return f"not revoked ({self.checked})"
        first = self.revoked[0]
        by = first.revoked_by.get("key_fingerprint") or first.revoked_by.get("identity") or "the release authority"
        return f"REVOKED at {first.revoked_at} by {by}: {first.reason} ({first.kind} {first.subject})"


#: Revocations already read for a model's authority, or why they could not be (one page, many releases).
StatusCache = dict[str, "ConsultedRevocations | str"]


def release_status(release: Path, store: ArtifactStore, home: Path | None,
                   cache: StatusCache | None = None) -> ReleaseStatus | None:
    """The revocation status of a release bundle, read with the home's release policy as the authority.

    None when the folder is no readable release; an unreadable revocation list is reported as such, never
    as "not revoked". ``cache`` keeps the lists read per model, so a page of many releases reads them once.
    """
    from integrity.errors import CairnError
    from integrity.release.index import ReleaseIndex

    try:
        index = ReleaseIndex.read(release)
    except CairnError:
        return None
    cache = {} if cache is None else cache
    if index.model not in cache:
        cache[index.model] = _consulted(index.model, store, home)
    consulted = cache[index.model]
    if isinstance(consulted, str):
        return ReleaseStatus(index.reference, (), consulted)
    found = [consulted.revocations.find(kind, subject) for kind, subject in index.subjects()]
    return ReleaseStatus(index.reference, tuple(r for r in found if r is not None), consulted.describe())


def _consulted(model: str, store: ArtifactStore, home: Path | None) -> "ConsultedRevocations | str":
    from integrity.errors import CairnError
    from integrity.settings import current
    from integrity.trust.policy import load_policy

    settings = current(home=home)
    try:
        authority = load_policy(settings.release_policy).source(model).signers
        sources = revocation_stores(settings.revocation_sources, besides=store.url)
        return consult(authority, RevocationList.load(store, authority), store.url, sources)
    except CairnError as error:
        return f"revocations could not be checked: {error.summary()}"
