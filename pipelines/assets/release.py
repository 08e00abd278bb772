"""Release assets per release spec: fine-tuned -> evaluated (release gate) -> released.

* ``<model>/fine_tuned`` depends on the attested assets of its inputs (so the ingestion gates'
  blocking checks stop it) and trains only on records-backed, re-hashed bytes;
* ``<model>/evaluated`` carries the ``release_gate`` check, ERROR severity and blocking: a model
  below policy stops here, and the check says why;
* ``<model>/released`` writes and signs the bundle and shows the lineage (table and image link),
  the provenance and BOM, the signer identity and each input's verification record.

Each asset's data version is ``sha256:<model manifest root>``; the attested inputs' data
versions are their content digests, so Dagster's lineage names the same bytes as the provenance.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from integrity.errors import CairnError, one_sentence
from integrity.intake.outcomes import headline
from integrity.release.spec import InputRef, ReleaseSpec, ReleaseSpecError, load_release_spec
from integrity.settings import current, package_data
from pipelines.resources import CairnResource, link, report_links

RELEASES_DIR = package_data("releases")
RELEASE_GROUP = "releases"
GATE_CHECK = "release_gate"
#: The released asset's check that the revocation sensor fails when a revocation names the release.
NOT_REVOKED_CHECK = "not_revoked"


def default_release_spec_paths() -> list[Path]:
    """``$CAIRN_RELEASE_SPEC`` (paths separated by ``os.pathsep``), else every spec in integrity/data/releases."""
    return current().release_specs


def model_key(spec: ReleaseSpec) -> str:
    return spec.model.replace("-", "_").replace(".", "_")


def release_asset_key(spec: ReleaseSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([model_key(spec), stage])


def input_asset_key(ref: InputRef) -> dg.AssetKey:
    """The Dagster asset of an input: ``<source>/attested``, or ``<source>/<stage>`` for ``SOURCE/STAGE``."""
    return dg.AssetKey([ref.source.replace("-", "_"), ref.stage])


def _asset_paths(spec: ReleaseSpec) -> dict[str, list[str]]:
    return {stage: list(release_asset_key(spec, stage).path) for stage in ("fine_tuned", "evaluated", "released")}


def _fail(context: Any, error: CairnError) -> dg.Failure:
    """The step fails with one sentence (the reason); the diagnostics go to the log and the metadata."""
    context.log.error(error.diagnostics())
    metadata = {"reason": error.summary(), "kind": error.kind, "error": type(error).__name__}
    if error.advice:
        metadata["what_to_do"] = error.advice
    return dg.Failure(description=one_sentence(error.reason), metadata=metadata, allow_retries=False)


def _record_link(links: Any, store: Any, key: str | None) -> dg.MetadataValue:  # type: ignore[type-arg]
    """A record as a link to the report server (or a presigned URL); the store location as text without one."""
    if not key:
        return dg.MetadataValue.text("-")
    return link(links.record(key), store.describe(key))


def _record_cell(links: Any, store: Any, key: str | None) -> str:
    if not key:
        return "-"
    url = links.record(key)
    return f"[{key.rsplit('/', 1)[-1]}]({url})" if url else f"`{store.describe(key)}`"


def _inputs_table(links: Any, store: Any, inputs: Sequence[Any]) -> str:
    from integrity.release.inputs import signer_summary

    rows = ["| input | role | verified sha256 | used sha256 | signer (policy rule it matched) | verification record |",
            "|---|---|---|---|---|---|"]
    for item in inputs:
        signer = signer_summary(item.signer, item.policy).replace("|", "/")
        rows.append(f"| {item.name} | {item.ref.role} | `{item.verified_digest[:16]}…` | `{item.digest[:16]}…` | "
                    f"{signer} | {_record_cell(links, store, item.records.get('verification'))} |")
    return "\n".join(rows)


def build_release_assets(spec: ReleaseSpec) -> list[dg.AssetsDefinition]:
    """The three release assets for one spec."""
    tags = {"cairn/release": model_key(spec)}
    trained_key, evaluated_key, released_key = (release_asset_key(spec, s) for s in ("fine_tuned", "evaluated",
                                                                                     "released"))

    how = f"fine-tune {spec.base_model.ref}" if spec.base_model else f"train {spec.architecture}"

    @dg.asset(
        key=trained_key,
        deps=[input_asset_key(ref) for ref in spec.inputs],
        group_name=RELEASE_GROUP,
        kinds={"cairn", "pytorch"},
        tags={**tags, "cairn/stage": "fine_tuned"},
        description=f"{spec.model}: {how} on {', '.join(d.ref for d in spec.datasets)}, only from inputs with "
                    "passing verification and validation records, re-hashed at load.",
        metadata={"release_spec": str(spec.path), "release_spec_digest": spec.digest},
    )
    def _fine_tuned(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from integrity.release.steps import ReleaseWork

        ingestion = cairn.ingestion()
        store, links = ingestion.store, report_links(cairn, ingestion.store)
        work = ReleaseWork(ingestion, spec, log=context.log.info)
        try:
            run = work.train(run_id=f"{context.run.run_id[:8]}-{os.urandom(3).hex()}")
        except CairnError as error:
            raise _fail(context, error) from error
        predicate = run.predicate
        return dg.MaterializeResult(
            metadata={
                "model_digest": f"sha256:{run.model_digest}",
                "training_run": run.run_id,
                "training_record": _record_link(links, store, run.record_key),
                "device": str(predicate["device"]),
                "steps": predicate["result"]["steps"],
                "train_accuracy_last_epoch": round(float(predicate["result"]["trainAccuracy"]), 4),
                "seconds": predicate["seconds"],
                "code_commit": str(predicate["code"].get("commit")),
                "inputs": dg.MetadataValue.md(_inputs_table(links, store, run.inputs)),
                "hyperparameters": dg.MetadataValue.json(predicate["hyperparameters"]),
                "seeds": dg.MetadataValue.json(predicate["seeds"]),
                "libraries": dg.MetadataValue.json(predicate["libraries"]),
                "model_dir": dg.MetadataValue.text(str(run.model_dir)),
            },
            data_version=dg.DataVersion(f"sha256:{run.model_digest}"),
        )

    @dg.asset(
        key=evaluated_key,
        deps=[trained_key],
        group_name=RELEASE_GROUP,
        kinds={"cairn", "pytorch"},
        tags={**tags, "cairn/stage": "evaluated"},
        description=f"{spec.model}: the release gate on held-out data: clean accuracy >= "
                    f"{spec.gate.min_clean_accuracy}, trigger attack success <= {spec.gate.max_attack_success}, "
                    f"FGSM/PGD accuracy at eps {list(spec.gate.epsilons)} reported.",
        check_specs=[dg.AssetCheckSpec(
            GATE_CHECK, asset=evaluated_key, blocking=True,
            description="The model meets the release policy; otherwise it is not released.")],
    )
    def _evaluated(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from integrity.release.steps import ReleaseWork

        ingestion = cairn.ingestion()
        work = ReleaseWork(ingestion, spec, log=context.log.info)
        try:
            gate = work.evaluate()
        except CairnError as error:
            raise _fail(context, error) from error
        (context.log.info if gate.passed else context.log.error)(f"release gate: {gate.reason}")
        table = dg.MetadataValue.table(
            records=[dg.TableRecord({"measure": a, "value": b, "policy": c, "verdict": d})
                     for a, b, c, d in gate.rows()],
            schema=dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in
                                           ("measure", "value", "policy", "verdict")]))
        summary = {"passed": gate.passed, "reason": gate.reason, "clean_accuracy": round(gate.clean_accuracy, 4)}
        return dg.MaterializeResult(
            metadata={**summary, "gate": table,
                      "evaluation_record": _record_link(report_links(cairn, ingestion.store), ingestion.store,
                                                        gate.record_key),
                      "model_digest": f"sha256:{gate.model_digest}"},
            check_results=[dg.AssetCheckResult(check_name=GATE_CHECK, passed=gate.passed,
                                               severity=dg.AssetCheckSeverity.ERROR,
                                               description=headline(spec.model, "release", gate.passed, gate.reason),
                                               metadata={**summary, "gate": table})],
            data_version=dg.DataVersion(f"sha256:{gate.model_digest}"),
        )

    @dg.asset(
        key=released_key,
        deps=[evaluated_key],
        group_name=RELEASE_GROUP,
        kinds={"cairn"},
        tags={**tags, "cairn/stage": "released"},
        description=f"{spec.model}: the signed release bundle (model-signing signature, SLSA v1 provenance, "
                    "CycloneDX 1.6 ML-BOM, lineage graph), re-verified after writing.",
        check_specs=[dg.AssetCheckSpec(
            NOT_REVOKED_CHECK, asset=released_key, blocking=False,
            description="No signed revocation names this release, its signer, policy, inputs or files; the "
                        "revocation sensor fails it as soon as one does (pull and audit then refuse it)")],
    )
    def _released(context: dg.AssetExecutionContext, cairn: CairnResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        import json

        from integrity.release.provenance import lineage_markdown
        from integrity.release.steps import ReleaseWork

        ingestion = cairn.ingestion()
        work = ReleaseWork(ingestion, spec, log=context.log.info)
        try:
            result = work.release(invocation_id=context.run.run_id, assets=_asset_paths(spec))
        except CairnError as error:
            raise _fail(context, error) from error
        store, links = ingestion.store, report_links(cairn, ingestion.store)
        signer = result.report.signer
        identity = signer.get("identity") or signer.get("key_fingerprint") or "?"
        signer_text = f"{signer.get('method')} {identity}"
        inputs = result.context.inputs
        metadata: dict[str, Any] = {
            "release": dg.MetadataValue.text(str(result.path)),
            "release_index": link(links.release_file(result.path, "release.json"), str(result.path / "release.json")),
            "version": result.version,
            "model_digest": f"sha256:{result.context.model_digest}",
            "signer_identity": signer_text,
            "signer": dg.MetadataValue.json(dict(signer)),
            "lineage": dg.MetadataValue.md(lineage_markdown(result.lineage)),
            "lineage_image": link(links.release_file(result.path, "lineage.svg"), str(result.path / "lineage.svg")),
            "inputs": dg.MetadataValue.md(_inputs_table(links, store, inputs)),
            "provenance": dg.MetadataValue.json(json.loads((result.path / "provenance.intoto.json").read_text())),
            "bom": dg.MetadataValue.json(json.loads((result.path / "bom.cdx.json").read_text())),
            "gate": dg.MetadataValue.json(dict(result.context.gate.as_gate())),
            "audit": link(links.audit(result.path), f"cairn audit {result.path}"),
            "audit_command": dg.MetadataValue.text(f"cairn audit {result.path}"),
        }
        for item in inputs:
            metadata[f"verification_record/{item.name}"] = _record_link(links, store, item.records.get("verification"))
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(f"sha256:{result.context.model_digest}"),
            check_results=[dg.AssetCheckResult(check_name=NOT_REVOKED_CHECK, passed=True,
                                               description=f"{spec.model}@{result.version} is not revoked "
                                                           "(at release)")])

    return [_fine_tuned, _evaluated, _released]


def build_invalid_spec_asset(path: Path, error: CairnError) -> dg.AssetsDefinition:
    """A release spec that does not parse: one asset that fails with the reason (nothing is trained)."""
    key = dg.AssetKey([path.stem.replace("-", "_").replace(".", "_"), "release_spec"])

    @dg.asset(key=key, group_name=RELEASE_GROUP, kinds={"cairn"},
              description=f"{path}: this release spec is invalid; nothing is trained or released.")
    def _invalid(context: dg.AssetExecutionContext) -> None:
        raise _fail(context, error)

    return _invalid


def load_release_assets(paths: Sequence[Path] | None = None) -> tuple[list[ReleaseSpec], list[dg.AssetsDefinition]]:
    """Specs and their assets; a broken spec becomes a failing asset instead of a broken code location."""
    specs: list[ReleaseSpec] = []
    assets: list[dg.AssetsDefinition] = []
    for path in default_release_spec_paths() if paths is None else paths:
        try:
            spec = load_release_spec(path)
        except ReleaseSpecError as error:
            assets.append(build_invalid_spec_asset(Path(path), error))
            continue
        specs.append(spec)
        assets.extend(build_release_assets(spec))
    return specs, assets


def release_asset_keys(specs: Sequence[ReleaseSpec]) -> list[dg.AssetKey]:
    return [release_asset_key(s, stage) for s in specs for stage in ("fine_tuned", "evaluated", "released")]
