"""What a release says about itself: SLSA v1 provenance, a CycloneDX 1.6 ML-BOM and the lineage graph.

All three are built from the same :class:`ReleaseContext` (the spec, the attested inputs with
their records, the training and evaluation records, the signer), so they name the same digests:

* :func:`build_provenance`: an in-toto statement with a SLSA v1 build provenance predicate;
  ``resolvedDependencies`` lists every input artifact with its digest (the publisher-signed bytes
  and, for converted models, the bytes training read), plus the code commit.
* :func:`build_bom`: a CycloneDX 1.6 BOM with the model (and its model card), the base model and
  the datasets as components, their hashes, licenses and origin; :func:`validate_bom` checks it
  against the 1.6 JSON schema shipped with cyclonedx-python-lib (offline).
* :func:`build_lineage`: nodes (sources, verifications, validations, scans, conversions,
  attestations, the training run, the evaluation, the release) and ``derived-from`` edges, each
  node carrying its digest, its record in the store and the Dagster asset (key and data version)
  that materialized it; :func:`render_svg` draws it (pure Python), :func:`lineage_markdown`
  tabulates it for the Dagster UI.
"""

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from integrity.release.evaluation import GateResult
from integrity.release.inputs import AttestedInput
from integrity.release.spec import ReleaseSpec
from integrity.release.training import TrainingRun
from integrity.trust.statements import statement

SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://cairn.dev/buildtypes/attested-fine-tune/v1"
BUILDER_ID = "https://cairn.dev/builders/dagster-pipeline/v1"
LINEAGE_SCHEMA = "https://cairn.dev/lineage/v1"


@dataclass(frozen=True)
class ReleaseContext:
    """Everything the release documents are built from."""

    spec: ReleaseSpec
    version: str
    run: TrainingRun
    gate: GateResult
    signer: Mapping[str, str]
    catalog: Mapping[str, Any]
    release_policy_digest: str
    invocation_id: str
    started: datetime
    finished: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Dagster asset keys of the release steps ("fine_tuned", "evaluated", "released"): path lists.
    assets: Mapping[str, Sequence[str]] = field(default_factory=dict)
    builder_id: str = BUILDER_ID

    @property
    def inputs(self) -> tuple[AttestedInput, ...]:
        return self.run.inputs

    @property
    def model_digest(self) -> str:
        return self.run.model_digest

    def trust_policies(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for item in self.inputs:
            digest = item.policy.get("digest")
            if isinstance(digest, str):
                seen.setdefault(digest, {"digest": digest, "version": item.policy.get("version")})
        return list(seen.values())


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


# -- SLSA provenance -----------------------------------------------------------------------------------------


def resolved_dependencies(context: ReleaseContext) -> list[dict[str, Any]]:
    """Every input artifact with its digest, as SLSA ResourceDescriptors."""
    dependencies: list[dict[str, Any]] = []
    for item in context.inputs:
        annotations = {
            "kind": item.kind, "role": item.ref.role, "source": item.policy_source,
            "verificationRecord": item.records.get("verification"), "validationRecord": item.records.get("validation"),
            "ingestionRecord": item.records.get("ingestion"), "signer": dict(item.signer),
            "trustPolicy": dict(item.policy), "license": item.license, "origin": item.origin,
        }
        dependencies.append({"name": item.name, "uri": f"cairn:source/{item.source}",
                             "digest": {"sha256": item.verified_digest}, "annotations": annotations})
        if item.records.get("screening"):
            dependencies.append({
                "name": f"{item.name} (filtered by the poisoning screen; used for training)",
                "uri": f"cairn:source/{item.source}#screened", "digest": {"sha256": item.digest},
                "annotations": {"derivedFrom": f"sha256:{item.records.get('attested_digest') or item.verified_digest}",
                                "screeningRecord": item.records.get("screening"),
                                "files": dict(item.expected_files)}})
        elif item.digest != item.verified_digest:
            dependencies.append({
                "name": f"{item.name} (safetensors conversion used for training)",
                "uri": f"cairn:source/{item.source}#converted", "digest": {"sha256": item.digest},
                "annotations": {"derivedFrom": f"sha256:{item.verified_digest}",
                                "conversionRecords": list(item.records.get("conversions") or []),
                                "scanRecords": list(item.records.get("scans") or []),
                                "files": dict(item.expected_files)}})
    code = context.run.predicate.get("code") or {}
    if code.get("commit") and code["commit"] != "unknown":
        dependencies.append({"name": "cairn source", "uri": f"git+file://{code.get('repository')}",
                             "digest": {"gitCommit": code["commit"]}, "annotations": {"dirty": code.get("dirty")}})
    return dependencies


def build_provenance(context: ReleaseContext) -> dict[str, Any]:
    """A SLSA v1 provenance statement (its ``subject`` is filled with the model files by ``write_bundle``)."""
    predicate = context.run.predicate
    spec = context.spec
    return statement([{"name": f"model/{name}", "digest": {"sha256": digest}}
                    for name, digest in sorted(context.run.files.items())], SLSA_PROVENANCE_V1, {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "model": spec.model,
                    "version": context.version,
                    "releaseSpec": {"path": str(spec.path) if spec.path else None, "digest": spec.digest,
                                    "overrides": spec.overrides},
                    "catalog": dict(context.catalog),
                    "trustPolicies": context.trust_policies(),
                    "releasePolicy": {"digest": context.release_policy_digest},
                    "inputs": [i.ref.ref for i in context.inputs],
                },
                "internalParameters": {
                    "hyperparameters": predicate.get("hyperparameters"),
                    "seeds": predicate.get("seeds"),
                    "gatePolicy": spec.gate.as_dict(),
                    "device": predicate.get("device"),
                    "libraries": predicate.get("libraries"),
                },
                "resolvedDependencies": resolved_dependencies(context),
            },
            "runDetails": {
                "builder": {"id": context.builder_id,
                            "version": {k: v for k, v in (predicate.get("libraries") or {}).items()
                                        if k in ("cairn", "dagster", "torch")}},
                "metadata": {"invocationId": context.invocation_id, "startedOn": context.started.isoformat(),
                             "finishedOn": context.finished.isoformat()},
                "byproducts": [
                    {"name": "training-record", "uri": context.run.record_key or str(context.run.record_path),
                     "annotations": {"runId": context.run.run_id, "result": predicate.get("result")}},
                    {"name": "release-gate", "uri": context.gate.record_key or str(context.gate.record_path),
                     "annotations": context.gate.as_gate()},
                    {"name": "signer", "annotations": dict(context.signer)},
                ],
            },
        })


