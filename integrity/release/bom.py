"""The ML-BOM of a release (CycloneDX 1.6), checked against the schema it ships."""

import re
import uuid
from collections.abc import Mapping
from typing import Any

from integrity import __version__
from integrity.errors import VerificationError
from integrity.release.inputs import AttestedInput
from integrity.release.provenance import ReleaseContext


class BomValidationError(VerificationError):
    """The ML-BOM does not conform to the CycloneDX 1.6 schema; the release is not written."""

    kind = "bom-invalid"
    advice = "This is a bug in the BOM builder; the release was not written."


_SPDX_IDS: frozenset[str] | None = None


def _spdx_ids() -> frozenset[str]:
    global _SPDX_IDS
    if _SPDX_IDS is None:
        try:
            import json
            from importlib import resources

            schema = resources.files("cyclonedx.schema._res").joinpath("spdx.SNAPSHOT.schema.json")
            _SPDX_IDS = frozenset(json.loads(schema.read_text(encoding="utf-8"))["enum"])
        except (ImportError, OSError, KeyError, ValueError):
            _SPDX_IDS = frozenset({"Apache-2.0", "MIT", "CC-BY-4.0", "BSD-3-Clause"})
    return _SPDX_IDS


def _license(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    if text in _spdx_ids():
        return [{"license": {"id": text}}]
    return [{"license": {"name": text}}]


def _url(text: str | None) -> str | None:
    match = re.search(r"https?://\S+", text or "")
    return match.group(0).rstrip(").,") if match else None


def _component(item: AttestedInput) -> dict[str, Any]:
    kind = "machine-learning-model" if item.kind == "model" else "data"
    component: dict[str, Any] = {
        "type": kind,
        "bom-ref": f"{item.ref.role}:{item.name}",
        "name": item.source,
        "hashes": [{"alg": "SHA-256", "content": item.verified_digest}],
        "licenses": _license(item.license),
        "supplier": {"name": item.policy_source},
        "properties": [
            {"name": "cairn:role", "value": item.ref.role},
            {"name": "cairn:input", "value": item.ref.ref},
            {"name": "cairn:origin", "value": item.origin or "unknown"},
            {"name": "cairn:verification-record", "value": str(item.records.get("verification"))},
            {"name": "cairn:validation-record", "value": str(item.records.get("validation"))},
            {"name": "cairn:signer", "value": ", ".join(f"{k}={v}" for k, v in sorted(item.signer.items())
                                                       if k != "signed_at")},
            {"name": "cairn:trust-policy-digest", "value": str(item.policy.get("digest"))},
        ],
    }
    url = _url(item.origin)
    if url:
        component["externalReferences"] = [{"type": "distribution", "url": url, "comment": item.origin or ""}]
    if item.digest != item.verified_digest:
        component["properties"].append({"name": "cairn:used-digest", "value": f"sha256:{item.digest}"})
    if item.conversions:
        component["properties"].append({"name": "cairn:conversion", "value": "pickle checkpoint converted to "
                                         "safetensors by the model gate"})
    for scan in item.records.get("scans") or []:
        component["properties"].append({"name": "cairn:scan-record", "value": str(scan)})
    if kind == "data":
        component["data"] = [{
            "type": "dataset",
            "name": item.source,
            "contents": {"properties": [{"name": f"file:{name}", "value": f"sha256:{digest}"}
                                        for name, digest in sorted(item.expected_files.items())]},
            "governance": {"owners": [{"organization": {"name": item.policy_source}}]},
        }]
    return component


def build_bom(context: ReleaseContext) -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM: the released model with its model card, the base model and the datasets."""
    spec, predicate, gate = context.spec, context.run.predicate, context.gate
    components = [_component(item) for item in context.inputs]
    hyper = predicate.get("hyperparameters") or {}
    model = {
        "type": "machine-learning-model",
        "bom-ref": "released-model",
        "name": spec.model,
        "version": context.version,
        "description": spec.description or None,
        "hashes": [{"alg": "SHA-256", "content": context.run.files.get("model.safetensors", "")}],
        "licenses": _license(spec.license),
        "properties": [
            {"name": "cairn:model-digest", "value": f"sha256:{context.model_digest}"},
            {"name": "cairn:config-sha256", "value": context.run.files.get("config.json", "")},
            *({"name": f"cairn:hyperparameter:{k}", "value": str(v)} for k, v in sorted(hyper.items())),
            {"name": "cairn:training-run", "value": context.run.run_id},
            {"name": "cairn:device", "value": str((predicate.get("device") or {}).get("type"))},
        ],
        "modelCard": {
            "modelParameters": {
                "approach": {"type": "supervised"},
                "task": "classification",
                "architectureFamily": spec.architecture.split("-")[0],
                "modelArchitecture": spec.architecture,
                "datasets": [{"ref": f"training-data:{d.name}"} for d in context.inputs
                             if d.ref.role == "training-data"],
                "inputs": [{"format": "image"}],
                "outputs": [{"format": "class label"}],
            },
            "quantitativeAnalysis": {"performanceMetrics": [
                {"type": "accuracy", "value": f"{gate.clean_accuracy:.4f}", "slice": f"held-out ({gate.holdout})"},
                *({"type": "accuracy", "value": f"{v:.4f}", "slice": f"FGSM eps={k}"} for k, v in gate.fgsm.items()),
                *({"type": "accuracy", "value": f"{v:.4f}", "slice": f"PGD eps={k}"} for k, v in gate.pgd.items()),
                *({"type": "attack success rate", "value": f"{v:.4f}", "slice": f"trigger {k}"}
                  for k, v in gate.attack_success.items()),
            ]},
            "considerations": {
                **({"useCases": [spec.card.intended_use]} if spec.card.intended_use else {}),
                "technicalLimitations": list(spec.card.limitations) or [
                    "The release spec states no limitations (card.limitations)."]},
        },
    }
    if model["description"] is None:
        del model["description"]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": context.finished.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "tools": {"components": [{"type": "application", "name": "cairn", "version": __version__}]},
            "component": model,
            "properties": [{"name": "cairn:release-spec-digest", "value": spec.digest},
                           {"name": "cairn:catalog-digest", "value": str(context.catalog.get("digest"))}],
        },
        "components": components,
        "dependencies": [
            {"ref": "released-model", "dependsOn": [c["bom-ref"] for c in components]},
            *({"ref": c["bom-ref"], "dependsOn": []} for c in components),
        ],
    }


def validate_bom(bom: Mapping[str, Any]) -> str:
    """Validate against the CycloneDX 1.6 JSON schema (offline); raises :class:`BomValidationError`."""
    import json

    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BomValidationError(f"cannot validate the BOM: {exc}", artifact="bom.cdx.json") from exc
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom), all_errors=True)
    found = list(errors) if errors is not None and not isinstance(errors, Exception) else (
        [errors] if errors is not None else [])
    if found:
        raise BomValidationError("; ".join(str(e)[:300] for e in found[:5]), artifact="bom.cdx.json")
    check_bom_complete(bom)
    return "valid CycloneDX 1.6 (JSON schema); every component has a SHA-256 hash and a license"


def check_bom_complete(bom: Mapping[str, Any]) -> None:
    """Fail the release when any component lacks a SHA-256 hash or a license (OWASP AISVS 6.5.3)."""
    metadata = bom.get("metadata") or {}
    components = [metadata.get("component") or {}, *(bom.get("components") or [])]
    missing = []
    for component in components:
        name = str(component.get("bom-ref") or component.get("name") or "?")
        hashes = [h for h in component.get("hashes") or [] if h.get("alg") == "SHA-256" and h.get("content")]
        if not hashes:
            missing.append(f"{name}: no SHA-256 hash")
        if not component.get("licenses"):
            missing.append(f"{name}: no license")
    if missing:
        raise BomValidationError("incomplete ML-BOM: " + "; ".join(missing) + " (give every input a license in the "
                                 "catalog and the model one in the release spec)", artifact="bom.cdx.json")
