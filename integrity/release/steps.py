"""From attested inputs to a signed release: train, gate, document, sign, and check the result.

:class:`ReleaseWork` holds one model's release steps (the Dagster assets call them one by one;
:func:`release_model` runs all three). Work lives under ``<home>/work/releases/<model>/`` and
releases under ``<home>/releases/``. Every step re-resolves the inputs (records, revocations) and
re-hashes what it reads, so a change or a revocation between steps stops the release.

The release identity signs. By default it is the key pair ``<home>/keys/release.{key,pub}``
(``CAIRN_RELEASE_KEY`` overrides the private key); ``CAIRN_RELEASE_SIGNING=keyless`` signs with
Sigstore (CI). Who may sign a model's releases is ``<home>/release-policy.yaml``
(``CAIRN_RELEASE_POLICY`` overrides), an ordinary trust policy whose source names are model names.
"""

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from integrity.errors import CairnError, UsageError
from integrity.intake.ingest import Ingestion
from integrity.release import recipes
from integrity.release.bom import build_bom, validate_bom
from integrity.release.bundle import ReleaseGateError, next_sequence, verify_bundle, write_bundle
from integrity.release.evaluation import GateResult, Trigger, load_gate_result, load_triggers, scan_triggers
from integrity.release.findings import BundleReport
from integrity.release.inputs import AttestedInput, resolve_inputs
from integrity.release.provenance import ReleaseContext, build_lineage, build_provenance, render_svg
from integrity.release.revocation import RevocationList
from integrity.release.spec import ReleaseSpec
from integrity.release.training import TrainingRun, load_training_run, read_model
from integrity.safeio import parse_yaml
from integrity.trust.methods.key import KeySigner
from integrity.trust.methods.sigstore import KeylessSigner
from integrity.trust.policy import TrustPolicy, load_policy
from integrity.trust.signing import Signer, atomic_write, generate_key_pair, key_fingerprint, load_public_key

RELEASE_KEY = Path("keys") / "release.key"
RELEASE_PUBLIC_KEY = Path("keys") / "release.pub"
RELEASE_POLICY = "release-policy.yaml"


# -- the release identity ----------------------------------------------------------------------------------


def ensure_release_identity(home: Path, models: Sequence[str]) -> Path:
    """Create the release key pair (once) and a release policy that lets it sign ``models``; returns the policy."""
    private, public = home / RELEASE_KEY, home / RELEASE_PUBLIC_KEY
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        generate_key_pair(private, public)
    signer = {"key": {"fingerprint": key_fingerprint(load_public_key(public)), "public_key": str(public)}}
    path = home / RELEASE_POLICY
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = parse_yaml(path.read_bytes(), artifact=path) or {}
        except CairnError:
            existing = {}
    sources = dict(existing.get("sources") or {}) if isinstance(existing, dict) else {}
    for model in models:
        sources[model] = {"description": f"who may sign releases of {model}", "signers": [signer]}
    policy = {"version": int(existing.get("version", 1)) if isinstance(existing, dict) else 1,
              "description": "Release policy written by `cairn demo`: who may sign which model's releases.",
              "sources": sources}
    text = yaml.safe_dump(policy, sort_keys=False).encode()
    if not path.exists() or path.read_bytes() != text:
        atomic_write(path, text)
    return path


def release_signer(home: Path) -> Signer:
    """The pipeline's release identity (a key by default; keyless when CAIRN_RELEASE_SIGNING=keyless)."""
    from integrity.settings import current

    settings = current(home=home)
    if settings.release_signing == "keyless":
        return KeylessSigner()
    key = settings.release_key
    if not key.is_file():
        raise UsageError("no release signing key", artifact=key,
                         advice="`cairn init` creates a project's release key (`cairn key generate --out "
                                "HOME/keys/release` creates one anywhere); or set CAIRN_RELEASE_KEY.")
    return KeySigner.from_file(key)


def release_policy_path(home: Path) -> Path:
    from integrity.settings import current

    return current(home=home).release_policy


def load_release_policy(home: Path) -> TrustPolicy:
    path = release_policy_path(home)
    if not path.is_file():
        raise UsageError("no release policy: nothing says who may sign this model's releases", artifact=path,
                         advice=f"Create it with `cairn policy add {path} MODEL --key PUBLIC_KEY` (the release key "
                                f"is {home / RELEASE_PUBLIC_KEY} after `cairn init`), or set $CAIRN_RELEASE_POLICY.")
    return load_policy(path)


def load_revocations(ingestion: Ingestion, release_policy: TrustPolicy, model: str) -> RevocationList:
    """The store's signed revocations, with the model's release signers as the authority."""
    return RevocationList.load(ingestion.store, release_policy.source(model).signers)


# -- the steps ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseResult:
    path: Path
    version: str
    report: BundleReport
    lineage: Mapping[str, Any]
    provenance: Mapping[str, Any]
    bom: Mapping[str, Any]
    context: ReleaseContext