# -- CycloneDX ML-BOM ----------------------------------------------------------------------------------------


# -- lineage ------------------------------------------------------------------------------------------------


def _node(node_id: str, kind: str, label: str, *, digest: str | None = None, record: str | None = None,
          asset: Sequence[str] | None = None, data_version: str | None = None, **details: Any) -> dict[str, Any]:
    return {"id": node_id, "kind": kind, "label": label,
            "digest": f"sha256:{_hex(digest)}" if digest else None, "record": record,
            "asset": {"key": list(asset), "data_version": data_version} if asset else None,
            "details": {k: v for k, v in details.items() if v is not None}}


def build_lineage(context: ReleaseContext) -> dict[str, Any]:
    """The release's lineage: every node from the publishers' drops to the signed release."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []

    def edge(child: str, parent: str) -> None:
        edges.append({"from": child, "to": parent, "type": "derived-from"})

    training_id = f"training:{context.run.run_id}"
    for item in context.inputs:
        key = item.asset_key[0]
        version = f"sha256:{item.verified_digest}"
        source_id = f"source:{item.source}"
        nodes.append(_node(source_id, "source", item.source, license=item.license, origin=item.origin,
                           publisher=item.policy_source))
        verification_id = f"verification:{item.source}"
        nodes.append(_node(verification_id, "verification", f"{item.source} verified", digest=item.verified_digest,
                           record=item.records.get("verification"), asset=(key, "verified"), data_version=version,
                           signer=dict(item.signer), policy=dict(item.policy)))
        edge(verification_id, source_id)
        validation_id = f"validation:{item.source}"
        nodes.append(_node(validation_id, "validation", f"{item.source} validated", digest=item.verified_digest,
                           record=item.records.get("validation"), asset=(key, "validated"), data_version=version,
                           gate="model-file gate" if item.kind == "model" else "expectation suite"))
        edge(validation_id, verification_id)
        previous = validation_id
        for index, conversion in enumerate(item.conversions):
            conversion_id = f"conversion:{item.source}:{index}"
            nodes.append(_node(conversion_id, "conversion", f"{conversion.get('to')}",
                               digest=str(conversion.get("to_sha256")), record=conversion.get("record"),
                               converted_from=f"{conversion.get('from')} sha256:{conversion.get('from_sha256')}"))
            edge(conversion_id, previous)
            previous = conversion_id
        attested_id = f"attestation:{item.source}"
        attested_digest = str(item.records.get("attested_digest") or item.digest)  # before any screening
        nodes.append(_node(attested_id, "attestation", f"{item.source} attested", digest=attested_digest,
                           record=item.records.get("ingestion"), asset=(key, "attested"), data_version=version,
                           verified_digest=f"sha256:{item.verified_digest}"))
        edge(attested_id, previous)
        previous = attested_id
        # Poisoning screen / backdoor scan: after attestation, on the attested bytes; a screened
        # dataset's node carries the filtered copy's digest, which is what training read.
        for index, scan in enumerate(item.records.get("scans") or []):
            scan_id = f"scan:{item.source}:{index}"
            stage = item.asset_key[1] if len(item.asset_key) > 1 else "scanned"
            label = "screened for poisoning" if stage == "screened" else "scanned for a backdoor"
            nodes.append(_node(scan_id, "scan", f"{item.source} {label}", digest=item.digest, record=str(scan),
                               asset=(key, stage), data_version=f"sha256:{item.digest}"))
            edge(scan_id, previous)
            previous = scan_id
        edge(training_id, previous)
    model_version = f"sha256:{context.model_digest}"
    predicate = context.run.predicate
    nodes.append(_node(training_id, "training", f"fine-tune {context.run.run_id}", digest=context.model_digest,
                       record=context.run.record_key, asset=context.assets.get("fine_tuned"),
                       data_version=model_version, device=(predicate.get("device") or {}).get("type"),
                       steps=(predicate.get("result") or {}).get("steps"),
                       commit=(predicate.get("code") or {}).get("commit")))
    evaluation_id = f"evaluation:{context.run.run_id}"
    nodes.append(_node(evaluation_id, "evaluation", "release gate " + ("passed" if context.gate.passed else "FAILED"),
                       digest=context.model_digest, record=context.gate.record_key,
                       asset=context.assets.get("evaluated"), data_version=model_version,
                       clean_accuracy=round(context.gate.clean_accuracy, 4)))
    edge(evaluation_id, training_id)
    release_id = f"release:{context.spec.model}@{context.version}"
    nodes.append(_node(release_id, "release", f"{context.spec.model} {context.version}", digest=context.model_digest,
                       asset=context.assets.get("released"), data_version=model_version,
                       signer=dict(context.signer)))
    edge(release_id, evaluation_id)
    edge(release_id, training_id)
    return {"schema": LINEAGE_SCHEMA, "release": {"model": context.spec.model, "version": context.version,
                                                  "model_digest": model_version},
            "nodes": nodes, "edges": edges}


def _parents(lineage: Mapping[str, Any]) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {n["id"]: [] for n in lineage.get("nodes") or []}
    for e in lineage.get("edges") or []:
        parents.setdefault(e["from"], []).append(e["to"])
    return parents


def _layers(lineage: Mapping[str, Any]) -> dict[str, int]:
    """Column of each node, counted back from the release, so every input's chain ends beside training."""
    parents = _parents(lineage)
    children: dict[str, list[str]] = {node: [] for node in parents}
    for child, ps in parents.items():
        for parent in ps:
            children.setdefault(parent, []).append(child)
    height: dict[str, int] = {}

    def visit(node: str, trail: frozenset[str]) -> int:
        if node in height:
            return height[node]
        if node in trail:
            raise ValueError(f"the lineage graph has a cycle through {node}")
        value = 1 + max((visit(c, trail | {node}) for c in children.get(node, [])), default=-1)
        height[node] = value
        return value

    for node in children:
        visit(node, frozenset())
    top = max(height.values(), default=0)
    return {node: top - value for node, value in height.items()}


