"""Screening assets: poisoning scans between attestation and fine-tuning, each gated by a blocking check.

* ``<model>/backdoor_scanned``: the attested foundation model's backdoor scan (a reverse-engineered
  minimal trigger and an outlier test); check ``no_backdoor_found``.
* ``<dataset>/screened``: the attested image dataset scanned with the (scanned) foundation model;
  flagged samples go to quarantine, the filtered dataset into the trusted store; check
  ``poisoning_within_policy``.

Both checks are ERROR-severity and blocking, so fine-tuning never sees a dataset or model that
failed. Metadata shows the verdict, the figures and the PNG plots (inline, as markdown images).
"""

import base64
from pathlib import Path
from typing import Any

import dagster as dg

from integrity.intake.catalog import Catalog, Source
from integrity.intake.outcomes import headline
from integrity.intake.scans import screened_sources
from integrity.intake.screening import ScreeningOutcome
from pipelines.assets.ingestion import asset_key
from pipelines.resources import CairnResource, link, report_links


def screening_asset_keys(source: Source, catalog: Catalog | list[Source]) -> list[dg.AssetKey]:
    """The screening assets that follow a source's ingestion (what a new drop of it must re-run)."""
    datasets, model = screened_sources(catalog)
    if model is not None and source.name == model.name:
        return [asset_key(source, "backdoor_scanned")]
    return [asset_key(source, "screened")] if any(d.name == source.name for d in datasets) else []


def _plots_markdown(plots: list[str]) -> str:
    parts = []
    for plot in plots:
        path = Path(plot)
        if path.is_file():
            encoded = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"![{path.name}](data:image/png;base64,{encoded})\n\n`{path.name}`")
    return "\n\n".join(parts) or "(no plot)"


def _metadata(outcome: ScreeningOutcome, links: Any, gate: str, subject: str) -> dict[str, Any]:
    data: dict[str, Any] = {"status": "passed" if outcome.passed else "blocked",
                            "headline": headline(subject, gate, outcome.passed, outcome.reason),
                            "reason": outcome.reason}
    summary = outcome.summary
    for name in ("samples", "flagged", "score", "seconds", "device", "output_digest", "quarantine_id"):
        if summary.get(name) is not None:
            data[name] = summary[name]
    if summary.get("backdoor_classes") is not None:
        data["backdoor_classes"] = str(summary["backdoor_classes"])
    if outcome.record_key:
        data["record"] = link(links.record(outcome.record_key), outcome.record_key)
    if outcome.output:
        data["screened_path"] = dg.MetadataValue.text(outcome.output)
    per_class = summary.get("per_class")
    if isinstance(per_class, dict):
        rows = [f"| {c} | {v['samples']} | {v['flagged']} |" for c, v in per_class.items()]
        data["per_class"] = dg.MetadataValue.md("| class | samples | flagged |\n|---|---|---|\n" + "\n".join(rows))
    if outcome.plots:
        data["plots"] = dg.MetadataValue.md(_plots_markdown(outcome.plots))
        data["plot_files"] = dg.MetadataValue.json(outcome.plots)
    data["summary"] = dg.MetadataValue.json({k: v for k, v in summary.items() if k != "per_class"})
    return data


def _result(check_name: str, outcome: ScreeningOutcome, context: Any, links: Any, gate: str,
            subject: Source) -> dg.MaterializeResult:
    (context.log.info if outcome.passed else context.log.error)(f"{subject.name}: {outcome.reason}")
    metadata = _metadata(outcome, links, gate, subject.name)
    check = dg.AssetCheckResult(check_name=check_name, passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR,
                                description=metadata["headline"],
                                metadata={k: metadata[k] for k in ("status", "reason", "flagged", "score", "record")
                                          if k in metadata})
    # The data version is the digest of what downstream reads: the filtered copy of a screened
    # dataset, the scanned weights of a model (so Dagster's lineage and the provenance graph agree).
    digest = outcome.output_digest or (outcome.summary.get("digest") if outcome.passed else None)
    version = dg.DataVersion(f"sha256:{digest}") if digest else None
    return dg.MaterializeResult(metadata=metadata, check_results=[check], data_version=version)


def build_model_scan_asset(model: Source, datasets: list[Source]) -> dg.AssetsDefinition:
    key = asset_key(model, "backdoor_scanned")
    from integrity.intake.scans import probe_dataset

    probe = probe_dataset(model, datasets)
    images = [probe] if probe is not None else []

    @dg.asset(key=key, deps=[asset_key(model, "attested"), *(asset_key(d, "attested") for d in images)],
              group_name=model.key,
              description=f"{model.name}: backdoor scan of the attested foundation model (reverse-engineered "
                          "minimal trigger per embedding region, outlier test).",
              kinds={"cairn", "model"}, tags={"cairn/source": model.key, "cairn/stage": "backdoor_scanned"},
              check_specs=[dg.AssetCheckSpec("no_backdoor_found", asset=key, blocking=True,
                                             description="The model scan's anomaly index is within policy.")])
    def _scan(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:
        from integrity.intake.screening import ScreenInputs, scan_model

        ingestion = cairn.ingestion()
        probing = ", ".join(d.name for d in images) or "nothing"
        context.log.info(f"backdoor scan of {model.name}, probing with samples of {probing}")
        outcome = scan_model(ingestion.home, ingestion.store, model.key,
                             datasets=[(d.key, ScreenInputs.of(d)) for d in images])
        return _result("no_backdoor_found", outcome, context, report_links(cairn, ingestion.store), "scan", model)

    return _scan


def build_screening_asset(dataset: Source, model: Source | None) -> dg.AssetsDefinition:
    key = asset_key(dataset, "screened")
    deps = [asset_key(dataset, "attested")] + ([asset_key(model, "backdoor_scanned")] if model else [])

    @dg.asset(key=key, deps=deps, group_name=dataset.key,
              description=f"{dataset.name}: poisoning scan (label flips, backdoor triggers, clean-label poisons) "
                          "with the attested foundation model; the filtered dataset is stored as trusted.",
              kinds={"cairn", "dataset"}, tags={"cairn/source": dataset.key, "cairn/stage": "screened"},
              check_specs=[dg.AssetCheckSpec("poisoning_within_policy", asset=key, blocking=True,
                                             description="Flagged fraction within policy and no backdoor signature.")])
    def _screen(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:
        from integrity.intake.screening import ScreenInputs, screen_dataset

        ingestion = cairn.ingestion()
        context.log.info(f"screening {dataset.name} ({dataset.format}) for poisoning")
        outcome = screen_dataset(ingestion.home, ingestion.store, dataset.key, model_key=model.key if model else None,
                                 inputs=ScreenInputs.of(dataset))
        return _result("poisoning_within_policy", outcome, context, report_links(cairn, ingestion.store), "screen",
                       dataset)

    return _screen


def build_screening_assets(catalog: Catalog | list[Source]) -> list[dg.AssetsDefinition]:
    datasets, model = screened_sources(catalog)
    assets = [build_model_scan_asset(model, datasets)] if model else []
    return assets + [build_screening_asset(d, model) for d in datasets]
