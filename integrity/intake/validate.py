"""Validation steps of ingestion: a dataset against its expectation suite, model weights through the
model-file gate (with conversion of allowlisted checkpoints to safetensors)."""

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integrity.intake.catalog import Source
from integrity.storage.base import record_name

if TYPE_CHECKING:
    from integrity.intake.ingest import Ingestion

def _record_name(source: Source, step: str) -> str:
    return record_name(source.key, step)


def baseline(ingestion: "Ingestion", source: Source) -> tuple[Path | None, str]:
    """The version to compare label balance against, and how to name it: pinned in the catalog, else the
    last attested one (none for a first version: the suite's pinned baseline, if any, is used then)."""
    if source.baseline:
        dest = ingestion.work_dir(source) / "baseline"
        shutil.rmtree(dest, ignore_errors=True)
        path = ingestion.store.materialize(source.baseline.removeprefix("sha256:"), dest / "artifact")
        return path, f"the version the catalog pins ({source.baseline})"
    previous = ingestion.attested_dir(source)
    entries = sorted(previous.iterdir()) if previous.is_dir() else []
    if len(entries) != 1:
        return None, "no earlier version"
    return entries[0], f"the previous attested version ({entries[0].name})"


def signature_in_drop(ingestion: "Ingestion", source: Source, artifact: Path) -> str | None:
    """The relative name of the publisher's signature bundle when it lives inside the drop (not a data file)."""
    if not artifact.is_dir():
        return None
    base = ingestion.catalog.resolve(source.uri).rstrip("/") + "/"
    bundle = ingestion.catalog.resolve(source.signature_uri(True))
    return bundle[len(base):] if bundle.startswith(base) else None


def dataset_report(ingestion: "Ingestion", source: Source, artifact: Path) -> dict[str, Any]:
    from integrity.scans.datasets import validate_dataset

    docs = ingestion.home / "data-docs" / source.key
    previous, previous_name = baseline(ingestion, source)
    report = validate_dataset(artifact, format=source.format, suite=source.suite, previous=previous,
                              previous_name=previous_name, phi=source.phi, data_docs_dir=docs,
                              extra_files=source.extra_files, signature=signature_in_drop(ingestion, source, artifact))
    data: dict[str, Any] = report.as_dict()
    if report.data_docs:
        site = Path(report.data_docs).parent
        data["data_docs_index_key"] = publish_data_docs(ingestion, source, site)
        # The page of this validation run reads without the CDN scripts the index needs (Cairn is offline).
        pages = sorted(site.glob("validations/**/*.html"), key=lambda p: p.relative_to(site).as_posix())
        data["data_docs_key"] = (f"{data['data_docs_index_key'].rsplit('/', 1)[0]}/"
                                 f"{pages[-1].relative_to(site).as_posix()}" if pages else data["data_docs_index_key"])
        data["data_docs_store"] = ingestion.store.describe(data["data_docs_key"])
    return data


def publish_data_docs(ingestion: "Ingestion", source: Source, site: Path) -> str:
    """Copy the Data Docs site into the store's reports area (never the trusted area); returns its index's key."""
    prefix = f"reports/data-docs/{source.key}"
    for file in sorted(p for p in site.rglob("*") if p.is_file()):
        key = f"{prefix}/{file.relative_to(site).as_posix()}"
        ingestion.store.write_key(key, file.read_bytes(), overwrite=True)
    return f"{prefix}/index.html"


def model_report(ingestion: "Ingestion", source: Source, artifact: Path) -> dict[str, Any]:
    """Scan the weights; convert allowlisted pickle checkpoints to safetensors for everything downstream."""
    from integrity.scans.modelgate import scan_path
    from integrity.scans.modelgate.convert import convert_to_safetensors, downstream_refusal, needs_conversion

    report = scan_path(artifact)
    data: dict[str, Any] = report.as_dict()
    data["passed"] = report.safe
    data["reason"] = report.reason
    shutil.rmtree(ingestion.converted_dir(source), ignore_errors=True)
    if not report.safe:
        return data
    refusal = downstream_refusal(report)
    if refusal:
        data["passed"], data["reason"] = False, refusal
        return data
    out = ingestion.converted_dir(source) / artifact.name
    files = [artifact] if artifact.is_file() else sorted(p for p in artifact.rglob("*") if p.is_file())
    conversions = []
    for file in files:
        relative = file.name if artifact.is_file() else file.relative_to(artifact).as_posix()
        if relative == "model.sig":
            continue  # the publisher's signature covers the original, not the conversion
        kind = report.formats.get(relative, "")
        target = out / relative if artifact.is_dir() else out
        target.parent.mkdir(parents=True, exist_ok=True)
        if needs_conversion(kind):
            converted = convert_to_safetensors(file, target.with_suffix(".safetensors"))
            key = ingestion.log_key(ingestion.store.put_record("conversions", _record_name(source, "convert"),
                                                  converted.record))
            to_path = str(Path(relative).with_suffix(".safetensors").as_posix())
            conversions.append({"from": relative, "from_sha256": converted.source_digest,
                                "to": target.with_suffix(".safetensors").name, "to_path": to_path,
                                "to_sha256": converted.output_digest, "tensors": converted.tensors,
                                "record": key})
        else:
            shutil.copyfile(file, target)
    data["conversions"] = conversions
    if conversions:
        data["reason"] += f"; converted {len(conversions)} checkpoint(s) to safetensors"
    return data