_COLORS = {"source": "#e8eef7", "verification": "#dff0d8", "validation": "#e6f4ea", "scan": "#fff4d6",
           "conversion": "#f3e8fd", "attestation": "#d9f2ef", "training": "#fde2cf", "evaluation": "#fce8e6",
           "release": "#d2e3fc"}


def render_svg(lineage: Mapping[str, Any]) -> bytes:
    """Draw the lineage left to right (sources first, the release last) as a standalone SVG."""
    nodes = {n["id"]: n for n in lineage.get("nodes") or []}
    layers = _layers(lineage)
    columns: dict[int, list[str]] = {}
    for node_id in nodes:  # insertion order keeps each input's chain on its own row
        columns.setdefault(layers[node_id], []).append(node_id)
    width, height, gap_x, gap_y, margin = 210, 62, 46, 22, 20
    rows = max((len(c) for c in columns.values()), default=1)
    total_w = margin * 2 + len(columns) * width + (len(columns) - 1) * gap_x
    total_h = margin * 2 + rows * height + (rows - 1) * gap_y + 44
    position: dict[str, tuple[int, int]] = {}
    for column, members in sorted(columns.items()):
        offset = (rows - len(members)) * (height + gap_y) // 2
        for row, node_id in enumerate(members):
            position[node_id] = (margin + column * (width + gap_x), margin + 44 + offset + row * (height + gap_y))
    esc = html.escape
    title = lineage.get("release") or {}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#5f6368"/></marker></defs>',
        f'<rect width="{total_w}" height="{total_h}" fill="#ffffff"/>',
        f'<text x="{margin}" y="{margin + 6}" font-size="13" font-weight="bold">Lineage of '
        f'{esc(str(title.get("model", "")))} {esc(str(title.get("version", "")))} '
        f'({esc(str(title.get("model_digest", ""))[:23])}…); arrows point from a node to what it derives from</text>',
    ]
    for e in lineage.get("edges") or []:
        if e["from"] not in position or e["to"] not in position:
            continue
        (cx, cy), (px, py) = position[e["from"]], position[e["to"]]
        if cx - px > width + gap_x and cy == py:  # skips a column on the same row: arc above the boxes
            x1, x2, y1, y2 = cx + width / 2, px + width / 2, float(cy), float(py)
            lift = min(y1, y2) - 18
            curve = f"M {x1:.0f} {y1:.0f} C {x1:.0f} {lift:.0f}, {x2:.0f} {lift:.0f}, {x2:.0f} {y2:.0f}"
        else:
            x1, y1, x2, y2 = cx, cy + height / 2, px + width, py + height / 2
            curve = (f"M {x1:.0f} {y1:.0f} C {(x1 + x2) / 2:.0f} {y1:.0f}, {(x1 + x2) / 2:.0f} {y2:.0f}, "
                     f"{x2:.0f} {y2:.0f}")
        parts.append(f'<path d="{curve}" fill="none" stroke="#5f6368" stroke-width="1.2" marker-end="url(#arrow)">'
                     f'<title>{esc(e["from"])} derived-from {esc(e["to"])}</title></path>')
    for node_id, node in nodes.items():
        x, y = position[node_id]
        kind = str(node.get("kind"))
        digest = str(node.get("digest") or "")
        tooltip = "\n".join(filter(None, [node_id, digest, str(node.get("record") or "")]))
        parts.append(f'<g><title>{esc(tooltip)}</title>'
                     f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="8" '
                     f'fill="{_COLORS.get(kind, "#f1f3f4")}" stroke="#5f6368"/>'
                     f'<text x="{x + 10}" y="{y + 17}" font-weight="bold">{esc(kind)}</text>'
                     f'<text x="{x + 10}" y="{y + 34}">{esc(_short(str(node.get("label") or node_id), 32))}</text>'
                     f'<text x="{x + 10}" y="{y + 51}" fill="#5f6368" font-family="DejaVu Sans Mono, monospace" '
                     f'font-size="10">{esc(digest[:26] + "…" if digest else "")}</text></g>')
    parts.append("</svg>\n")
    return "\n".join(parts).encode()


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lineage_markdown(lineage: Mapping[str, Any]) -> str:
    """The lineage as a markdown table (what the Dagster UI shows on the release asset)."""
    parents = _parents(lineage)
    rows = ["| node | kind | digest | record | Dagster asset | derived from |", "|---|---|---|---|---|---|"]
    for node in lineage.get("nodes") or []:
        asset = node.get("asset") or {}
        key = "/".join(asset.get("key") or []) or "-"
        digest = str(node.get("digest") or "-")
        rows.append("| " + " | ".join(str(cell).replace("|", "/") for cell in (
            node["id"], node.get("kind"), f"`{digest[:23]}…`" if digest != "-" else "-",
            node.get("record") or "-", key, ", ".join(parents.get(node["id"], [])) or "-")) + " |")
    return "\n".join(rows)


