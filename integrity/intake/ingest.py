"""Ingestion steps for one catalog source: fetch, verify, validate, attest.

Each step is a plain function shared by the Dagster assets and by the ``cairn ingest``
command (which the DVC stages run), so the pipeline can be reproduced without Dagster.
Steps hand over through a per-source work area under the Cairn home::

    work/<source>/fetched/<name>      the bytes as fetched (untrusted: the quarantine side)
    work/<source>/signature/<name>    the publisher's bundle, when it is not inside the drop
    work/<source>/state.json          the outcome of every step for the current fetch
    attested/<source>/<name>          the attested copy, materialized from the trusted store

A step never raises for a rejected artifact: it returns a :class:`StepOutcome` with the
reason, moves the bytes to quarantine and writes a record. It raises only when it cannot
run at all (a previous step did not pass for this fetch, or the catalog is unusable).
"""

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrity import safeio
from integrity.errors import CairnError, StoreError, UsageError
from integrity.intake.attest import attest
from integrity.intake.catalog import Catalog, Source
from integrity.intake.dvc import dvc_lock_entries
from integrity.intake.fetch import FetchError, _fetch_uri
from integrity.intake.outcomes import STEPS, ContentRejectedError, Reverification, StepOrderError, StepOutcome
from integrity.intake.validate import _record_name, dataset_report, model_report
from integrity.settings import current
from integrity.storage import ArtifactStore, open_store
from integrity.trust.hashing import HashingConfig, hash_artifact, manifest_root, sha256_file
from integrity.trust.policy import TrustPolicy, load_policy
from integrity.trust.signing import atomic_write
from integrity.trust.statements import stamped

VALIDATION_PREDICATE_TYPE = "https://cairn.dev/attestations/validation/v1"
INGESTION_PREDICATE_TYPE = "https://cairn.dev/attestations/ingestion/v1"


