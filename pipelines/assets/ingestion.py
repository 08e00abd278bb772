"""Asset factory: four gated assets per catalog source (fetched, verified, validated, attested).

Each asset runs one :mod:`integrity.intake.ingest` step and reports it through an ERROR-severity
*blocking* asset check, so nothing downstream runs on an input that failed a gate. A
rejected artifact is in quarantine; the asset's metadata and the check's metadata say why.
"""

from typing import Any

import dagster as dg

from integrity.intake.catalog import CatalogError, Source
from integrity.intake.outcomes import StepOutcome, headline
from pipelines.resources import CairnResource, link, report_links

STAGES = (
    # (asset name, ingest step, check name, what the check guarantees)
    ("fetched", "fetch", "fetch_succeeded", "The source and its signature bundle were fetched into quarantine."),
    ("verified", "verify", "signature_verified",
     "The publisher's signature verifies, the signer is allowed by the trust policy and pinned digests match."),
    ("validated", "validate", "content_validated",
     "Datasets pass their expectation suite (and PHI check); models pass the model-file safety gate."),
    ("attested", "attest", "attested_in_trusted_store",
     "The exact verified bytes are in the trusted store with verification, validation and ingestion records."),
)


def asset_key(source: Source, stage: str) -> dg.AssetKey:
    return dg.AssetKey([source.key, stage])


def source_asset_keys(source: Source) -> list[dg.AssetKey]:
    return [asset_key(source, stage) for stage, *_ in STAGES]


def _metadata(source: Source, outcome: StepOutcome, links: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": "passed" if outcome.passed else "quarantined",
        "headline": outcome.headline,
        "reason": outcome.reason,
        "fetch_id": outcome.fetch_id,
    }
    if outcome.digest:
        data["sha256"] = outcome.digest
    if outcome.record_key:
        data["record"] = link(links.record(outcome.record_key), outcome.record_key)
    if outcome.quarantine_id:
        data["quarantine_id"] = outcome.quarantine_id
    details = dict(outcome.details)
    docs_key = details.get("data_docs_key")
    if isinstance(docs_key, str) and docs_key:  # the store's copy, served over HTTP (never a file:// link)
        data["data_docs"] = link(links.record(docs_key), str(details.get("data_docs_store") or docs_key))
    index_key = details.get("data_docs_index_key")
    if isinstance(index_key, str) and index_key:
        data["data_docs_index"] = link(links.record(index_key), index_key)
    failed = details.get("failed")
    if failed:
        rows = [f"| {f.get('name', f.get('rule', '?'))} | {str(f.get('detail', '')).replace('|', '/')[:200]} |"
                for f in failed]
        data["failed_checks"] = dg.MetadataValue.md("| check | detail |\n|---|---|\n" + "\n".join(rows))
    for name in ("uri", "path", "signer", "method", "policy_digest", "store_digest", "store", "files", "bytes"):
        if details.get(name) is not None:
            value = details[name]
            data[name] = dg.MetadataValue.path(value) if name == "path" else value
    data["details"] = dg.MetadataValue.json(_jsonable(details))
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _build_stage(source: Source, index: int) -> dg.AssetsDefinition:
    stage, step, check_name, guarantee = STAGES[index]
    key = asset_key(source, stage)
    deps = [asset_key(source, STAGES[index - 1][0])] if index else []

    @dg.asset(
        key=key,
        deps=deps,
        group_name=source.key,  # one group per source: the UI's graph shows whose fetched/verified/... it is
        description=f"{source.name}: {guarantee}",
        kinds={"cairn", source.kind},
        tags={"cairn/source": source.key, "cairn/stage": stage},
        metadata={
            "source": source.name,
            "uri": source.uri,
            "license": source.license,
            "origin": source.origin,
            "format": source.format,
            "trust_policy_entry": source.policy_source,
        },
        check_specs=[dg.AssetCheckSpec(check_name, asset=key, blocking=True, description=guarantee)],
    )
    def _stage_asset(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        ingestion = cairn.ingestion()
        outcome: StepOutcome = getattr(ingestion, step)(ingestion.catalog.source(source.name))
        if outcome.passed:
            context.log.info(f"{source.name} {step}: {outcome.reason}")
        else:
            context.log.error(f"{source.name} {step} REJECTED, quarantined: {outcome.reason}")
        metadata = _metadata(source, outcome, report_links(cairn, ingestion.store))
        check = dg.AssetCheckResult(
            check_name=check_name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=outcome.headline,
            metadata={k: metadata[k] for k in ("status", "reason", "quarantine_id", "sha256", "record")
                      if k in metadata},
        )
        # Dagster's data version of a gated asset is the content digest, so Dagster's lineage and
        # Cairn's provenance name the same bytes.
        version = dg.DataVersion(f"sha256:{outcome.digest}") if outcome.digest else None
        return dg.MaterializeResult(metadata=metadata, check_results=[check], data_version=version)

    return _stage_asset


def build_source_assets(source: Source) -> list[dg.AssetsDefinition]:
    """The gated chain for one source."""
    return [_build_stage(source, index) for index in range(len(STAGES))]


def build_invalid_entry_asset(name: str, error: CatalogError) -> dg.AssetsDefinition:
    """A catalog entry that failed validation: one asset whose blocking check fails with the reason.

    The entry is quarantined (its reason recorded in the store) and nothing is fetched; the other
    sources in the same run are not affected.
    """
    key = dg.AssetKey([name.replace("-", "_"), "fetched"])

    @dg.asset(
        key=key,
        group_name="invalid_catalog_entries",
        description=f"{name}: this catalog entry is invalid and was not ingested.",
        kinds={"cairn"},
        tags={"cairn/source": name.replace("-", "_"), "cairn/stage": "fetched"},
        check_specs=[dg.AssetCheckSpec("catalog_entry_valid", asset=key, blocking=True,
                                       description="The catalog entry parses and names a usable source.")],
    )
    def _invalid(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:
        ingestion = cairn.ingestion()
        outcome = ingestion.reject_catalog_entry(name, ingestion.catalog.invalid.get(name, error))
        context.log.error(f"{name}: invalid catalog entry, quarantined: {outcome.reason}")
        metadata = {"status": "quarantined", "reason": outcome.reason, "quarantine_id": outcome.quarantine_id or ""}
        return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
            check_name="catalog_entry_valid", passed=False, severity=dg.AssetCheckSeverity.ERROR,
            description=headline(name, "catalog entry check", False, str(outcome.details.get("cause")
                                                                           or outcome.reason)),
            metadata=metadata)])

    return _invalid