def lineage_tree(lineage: Mapping[str, Any]) -> list[str]:
    """The lineage as an indented tree from the release back to the sources (``cairn audit``)."""
    nodes = {n["id"]: n for n in lineage.get("nodes") or []}
    parents = _parents(lineage)
    children = {p for ps in parents.values() for p in ps}
    roots = [n for n in nodes if n not in children] or list(nodes)[-1:]
    lines: list[str] = []
    shown: set[str] = set()

    def walk(node_id: str, prefix: str, last: bool, depth: int) -> None:
        node = nodes.get(node_id, {"kind": "?", "digest": None})
        connector = "" if depth == 0 else ("└── " if last else "├── ")
        digest = str(node.get("digest") or "")
        repeat = node_id in shown and parents.get(node_id)
        lines.append(f"{prefix}{connector}{node_id} [{node.get('kind')}]"
                     + (f" {digest[:23]}…" if digest else "") + (" (see above)" if repeat else ""))
        if repeat:
            return
        shown.add(node_id)
        below = parents.get(node_id, [])
        for index, parent in enumerate(below):
            extension = "" if depth == 0 else ("    " if last else "│   ")
            walk(parent, prefix + extension, index == len(below) - 1, depth + 1)

    for root in roots:
        walk(root, "", True, 0)
    return lines
