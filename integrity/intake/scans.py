"""The registry of poisoning scans: which scan runs on which catalog source, and the stage it adds.

A scan rule names the stage a release spec refers to (``SOURCE/screened``), the source kind it
applies to, the catalog ``scan_profile`` values and formats it accepts. The pipeline builds one
screening asset per matching source; the release's input chain accepts only registered stages.
Adding a scan is one function (in :mod:`integrity.intake.screening` or a module of its own) and one
:func:`register_scan` call (docs/extending.md).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrity.intake.catalog import Source


@dataclass(frozen=True)
class ScanRule:
    stage: str
    kind: str  # "dataset" or "model"
    profiles: tuple[str, ...]
    formats: tuple[str, ...] = ()  # empty: any format
    description: str = ""

    def applies_to(self, source: "Source") -> bool:
        return (source.kind == self.kind and source.scan_profile in self.profiles
                and (not self.formats or source.format in self.formats))


_SCANS: dict[str, ScanRule] = {}
#: Profiles that no scan covers yet, with what that means (a catalog may name them; the screen is absent).
_UNSCREENED: dict[str, str] = {}


def register_profile(name: str, description: str) -> None:
    """A ``scan_profile`` a catalog may name that no registered scan covers (yet)."""
    _UNSCREENED[name] = description


def known_profiles() -> list[str]:
    """Every ``scan_profile`` a catalog may name: those of the registered scans and the unscreened ones."""
    return sorted({p for rule in _SCANS.values() for p in rule.profiles} | set(_UNSCREENED))


def mandatory_scan(source: "Source") -> ScanRule | None:
    """The scan a source must pass before anything trains on it (None: no registered scan applies)."""
    return next((rule for rule in _SCANS.values() if rule.applies_to(source)), None)


def register_scan(rule: ScanRule) -> None:
    _SCANS[rule.stage] = rule


def scan_rules() -> dict[str, ScanRule]:
    return dict(_SCANS)


def scan_stages() -> dict[str, str]:
    """Stage name -> the source kind it belongs to (what ``SOURCE/STAGE`` inputs may name)."""
    return {stage: rule.kind for stage, rule in _SCANS.items()}


def screened_sources(sources: Iterable["Source"]) -> tuple[list["Source"], "Source | None"]:
    """The datasets to screen and the foundation model whose features they are screened with."""
    listed = list(sources)
    model_rule, dataset_rule = _SCANS["backdoor_scanned"], _SCANS["screened"]
    model = next((s for s in listed if model_rule.applies_to(s)), None)
    return [s for s in listed if dataset_rule.applies_to(s)], model


register_scan(ScanRule("screened", "dataset", ("images", "tabular"),
                       ("npy", "npz", "image-folder", "csv", "tsv", "parquet", "jsonl"),
                       "poisoning screen: per-sample label-consistency and backdoor-split scores (images in the "
                       "foundation model's feature space and their own; tables on their features)"))
register_scan(ScanRule("backdoor_scanned", "model", ("image-classifier",), (),
                       "backdoor scan: reverse-engineered minimal trigger and an outlier test"))
register_profile("default", "no poisoning scan applies")
register_profile("imaging", "medical images (DICOM): no poisoning screen is registered yet")
register_profile("text", "text corpora: no poisoning screen is registered yet")


def probe_dataset(model: "Source", datasets: Iterable["Source"]) -> "Source | None":
    """The image dataset whose samples probe ``model``'s backdoor scan: the model's ``probes:``, else the
    first screened image dataset that is its own policy source (a mirror or re-upload never probes)."""
    from integrity.errors import UsageError

    images = [d for d in datasets if d.scan_profile == "images"]
    if model.probes is not None:
        found = next((d for d in images if d.name == model.probes), None)
        if found is None:
            raise UsageError(f"{model.name}: probes names {model.probes!r}, which is not a screened image dataset "
                             "of the catalog")
        return found
    return next((d for d in images if d.policy_source == d.name), images[0] if images else None)
