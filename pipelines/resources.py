"""Resources: where Cairn keeps its state, which catalog it ingests, which store it trusts."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from integrity.intake.catalog import Catalog, load_catalog
from integrity.intake.ingest import Ingestion
from integrity.settings import current, package_data

if TYPE_CHECKING:
    from integrity.distribution.reports import ReportLinks

#: The catalog served when none is configured: the demo's vendor drops under the Cairn home.
DEMO_CATALOG = package_data("catalogs", "demo.yaml")


def default_catalog_path() -> Path:
    return current().catalog


def load_default_catalog() -> Catalog:
    # Lenient per entry: a bad entry becomes a failed, quarantined source, not a broken code location.
    return load_catalog(default_catalog_path(), root=_home(""), strict=False)


def _home(configured: str) -> Path:
    return current(home=configured).home


class CairnResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Cairn home (drops, work area, attested copies), the catalog and the artifact store.

    Empty values mean the embedded default: ``$CAIRN_HOME`` (else ``./.cairn``), the
    catalog in ``$CAIRN_CATALOG`` (else the demo catalog) and ``$CAIRN_STORE`` (else
    ``<home>/store``, a local store; ``s3://bucket/prefix`` for S3).
    """

    home: str = ""
    catalog: str = ""
    store: str = ""

    def load_catalog(self) -> Catalog:
        path = Path(self.catalog) if self.catalog else default_catalog_path()
        return load_catalog(path, root=_home(self.home), strict=False)

    def ingestion(self) -> Ingestion:
        home = _home(self.home)
        return Ingestion.open(self.load_catalog(), home=home, store=current(home=home, store=self.store).store)


def report_links(cairn: CairnResource, store: object) -> "ReportLinks":
    """Where the UI's links point: the report server (``cairn serve``), ``store``'s presigned URLs (S3), or nowhere."""
    from integrity.distribution.reports import ReportLinks

    return ReportLinks(current(home=_home(cairn.home), store=cairn.store).reports_url, store)


def link(url: str | None, shown: str | None) -> dg.MetadataValue:  # type: ignore[type-arg]
    """A URL the UI renders as a link; without one, the location as plain text (never a ``file://`` URL)."""
    if url:
        return dg.MetadataValue.url(url)
    return dg.MetadataValue.text(shown or "-")
