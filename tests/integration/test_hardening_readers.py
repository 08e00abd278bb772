"""Issue 25 through ingestion: a signed image-folder drop with a file the format never reads is refused at
validation unless the catalog's reviewed ``extra_files`` names it; then the validation record lists it."""

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from integrity.trust.methods.key import KeySigner
from integrity.trust.signing import sign_artifact
from tests.support.pki import TestPKI


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _world(tmp_path: Path, pki: TestPKI, extra: str) -> Ingestion:
    home = tmp_path / "home"
    drop = home / "drops" / "shapes"
    for label in ("round", "square"):
        (drop / label).mkdir(parents=True)
        for i in range(4):
            (drop / label / f"{i}.png").write_bytes(_png(40 * i + (label == "square")))
    (drop / "VENDOR-NOTES.md").write_text("how the shapes were drawn\n")
    private, public, fingerprint = pki.key_pair("shapes")
    sign_artifact(drop, KeySigner.from_file(private))  # model.sig inside the drop
    (home / "policy.yaml").write_text(
        f'version: 1\nsources:\n  shapes:\n    signers:\n      - key: {{fingerprint: "{fingerprint}", '
        f'public_key: "{public}"}}\n')
    suite = home / "shapes.json"
    suite.write_text(json.dumps({"name": "shapes", "exact_columns": False, "images": {"range": [0, 255], "channels": [1]},
                                 "columns": {"label": {"type": "str", "values": ["round", "square"]}}}))
    (home / "catalog.yaml").write_text(
        f"version: 1\npolicy: policy.yaml\nsources:\n  shapes:\n    kind: dataset\n    uri: drops/shapes\n"
        f"    format: image-folder\n    license: MIT\n    origin: a shapes vendor\n    suite: {suite}\n{extra}")
    return Ingestion.open(load_catalog(home / "catalog.yaml", root=home), home=home)


def test_an_unread_file_refuses_the_drop_until_extra_files_names_it(tmp_path: Path, pki: TestPKI) -> None:
    ingestion = _world(tmp_path, pki, "")
    source = ingestion.catalog.source("shapes")
    assert ingestion.fetch(source).passed and ingestion.verify(source).passed
    refused = ingestion.validate(source)
    assert not refused.passed and "every_file_read" in refused.reason and "VENDOR-NOTES.md" in refused.reason
    assert "model.sig" not in refused.reason  # the drop's own signature is verified, not data

    ingestion = _world(tmp_path / "reviewed", pki, "    extra_files: [VENDOR-NOTES.md]\n")
    source = ingestion.catalog.source("shapes")
    assert ingestion.fetch(source).passed and ingestion.verify(source).passed
    validated = ingestion.validate(source)
    assert validated.passed, validated.reason
    assert validated.record_key is not None
    kind, name = validated.record_key.strip("/").split("/")[-2:]
    record = ingestion.store.get_record(kind, name.removesuffix(".json"))
    result = record["predicate"]["result"]
    assert result["unread_files"] == ["VENDOR-NOTES.md"] and result["extra_files"] == ["VENDOR-NOTES.md"]
    attested = ingestion.attest(source)
    assert attested.passed, attested.reason