@dataclass
class Ingestion:
    """Everything the steps share: the catalog, its trust policy, the store and the Cairn home."""

    catalog: Catalog
    home: Path
    store: ArtifactStore
    _policy: TrustPolicy | None = None

    @classmethod
    def open(cls, catalog: Catalog, *, home: Path | None = None, store: str | None = None) -> "Ingestion":
        root = Path(home) if home is not None else catalog.root
        return cls(catalog=catalog, home=root, store=open_store(store or current(home=root).store))

    @property
    def policy(self) -> TrustPolicy:
        """The trust policy, read when first needed.

        A broken policy is the operator's configuration mistake: it raises (exit 2, a failed step), and is
        never recorded as a vendor's rejection.
        """
        if self._policy is None:
            self._policy = load_policy(self.catalog.policy_path)
        return self._policy

    # -- work area ------------------------------------------------------------------------

    def work_dir(self, source: Source) -> Path:
        return self.home / "work" / source.key

    def attested_dir(self, source: Source) -> Path:
        return self.home / "attested" / source.key

    def state(self, source: Source) -> dict[str, StepOutcome]:
        path = self.work_dir(source) / "state.json"
        try:
            raw = safeio.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"unreadable step state: {exc}", artifact=path) from exc
        return {step: StepOutcome.from_dict(value) for step, value in raw.get("steps", {}).items()}

    def _save(self, source: Source, outcome: StepOutcome, *, reset: bool = False) -> StepOutcome:
        steps = {} if reset else {k: v.as_dict() for k, v in self.state(source).items()}
        steps[outcome.step] = outcome.as_dict()
        for later in STEPS[STEPS.index(outcome.step) + 1 :]:
            steps.pop(later, None)  # a new result invalidates what was built on the old one
        body = {"source": source.name, "catalog": self.catalog.describe(), "steps": steps}
        self.work_dir(source).mkdir(parents=True, exist_ok=True)
        atomic_write(self.work_dir(source) / "state.json", json.dumps(body, indent=2, sort_keys=True).encode())
        return outcome

    def _require(self, source: Source, step: str) -> StepOutcome:
        previous = STEPS[STEPS.index(step) - 1]
        outcome = self.state(source).get(previous)
        if outcome is None:
            raise StepOrderError(f"{step} needs a {previous} result first; run {previous} for {source.name!r}")
        if not outcome.passed:
            raise StepOrderError(
                f"{step} refused: {previous} did not pass for this fetch ({outcome.reason})", artifact=source.name
            )
        return outcome

    def fetched_artifact(self, source: Source) -> Path:
        folder = self.work_dir(source) / "fetched"
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        if len(entries) != 1:
            raise StepOrderError(f"no fetched artifact for {source.name!r}; run fetch first", artifact=folder)
        return entries[0]

    def fetched_bundle(self, source: Source) -> Path | None:
        folder = self.work_dir(source) / "signature"
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        return entries[0] if entries else None

    # -- records and quarantine -------------------------------------------------------------

    def log_key(self, key: str) -> str:
        """Append a stored record to the transparency ledger (see integrity.ledger.transparency); returns the key."""
        from integrity.ledger.transparency import log_record

        log_record(self.store, key, home=self.home)
        return key

    def _reject(self, source: Source, step: str, fetch_id: str, artifact: Path | str, error: CairnError,
                **details: Any) -> StepOutcome:
        entry = self.store.quarantine(
            artifact,
            error.summary(),
            source=source.name,
            details={"step": step, "error": type(error).__name__, "kind": error.kind, "fetch_id": fetch_id, **details},
        )
        outcome = StepOutcome(
            source.name, step, False, error.summary(), fetch_id, digest=entry.digest,
            details={"error": type(error).__name__, "kind": error.kind, "advice": error.advice,
                     "cause": error.reason, **details},
            record_key=entry.record_key, quarantine_id=entry.id,
        )
        return self._save(source, outcome, reset=step == "fetch")

    def reject_catalog_entry(self, name: str, error: CairnError) -> StepOutcome:
        """Record an invalid catalog entry in quarantine; nothing is fetched for it."""
        fetch_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        entry = self.store.quarantine(f"{self.catalog.path}#{name}", error.summary(), source=name,
                                      details={"step": "catalog", "error": type(error).__name__, "kind": error.kind})
        outcome = StepOutcome(name, "fetch", False, error.summary(), fetch_id,
                              details={"error": type(error).__name__, "kind": error.kind},
                              record_key=entry.record_key, quarantine_id=entry.id)
        folder = self.home / "work" / name.replace("-", "_")
        body = {"source": name, "catalog": self.catalog.describe(), "steps": {"fetch": outcome.as_dict()}}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "state.json", json.dumps(body, indent=2, sort_keys=True).encode())
        return outcome

    # -- steps ------------------------------------------------------------------------------

    def fetch(self, source: Source) -> StepOutcome:
        """Copy the source and its signature into the work area; nothing here is trusted yet.

        The copy is made beside the previous one and only swapped in when complete and safe
        (no links out of the drop, no special files, no bad names), so a failed fetch never
        leaves a half-written or unsafe artifact for the next step.
        """
        fetch_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        uri = self.catalog.resolve(source.uri)
        work = self.work_dir(source)
        staging = work / f".fetch-{fetch_id}"
        try:
            staging.mkdir(parents=True)
            artifact = _fetch_uri(uri, staging / "fetched")
            bundle_uri = self.catalog.resolve(source.signature_uri(artifact.is_dir()))
            if artifact.is_dir() and _inside_drop(uri, bundle_uri):
                if not (artifact / bundle_uri[len(uri.rstrip("/")) + 1 :]).is_file():
                    raise FetchError(f"missing signature: no bundle at {bundle_uri}", artifact=source.name)
            else:
                try:
                    _fetch_uri(bundle_uri, staging / "signature", want_file=True)
                except FetchError as exc:
                    raise FetchError(f"missing signature: {exc.reason}", artifact=source.name) from exc
            manifest = hash_artifact(artifact, HashingConfig())
            digest = manifest.root_digest if artifact.is_dir() else sha256_file(artifact)
            details = {"uri": uri, "files": len(manifest.files), "bytes": _size(artifact)}
            for name in ("fetched", "signature"):
                shutil.rmtree(work / name, ignore_errors=True)
                if (staging / name).exists():
                    os.replace(staging / name, work / name)
        except CairnError as error:
            # What was fetched so far (if anything) is kept in quarantine with the reason.
            return self._reject(source, "fetch", fetch_id, _first_entry(staging / "fetched") or uri, error, uri=uri)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        details["path"] = str(self.fetched_artifact(source))
        outcome = StepOutcome(source.name, "fetch", True, f"fetched {details['files']} file(s) from {uri}", fetch_id,
                              digest=digest, details=details)
        return self._save(source, outcome, reset=True)

    def verify(self, source: Source) -> StepOutcome:
        """Check the publisher's signature, the digests and the trust policy for this source."""
        from integrity.trust.records import record_for_failure, record_for_result
        from integrity.trust.verifying import verify_source

        fetch_id = self._require(source, "verify").fetch_id
        artifact, bundle = self.fetched_artifact(source), self.fetched_bundle(source)
        policy = self.policy  # outside the try: a policy that cannot be read is a usage error, not a rejection
        try:
            result = verify_source(artifact, policy, source.policy_source, bundle=bundle)
        except CairnError as error:
            outcome = self._reject(source, "verify", fetch_id, artifact, error)
            record = record_for_failure(artifact, error, source=source.policy_source,
                                        policy=self._policy, bundle=bundle)
            self.log_key(self.store.put_record("verifications", _record_name(source, "verify-failed"), record))
            return outcome
        key = self.log_key(self.store.put_record("verifications", _record_name(source, "verify"),
                                              record_for_result(result)))
        details = {
            "signer": result.evidence.describe(),
            "method": result.evidence.method,
            "policy_digest": (result.policy or {}).get("digest"),
            "policy_version": (result.policy or {}).get("version"),
            "files": len(result.manifest.files) if result.manifest else 1,
        }
        outcome = StepOutcome(source.name, "verify", True, result.reason, fetch_id, digest=result.digest,
                              details=details, record_key=key)
        return self._save(source, outcome)

    def validate(self, source: Source) -> StepOutcome:
        """Datasets against their expectation suite (and PHI); models through the model-file gate."""
        fetch_id = self._require(source, "validate").fetch_id
        artifact = self.fetched_artifact(source)
        digest = self.state(source)["verify"].digest
        if source.kind == "dataset" and source.suite is not None:
            from integrity.scans.expectations import load_suite

            load_suite(source.suite)  # a suite mistake is the operator's usage error, never the vendor's rejection
        try:
            if source.kind == "dataset":
                report = dataset_report(self, source, artifact)
            else:
                report = model_report(self, source, artifact)
        except CairnError as error:
            return self._reject(source, "validate", fetch_id, artifact, error)
        record = stamped(artifact.name, digest, VALIDATION_PREDICATE_TYPE,
                            {"source": source.name, "kind": source.kind, "result": report, "fetchId": fetch_id})
        key = self.log_key(self.store.put_record("validations", _record_name(source, "validate"), record))
        if not report["passed"]:
            rejected = ContentRejectedError(report["reason"], artifact=source.name)
            outcome = self._reject(source, "validate", fetch_id, artifact, rejected, report=_brief(report))
            return self._save(source, StepOutcome(**{**outcome.__dict__, "record_key": key}))
        outcome = StepOutcome(source.name, "validate", True, report["reason"], fetch_id, digest=digest,
                              details=_brief(report), record_key=key)
        return self._save(source, outcome)

    def attest(self, source: Source) -> StepOutcome:
        """Re-verify, store the exact verified bytes as trusted, and write the ingestion record."""
        previous = self._require(source, "attest")
        state = self.state(source)
        artifact, bundle = self.fetched_artifact(source), self.fetched_bundle(source)
        result = attest(artifact, self.policy, source.policy_source, self.store, bundle=bundle)
        self.log_key(result.record_key)
        if not result.attested or result.digest != state["verify"].digest:
            reason = result.reason if not result.attested else "bytes changed since verification"
            outcome = StepOutcome(source.name, "attest", False, reason, previous.fetch_id, digest=result.digest,
                                  record_key=result.record_key)
            return self._save(source, outcome)
        assert result.result is not None
        stored_digest = self.store.get_record(*_split_record(result.record_key))["predicate"]["store"]["digest"]
        # Models: downstream only ever sees the safetensors conversion made by the gate.
        # ``usable_digest`` names the bytes downstream reads, the same way verification names them
        # (manifest root for a directory, SHA-256 for a file); ``usable_store`` is their store address.
        converted = self.converted_dir(source) / artifact.name
        usable_store, usable_digest = stored_digest, result.digest
        conversions = state["validate"].details.get("conversions") or []
        if source.kind == "model" and conversions:
            # Pin the work area's conversion to what validation produced and recorded: weights swapped in
            # ``converted/`` between the two steps are refused, never attested.
            pinned_digest, pinned_files = _conversion_pins(result.result, conversions, artifact.is_dir())
            try:
                stored = self.store.promote(converted, pinned_digest, expected_files=pinned_files)
            except CairnError as error:
                outcome = StepOutcome(source.name, "attest", False,
                                      f"the converted weights are not the ones validation produced: {error.reason}",
                                      previous.fetch_id, digest=result.digest, record_key=result.record_key)
                return self._save(source, outcome)
            usable_store = stored.digest
            usable_digest = pinned_digest or manifest_root(pinned_files or {})
        target = self.attested_dir(source)
        _replace_with(target, artifact.name, lambda dest: self.store.materialize(usable_store, dest))
        ingestion = stamped(artifact.name, result.digest, INGESTION_PREDICATE_TYPE, {
            "source": source.as_dict(),
            "catalog": self.catalog.describe(),
            "fetch": state["fetch"].as_dict(),
            "verification": result.record_key,
            "validation": state["validate"].record_key,
            "validationResult": state["validate"].details,
            "store": {"url": self.store.url, "digest": stored_digest, "usable": usable_store},
            "usableDigest": usable_digest,
            "conversions": state["validate"].details.get("conversions") or [],
            "attestedCopy": str(target / artifact.name),
            "dvcLock": dvc_lock_entries(self.home.parent),
        })
        key = self.log_key(self.store.put_record("ingestions", _record_name(source, "ingest"), ingestion))
        atomic_write(target.parent / f"{source.key}.json", json.dumps(
            {"source": source.name, "digest": result.digest, "store_digest": stored_digest,
             "usable_digest": usable_digest, "usable_store_digest": usable_store, "record": key,
             "verification": result.record_key, "validation": state["validate"].record_key,
             "fetch_id": previous.fetch_id}, indent=2, sort_keys=True).encode())
        details = {"store_digest": stored_digest, "usable_digest": usable_digest, "store": self.store.url,
                   "path": str(target / artifact.name),
                   "verification_record": result.record_key, "validation_record": state["validate"].record_key,
                   "signer": result.result.evidence.describe()}
        outcome = StepOutcome(source.name, "attest", True, f"attested as sha256:{result.digest}", previous.fetch_id,
                              digest=result.digest, details=details, record_key=key)
        return self._save(source, outcome)

    def attested_record(self, source: Source) -> dict[str, Any] | None:
        """What the last successful attest step wrote for this source, if any."""
        path = self.attested_dir(source).parent / f"{source.key}.json"
        try:
            data: dict[str, Any] = safeio.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"unreadable attestation summary: {exc}", artifact=path) from exc
        return data

    def reverify(self, source: Source) -> Reverification:
        """Fetch the source again and check it against its publisher signature and what was attested.

        Detects a source whose bytes changed upstream, one re-signed upstream (same bytes, new
        bundle or signer), one no longer signed by an allowed signer, and one that disappeared.
        Nothing in the work area, the attested copy or the trusted store is changed.
        """
        from integrity.trust.verifying import verify_source

        attested = self.attested_record(source)
        if attested is None:
            return Reverification(source.name, False, "never attested: nothing to re-verify", "error")
        uri = self.catalog.resolve(source.uri)
        scratch = self.home / "work" / ".reverify" / f"{source.key}-{uuid.uuid4().hex[:8]}"
        try:
            artifact = _fetch_uri(uri, scratch / "fetched")
            bundle_uri = self.catalog.resolve(source.signature_uri(artifact.is_dir()))
            bundle: Path | None = None
            if not (artifact.is_dir() and _inside_drop(uri, bundle_uri)):
                bundle = _fetch_uri(bundle_uri, scratch / "signature", want_file=True)
            result = verify_source(artifact, self.policy, source.policy_source, bundle=bundle)
        except CairnError as error:
            return Reverification(source.name, False, f"upstream no longer verifies: {error.summary()}", "error",
                                  attested_digest=attested.get("digest"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        details = {"signer": result.evidence.describe(), "bundle_sha256": result.bundle_digest}
        if result.digest != attested.get("digest"):
            return Reverification(
                source.name, False,
                f"source changed upstream: now sha256:{result.digest}, attested sha256:{attested.get('digest')}",
                "error", attested.get("digest"), result.digest, details)
        previous_bundle = self._attested_bundle_digest(attested)
        if previous_bundle is not None and previous_bundle != result.bundle_digest:
            return Reverification(
                source.name, False,
                f"re-signed upstream: same bytes, new signature bundle by {result.evidence.describe()}",
                "warning", attested.get("digest"), result.digest, details)
        return Reverification(source.name, True, f"unchanged upstream; still signed by {result.evidence.describe()}",
                              "info", attested.get("digest"), result.digest, details)

    def _attested_bundle_digest(self, attested: Mapping[str, Any]) -> str | None:
        key = attested.get("verification")
        if not isinstance(key, str):
            return None
        try:
            record = self.store.get_record(*_split_record(key))
        except CairnError:
            return None
        bundle = (record.get("predicate") or {}).get("bundle") or {}
        value = bundle.get("sha256")
        return value if isinstance(value, str) else None

    def run(self, source: Source) -> list[StepOutcome]:
        """All four steps, stopping at the first rejection (what the pipeline does, without Dagster)."""
        outcomes: list[StepOutcome] = []
        for step in STEPS:
            outcome = getattr(self, step)(source)
            outcomes.append(outcome)
            if not outcome.passed:
                break
        return outcomes

    def converted_dir(self, source: Source) -> Path:
        return self.work_dir(source) / "converted"


def _conversion_pins(verified: Any, conversions: list[Mapping[str, Any]],
                     folder: bool) -> tuple[str | None, dict[str, str] | None]:
    """(file digest, per-file digests) the conversion folder must hold: verified files, converted ones swapped."""
    if not folder:
        if len(conversions) != 1:
            raise StoreError("a single-file model has exactly one conversion")
        return str(conversions[0]["to_sha256"]), None
    manifest = verified.manifest
    if manifest is None:
        raise StoreError("the verified model folder has no per-file manifest to pin its conversion to")
    files = {name: digest for name, digest in manifest.files.items() if name != "model.sig"}
    for conversion in conversions:
        files.pop(str(conversion["from"]), None)
        files[str(conversion.get("to_path") or conversion["to"])] = str(conversion["to_sha256"])
    return None, files


def _brief(report: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a validation report worth showing in asset metadata."""
    keep = ("passed", "reason", "format", "suite", "suite_digest", "data_docs", "data_docs_store", "data_docs_key",
            "data_docs_index_key",
            "conversions",
            "statistics", "formats", "files_scanned", "allowlist_version")
    brief = {k: report[k] for k in keep if k in report}
    outcomes = report.get("outcomes") or report.get("findings") or []
    brief["failed"] = [o for o in outcomes if not o.get("passed", False)][:20]
    brief["checks"] = len(outcomes)
    return brief


def _split_record(key: str) -> tuple[str, str]:
    parts = key.strip("/").split("/")
    return parts[-2], parts[-1].removesuffix(".json")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _first_entry(folder: Path) -> Path | None:
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    return entries[0] if entries else None


def _inside_drop(uri: str, bundle_uri: str) -> bool:
    base = uri.rstrip("/") + "/"
    return bundle_uri.startswith(base) and ".." not in bundle_uri[len(base):].split("/")


def _replace_with(target: Path, name: str, build: Any) -> None:
    """Build ``target/name`` beside the old copy, then swap, so readers never see a half copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        build(staging / name)
        old = target.parent / f".{target.name}-old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- fetching ---------------------------------------------------------------------------------


# -- DVC --------------------------------------------------------------------------------------