class ReleaseWork:
    """One model's release steps over a Cairn home: train, evaluate, release."""

    def __init__(self, ingestion: Ingestion, spec: ReleaseSpec, *, log: Callable[[str], None] | None = None) -> None:
        self.ingestion = ingestion
        self.spec = spec
        self.home = ingestion.home
        self.log = log or (lambda message: None)

    @property
    def work_dir(self) -> Path:
        return self.home / "work" / "releases" / self.spec.model

    @property
    def releases_dir(self) -> Path:
        from integrity.settings import current

        return current(home=self.home).releases

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.work_dir / "state.json").read_text(encoding="utf-8"))
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"unreadable release state: {exc}", artifact=self.work_dir / "state.json") from exc

    def _save(self, **changes: Any) -> None:
        state = {**self._state(), **changes}
        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.work_dir / "state.json", json.dumps(state, indent=2, sort_keys=True).encode())

    def release_policy(self) -> TrustPolicy:
        return load_release_policy(self.home)

    def revocations(self) -> RevocationList:
        return load_revocations(self.ingestion, self.release_policy(), self.spec.model)

    def inputs(self) -> list[AttestedInput]:
        """Resolve every input again, with its records and the current revocation list."""
        return resolve_inputs(self.ingestion, self.spec, self.revocations())

    def train(self, run_id: str | None = None) -> TrainingRun:
        run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        run = recipes.train(self.spec, self.inputs(), self.work_dir, run_id=run_id, store=self.ingestion.store,
                            log=self.log)
        # Paths are kept relative to the work folder, so a home can be moved or copied.
        self._save(training_run=run.run_id, training_record=run.record_key, evaluation=None)
        return run

    def current_run(self) -> TrainingRun:
        folder = self._state().get("training_run")
        if not folder:
            raise UsageError(f"no training run for {self.spec.model}; run the fine-tuning step first")
        run = load_training_run(self.work_dir / folder, self.inputs())
        key = self._state().get("training_record")
        return TrainingRun(run.run_id, run.model_dir, run.model_digest, run.files, run.record, run.record_path,
                           key, run.inputs)

    def triggers(self) -> list[Trigger]:
        base = self.spec.path.parent if self.spec.path else None
        return load_triggers(self.spec.gate.triggers, base=base)

    def evaluate(self, extra_triggers: Sequence[Trigger] = ()) -> GateResult:
        run = self.current_run()
        reversed_by_scans = scan_triggers(run, self.ingestion.store, self.ingestion.home)
        result = recipes.evaluate(run, self.spec.gate, triggers=[*self.triggers(), *reversed_by_scans, *extra_triggers],
                          store=self.ingestion.store, log=self.log)
        self._save(evaluation=str(Path(str(result.record_path)).relative_to(self.work_dir)))
        return result

    def current_gate(self) -> GateResult:
        path = self._state().get("evaluation")
        if not path:
            raise UsageError(f"no evaluation for {self.spec.model}; run the release gate first")
        return load_gate_result(self.work_dir / path)

    def release(self, *, invocation_id: str | None = None, assets: Mapping[str, Sequence[str]] | None = None,
                started: datetime | None = None) -> ReleaseResult:
        """Write, sign and re-verify the release bundle; refuses a model that did not pass the gate."""
        run = self.current_run()
        gate = self.current_gate()
        if gate.model_digest != run.model_digest:
            raise ReleaseGateError("the evaluation is of another model than the current training run",
                                   artifact=gate.record_path)
        if not gate.passed:
            raise ReleaseGateError(f"not released: {gate.reason}", artifact=f"{self.spec.model}")
        read_model(run)  # the model still is what training wrote
        policy = self.release_policy()
        signer = release_signer(self.home)
        sequence = next_sequence(self.releases_dir, self.spec.model)
        version = self.spec.version_for(sequence)
        context = ReleaseContext(
            spec=self.spec, version=version, run=run, gate=gate, signer=signer.describe(),
            catalog=self.ingestion.catalog.describe(), release_policy_digest=policy.digest,
            invocation_id=invocation_id or run.run_id,
            started=started or datetime.fromisoformat(str(run.predicate.get("startedOn"))),
            assets=assets or {},
        )
        provenance, bom, lineage = build_provenance(context), build_bom(context), build_lineage(context)
        validate_bom(bom)
        path = write_bundle(
            self.releases_dir, model=self.spec.model, version=version, model_dir=run.model_dir,
            provenance=provenance, bom=bom, lineage=lineage, lineage_svg=render_svg(lineage), signer=signer,
            inputs=[i.entry() for i in run.inputs], policy_digest=policy.digest,
            catalog_digest=str(self.ingestion.catalog.describe().get("digest", "")),
            gates={"release_gate": gate.as_gate()}, sequence=sequence,
            build={"invocation_id": context.invocation_id, "training_run": run.run_id,
                   "training_record": run.record_key, "evaluation_record": gate.record_key,
                   "release_spec": self.spec.digest, "code": run.predicate.get("code")},
        )
        report = verify_bundle(path, policy, self.spec.model, revocations=self.revocations())
        self._save(release=str(path), version=version)
        self.log(f"released {self.spec.model} {version} at {path}")
        return ReleaseResult(path, version, report, lineage, provenance, bom, context)


def release_model(ingestion: Ingestion, spec: ReleaseSpec, *, log: Callable[[str], None] | None = None
                  ) -> tuple[GateResult, ReleaseResult | None]:
    """Train, gate and (when the gate passes) release; returns the gate result and the release, if any."""
    work = ReleaseWork(ingestion, spec, log=log)
    started = datetime.now(UTC)
    clock = time.monotonic()
    work.train()
    gate = work.evaluate()
    if not gate.passed:
        return gate, None
    result = work.release(started=started)
    (log or (lambda m: None))(f"release done in {time.monotonic() - clock:.1f} s")
    return gate, result
