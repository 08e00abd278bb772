"""Sensors: launch ingestion when a vendor drops something new; mark revoked releases; explain failed runs."""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from integrity.errors import CairnError
from integrity.intake.catalog import Source, cairn_home
from integrity.intake.drops import changed, location_uri, snapshot, sources_for
from integrity.settings import current
from integrity.trust.signing import atomic_write
from pipelines.assets.ingestion import source_asset_keys
from pipelines.assets.screening import screening_asset_keys
from pipelines.resources import CairnResource


def drop_location(cairn: CairnResource) -> str:
    """``$CAIRN_DROP_LOCATION`` or the project file's ``drop_location`` (a folder or ``s3://bucket/prefix``; ``cairn
    init`` writes ``drops``), else ``<home>/drops``."""
    from integrity.settings import current

    location: str = current(home=cairn.home or None).drop_location
    return location


def build_drop_sensor(sources: list[Source], job: Any) -> dg.SensorDefinition:
    @dg.sensor(
        name="vendor_drop_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Notices new or changed objects under the drop location and ingests the sources they belong to.",
    )
    def _vendor_drops(context: dg.SensorEvaluationContext, cairn: CairnResource) -> dg.SensorResult:
        location = drop_location(cairn)
        try:
            current = snapshot(location)
            catalog = cairn.load_catalog()
        except CairnError as error:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"cannot read {location}: {error.summary()}"))
        previous = json.loads(context.cursor) if context.cursor else {}
        fresh = changed(previous, current)
        owners, unclaimed = sources_for(fresh, catalog)
        requests = []
        for name, objects in sorted(owners.items()):
            source = catalog.source(name)
            marker = hashlib.sha256(json.dumps({o: current[o] for o in objects}, sort_keys=True).encode()).hexdigest()
            requests.append(dg.RunRequest(
                run_key=f"{source.key}:{marker[:16]}",
                # Ingestion, then the poisoning screen / backdoor scan that guards what it feeds.
                asset_selection=source_asset_keys(source) + screening_asset_keys(source, catalog),
                tags={"cairn/source": source.name, "cairn/trigger": "vendor-drop",
                      "cairn/objects": str(len(objects))},
            ))
        if unclaimed:
            context.log.warning(f"{len(unclaimed)} object(s) under {location_uri(location)} belong to no catalog "
                                f"source and were not ingested: {', '.join(unclaimed[:10])}")
        skip = None if requests else dg.SkipReason(
            f"no new objects under {location_uri(location)}" if not fresh else
            f"{len(fresh)} new object(s), none belonging to a catalog source")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True),
                               skip_reason=skip)

    return _vendor_drops


@dg.run_failure_sensor(
    name="explain_failed_runs",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes why a run failed (which gate, which source, the quarantine reason) to <home>/alerts.",
)
def explain_failed_runs(context: dg.RunFailureSensorContext) -> None:
    reasons = []
    for event in context.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        reasons.append({"step": event.step_key, "error": error.message.strip() if error else "unknown"})
    for record in context.instance.get_records_for_run(context.dagster_run.run_id).records:
        entry = record.event_log_entry
        if entry.dagster_event and entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = entry.dagster_event.event_specific_data
            if data is not None and not data.passed:
                reason = data.metadata.get("reason")
                reasons.append({"check": data.asset_check_key.to_user_string(),
                                "reason": getattr(reason, "value", str(reason))})
    outcome = run_outcome(reasons)
    summary = {
        "run_id": context.dagster_run.run_id,
        "job": context.dagster_run.job_name,
        "failed_at": datetime.now(UTC).isoformat(),
        "outcome": outcome,
        "message": context.failure_event.message,
        "reasons": reasons,
    }
    # The runs list shows tags: an operator tells a gate that quarantined an input as designed from a break.
    gates = sorted({r["check"] for r in reasons if "check" in r})
    context.instance.add_run_tags(context.dagster_run.run_id, {
        "cairn/outcome": outcome, **({"cairn/quarantined-by": ", ".join(gates)[:200]} if gates else {})})
    alerts = cairn_home() / "alerts"
    alerts.mkdir(parents=True, exist_ok=True)
    atomic_write(alerts / f"{context.dagster_run.run_id}.json", json.dumps(summary, indent=2).encode())
    context.log.error(f"run {context.dagster_run.run_id} failed: " + "; ".join(
        r.get("reason") or r.get("error", "") for r in reasons)[:2000])


def run_outcome(reasons: list[dict[str, str]]) -> str:
    """``quarantined`` when every failure is a gate's blocking check refusing an input (as designed), else ``broken``.

    A blocking check that fails makes its step fail with Dagster's blocking-check error; any other step
    error (an exception, a usage error, a crash) means the run broke.
    """
    checks = [r for r in reasons if "check" in r]
    errors = [r["error"] for r in reasons if "step" in r]
    blocked = all("blocking" in e.lower() and "check" in e.lower() for e in errors)
    return "quarantined" if checks and blocked else "broken"


def build_revocation_sensor(release_keys: Sequence[dg.AssetKey]) -> dg.SensorDefinition:
    """Fail the released asset's ``not_revoked`` check, and record why, as soon as a revocation names it."""

    @dg.sensor(
        name="revocation_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reads the signed revocations (the store and $CAIRN_REVOCATIONS) and marks every released "
                    "model they name as revoked: its not_revoked check fails with the reason, time and authority.",
    )
    def _revocations(context: dg.SensorEvaluationContext, cairn: CairnResource) -> dg.SensorResult:
        reported: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
        for key in release_keys:
            event = context.instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event is not None else None
            release = materialization.metadata.get("release") if materialization is not None else None
            if release is None:
                continue
            status = revocation_events(key, Path(str(release.value)), cairn)
            if status is None or reported.get(key.to_user_string()) == status[0]:
                continue
            reported[key.to_user_string()] = status[0]
            events.extend(status[1])
        skip = None if events else dg.SkipReason("no release is newly revoked")
        return dg.SensorResult(asset_events=events, cursor=json.dumps(reported, sort_keys=True), skip_reason=skip)

    return _revocations


def revocation_events(key: dg.AssetKey, release: Path, cairn: CairnResource
                      ) -> tuple[str, list[dg.AssetObservation | dg.AssetCheckEvaluation]] | None:
    """(what was reported, the events) for a revoked release; None while it is not revoked."""
    from integrity.distribution.revocations import release_status
    from integrity.storage import open_store
    from pipelines.assets.release import NOT_REVOKED_CHECK

    home = Path(cairn.home) if cairn.home else cairn_home()
    status = release_status(release, open_store(current(home=home, store=cairn.store).store), home)
    if status is None or not status.revoked:
        return None
    first = status.revoked[0]
    metadata = {"revoked": dg.MetadataValue.text(status.summary), "reason": first.reason,
                "revoked_at": first.revoked_at, "revoked_by": dg.MetadataValue.json(dict(first.revoked_by)),
                "subject": f"{first.kind} {first.subject}", "revocation_record": first.record_key}
    check = dg.AssetCheckEvaluation(asset_key=key, check_name=NOT_REVOKED_CHECK, passed=False,
                                    severity=dg.AssetCheckSeverity.ERROR, metadata=metadata,
                                    description=f"{status.reference} was revoked: {first.reason}")
    return first.record_key, [dg.AssetObservation(asset_key=key, metadata=metadata,
                                                  description=f"REVOKED: {first.reason}"), check]
