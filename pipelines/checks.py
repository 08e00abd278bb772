"""Re-verification checks: is each attested source still what its publisher signed?

These are not part of ingestion: the nightly schedule runs them against every attested
source, so a source changed or re-signed upstream shows up on its ``attested`` asset.
"""

import dagster as dg

from integrity.intake.catalog import Source
from pipelines.assets.ingestion import asset_key
from pipelines.resources import CairnResource

REVERIFY_CHECK = "upstream_unchanged"
_SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warning": dg.AssetCheckSeverity.WARN}


def build_reverify_check(source: Source) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset_key(source, "attested"),
        name=REVERIFY_CHECK,
        description=f"{source.name}: the upstream source still verifies against its publisher signature, "
        "the trust policy and the attested digest (detects changed or re-signed sources).",
    )
    def _reverify(context: dg.AssetCheckExecutionContext, cairn: CairnResource) -> dg.AssetCheckResult:
        ingestion = cairn.ingestion()
        result = ingestion.reverify(ingestion.catalog.source(source.name))
        (context.log.info if result.passed else context.log.error)(f"{source.name}: {result.reason}")
        metadata = {"reason": result.reason, "severity": result.severity}
        if result.attested_digest:
            metadata["attested_sha256"] = result.attested_digest
        if result.upstream_digest:
            metadata["upstream_sha256"] = result.upstream_digest
        for key, value in result.details.items():
            metadata[key] = str(value)
        return dg.AssetCheckResult(
            passed=result.passed,
            severity=_SEVERITY.get(result.severity, dg.AssetCheckSeverity.ERROR),
            description=result.reason,
            metadata=metadata,
        )

    return _reverify


def reverify_check_keys(sources: list[Source]) -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(asset_key(s, "attested"), REVERIFY_CHECK) for s in sources]
