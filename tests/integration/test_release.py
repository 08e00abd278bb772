"""Attested fine-tuning, the release gate and release documents: bad input is refused with a clear reason.

The bad-input tests each work on a copy of the shared demo home (its attested inputs, records and
training run), so they exercise the real records and bytes the pipeline produced.
"""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from integrity.errors import RevokedError, UsageError
from integrity.intake.catalog import load_catalog
from integrity.intake.ingest import Ingestion
from integrity.intake.screening import screen_dataset
from integrity.release.bundle import ReleaseGateError
from integrity.release.evaluation import Trigger, trigger_success
from integrity.release.inputs import InputChangedError, UnattestedInputError, read_attested, resolve_inputs
from integrity.release.model import load_safetensors, safetensors_bytes
from integrity.release.revocation import revoke
from integrity.release.spec import ReleaseSpecError, load_release_spec, parse_release_spec
from integrity.release.steps import ReleaseWork, load_release_policy, release_signer
from integrity.release.training import fine_tune
from tests.support.release_demo import REPO, ReleaseDemo, tiny_spec

CATALOG = REPO / "integrity" / "data" / "catalogs" / "demo.yaml"




def _work(home: Path, spec: Path, **gate: object) -> ReleaseWork:
    loaded = load_release_spec(spec)
    if gate:
        loaded = loaded.with_overrides(gate=gate)
    ingestion = Ingestion.open(load_catalog(CATALOG, root=home, strict=False), home=home, store=str(home / "store"))
    return ReleaseWork(ingestion, loaded)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_input_bytes_changed_after_attestation_stop_training(home: Path, demo: ReleaseDemo) -> None:
    work = _work(home, demo.spec)
    labels = home / "screened" / "digits" / "digits" / "labels.npy"  # the screened copy training reads
    _flip(labels)
    with pytest.raises(InputChangedError, match=r"labels\.npy") as caught:
        work.train()
    assert caught.value.exit_code == 1 and "attested" in caught.value.reason
    _flip(labels)  # restored
    # The attested copy underneath changed: the poisoning screen refuses to screen (and pass on) it.
    attested_labels = home / "attested" / "digits" / "digits" / "labels.npy"
    _flip(attested_labels)
    try:
        outcome = screen_dataset(home, work.ingestion.store, "digits", model_key="efficientnet_lite0")
        assert not outcome.passed and "changed after attestation" in outcome.reason
    finally:
        _flip(attested_labels)
    with pytest.raises(UnattestedInputError, match=r"the poisoning screen did not pass: .*changed after attestation"):
        work.inputs()  # training refuses what the screen refused
    assert screen_dataset(home, work.ingestion.store, "digits", model_key="efficientnet_lite0").passed
    # A swap between the check (resolve) and the use (read) is caught too: the bytes read are hashed.
    inputs = work.inputs()
    assert read_attested(inputs[1]).digest == inputs[1].digest
    _flip(home / "attested" / "efficientnet_lite0" / "efficientnet-lite0" / "LICENSE.txt")
    with pytest.raises(InputChangedError, match=r"LICENSE\.txt"):
        fine_tune(work.spec, inputs, home / "work" / "swap")
    assert not (home / "work" / "swap").exists() or not any((home / "work" / "swap").iterdir())


def test_missing_verification_record_stops_training(home: Path, demo: ReleaseDemo) -> None:
    summary = json.loads((home / "attested" / "digits.json").read_text())
    (home / "store" / summary["verification"]).unlink()
    with pytest.raises(UnattestedInputError, match="missing verification record") as caught:
        _work(home, demo.spec).train()
    assert caught.value.artifact == "digits"
    assert "Train only on inputs that went through every gate" in caught.value.diagnostics()


def test_dataset_attested_under_a_revoked_policy_version_stops_training(home: Path, demo: ReleaseDemo) -> None:
    # The policy is revised (v2) and digits is attested again under it; then v2 is revoked.
    policy_path = home / "policy.yaml"
    policy = yaml.safe_load(policy_path.read_text())
    policy["version"] = 2
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    ingestion = Ingestion.open(load_catalog(CATALOG, root=home, strict=False), home=home, store=str(home / "store"))
    outcomes = ingestion.run(ingestion.catalog.source("digits"))
    assert all(o.passed for o in outcomes), outcomes[-1].reason
    work = _work(home, demo.spec)
    v2 = work.inputs()[1].policy["digest"]
    assert work.inputs()[0].policy["digest"] != v2  # the base model stays attested under v1
    revoke(ingestion.store, release_signer(home), "policy", v2, "policy v2 approved a compromised signer")
    with pytest.raises(RevokedError, match="compromised signer") as caught:
        work.train()
    assert caught.value.artifact == "digits/screened" and v2 in caught.value.reason


def test_model_failing_the_release_gate_is_not_released(home: Path, demo: ReleaseDemo, tmp_path: Path) -> None:
    mask = np.zeros((8, 8))
    mask[6:, 6:] = 1  # a bright corner patch, as a trigger-reversal scan would report it
    trigger = tmp_path / "corner.json"
    trigger.write_text(json.dumps({"name": "corner-patch", "target": 7, "pattern": mask.tolist(),
                                   "mask": mask.tolist(), "source": "test"}))
    work = _work(home, demo.spec, min_clean_accuracy=1.0, triggers=[str(trigger)])
    gate = work.evaluate()  # the demo's (tiny) training run, against a policy it cannot meet
    assert not gate.passed
    assert "below the policy minimum 1.0" in gate.reason
    assert 0.0 <= gate.attack_success["corner-patch"] <= 1.0  # measured on held-out images not of class 7
    assert ("clean accuracy", f"{gate.clean_accuracy:.4f}", ">= 1.0", "FAIL") in gate.rows()
    with pytest.raises(ReleaseGateError, match="below the policy minimum"):
        work.release()
    assert not (home / "releases").exists()


def test_failed_gate_stops_the_release_in_dagster_with_its_reason(home: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.demo import materialize_releases

    monkeypatch.setenv("CAIRN_HOME", str(home))  # materialize_releases points the code location at the home
    strict = tiny_spec(tmp_path / "strict.yaml", min_clean_accuracy=1.0)
    result = materialize_releases(home, CATALOG, specs=[strict])
    gate = next(e for e in result.get_asset_check_evaluations() if e.check_name == "release_gate")
    assert gate.passed is False and gate.severity.value == "ERROR"
    assert "below the policy minimum 1.0" in (gate.description or "")
    assert result.asset_materializations_for_node("digits_classifier__evaluated")  # measured and shown
    assert not result.asset_materializations_for_node("digits_classifier__released")  # blocked: not released
    assert not (home / "releases").exists()


def test_provenance_edited_after_signing_fails_the_audit(demo: ReleaseDemo, tmp_path: Path, capsys) -> None:
    from integrity.cli import main

    release = tmp_path / demo.release.name
    shutil.copytree(demo.release, release)
    provenance = json.loads((release / "provenance.intoto.json").read_text())
    provenance["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"] = "0" * 64
    (release / "provenance.intoto.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    html = tmp_path / "audit.html"
    assert main(["audit", str(release), "--home", str(demo.home), "--html", str(html)]) == 1
    out = capsys.readouterr()
    assert "AUDIT FAILED" in out.out and "provenance.intoto.json" in out.err
    # The failures come first, marked, before the lineage and the checks that passed.
    text = out.out
    assert text.index("!! ") < text.index("Lineage") and "!!   provenance.intoto.json" in text
    page = html.read_text()
    assert "id='failures'" in page and page.index("id='failures'") < page.index("<h2>Lineage")
    assert "<tr class='fail'><td>FAIL</td><td>provenance.intoto.json</td>" in page
    # Re-signing the edited file with another key does not help: the index pins its digest and signer.
    from integrity.trust.methods.key import KeySigner
    from integrity.trust.signing import generate_key_pair, sign_artifact

    generate_key_pair(tmp_path / "other.key", tmp_path / "other.pub")
    sign_artifact(release / "provenance.intoto.json", KeySigner.from_file(tmp_path / "other.key"))
    assert main(["audit", str(release), "--home", str(demo.home)]) == 1
    assert "provenance.intoto.json" in capsys.readouterr().err


def test_the_release_policy_and_revocations_guard_the_release_step(home: Path, demo: ReleaseDemo) -> None:
    """A revocation recorded after training stops the release step as well (inputs are resolved again)."""
    work = _work(home, demo.spec)
    assert work.current_gate().passed
    digits = work.inputs()[1]
    revoke(work.ingestion.store, release_signer(home), "artifact", f"sha256:{digits.verified_digest}",
           "digits drop found poisoned")
    with pytest.raises(RevokedError, match="poisoned"):
        work.release()
    assert load_release_policy(home).source("digits-classifier")


# -- units ----------------------------------------------------------------------------------------------


def test_release_spec_is_strict(tmp_path: Path) -> None:
    spec = load_release_spec(REPO / "integrity" / "data" / "releases" / "demo.yaml")
    assert spec.version_for(3) == "1.0.3"
    assert [i.ref for i in spec.inputs] == ["efficientnet-lite0/backdoor_scanned", "digits/screened"]
    assert parse_release_spec(b"version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d/screened]\n"
                              ).datasets[0].stage == "screened"
    for bad, why in [
        ("version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d]\nextra: 1\n", "unknown field"),
        ("version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: []\n", "non-empty"),
        ("version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d]\ntraining: {epochs: 0}\n", "positive"),
        ("version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d]\ngate: {epsilons: [2]}\n", "between"),
        ("version: 1\nmodel: m\nrelease: '1'\nbase_model: b\ndatasets: [d]\ntraining: {seed: true}\n", "boolean"),
        ("version: 1\nmodel: M!\nrelease: '1'\nbase_model: b\ndatasets: [d]\n", "lowercase"),
    ]:
        with pytest.raises(ReleaseSpecError, match=why):
            parse_release_spec(bad.encode())


def test_unknown_stage_is_refused_in_the_one_lookup(home: Path, demo: ReleaseDemo, tmp_path: Path) -> None:
    spec = yaml.safe_load(demo.spec.read_text())
    spec["datasets"] = ["digits/augmented"]
    path = tmp_path / "augmented.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UnattestedInputError, match="no 'augmented' stage"):
        _work(home, path).inputs()
    spec["datasets"] = ["digits/backdoor_scanned"]  # a model's stage, named for a dataset
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UnattestedInputError, match="stage of a model"):
        _work(home, path).inputs()


def test_safetensors_round_trip_and_malformed_input() -> None:
    import torch

    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    data = safetensors_bytes(tensors, {"format": "pt"})
    loaded = load_safetensors(data)
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    from integrity.errors import ArtifactReadError

    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    header["a"]["data_offsets"] = [0, 10_000]
    bad = json.dumps(header).encode()
    bad += b" " * (-len(bad) % 8)
    with pytest.raises(ArtifactReadError, match="inconsistent offsets"):
        load_safetensors(len(bad).to_bytes(8, "little") + bad + data[8 + header_len:])
    with pytest.raises(ArtifactReadError, match="out of bounds"):
        load_safetensors((10**12).to_bytes(8, "little") + b"{}")


def test_trigger_attack_success_counts_flips_to_the_target() -> None:
    import torch

    class AlwaysBright(torch.nn.Module):
        """Predicts class 1 when the bottom-right corner is bright, else class 0."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corner = x[:, 0, -2:, -2:].mean(dim=(1, 2))
            return torch.stack([1 - corner, corner], dim=1)

    images = np.zeros((10, 1, 8, 8), dtype=np.float32)  # scaled N x C x H x W
    labels = np.array([0] * 8 + [1] * 2)
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[6:, 6:] = 1
    trigger = Trigger("corner", 1, mask.copy(), mask)
    rate = trigger_success(AlwaysBright(), images, labels, trigger, 8, torch.device("cpu"))
    assert rate == 1.0  # every non-target image flips to the target
    blank = Trigger("none", 1, np.zeros((8, 8), dtype=np.float32), np.zeros((8, 8), dtype=np.float32))
    assert trigger_success(AlwaysBright(), images, labels, blank, 8, torch.device("cpu")) == 0.0
    # colour images, a colour trigger (C x H x W pattern, H x W mask): the mask stamps every channel
    rgb = np.zeros((10, 3, 8, 8), dtype=np.float32)
    colour = Trigger("colour corner", 1, np.stack([mask, mask * 0, mask * 0]), mask)
    assert trigger_success(AlwaysBright(), rgb, labels, colour, 8, torch.device("cpu")) == 1.0


def test_a_trigger_without_a_target_counts_its_worst_class_and_is_resized() -> None:
    """A trigger reversed from an encoder region names no class of this dataset: the class it pushes
    most other images into counts; a reversed trigger of another size is resized, a spec trigger is not."""
    import torch

    class BrightCornerIsTwo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corner = x[:, 0, -2:, -2:].mean(dim=(1, 2))
            return torch.stack([1 - corner, torch.zeros_like(corner), corner], dim=1)

    images = np.zeros((12, 1, 8, 8), dtype=np.float32)
    labels = np.array([0] * 6 + [1] * 3 + [2] * 3)
    small = np.zeros((4, 4), dtype=np.float32)
    small[2:, 2:] = 1  # the bottom-right quarter: after resizing, the model's bright corner
    reversed_trigger = Trigger("reversed", None, small.copy(), small)
    rate = trigger_success(BrightCornerIsTwo(), images, labels, reversed_trigger, 8, torch.device("cpu"))
    assert rate == 1.0  # class 2 gets every image of classes 0 and 1
    named = Trigger("named", 2, small.copy(), small)
    with pytest.raises(UsageError, match="has shape"):
        trigger_success(BrightCornerIsTwo(), images, labels, named, 8, torch.device("cpu"))


def test_the_release_gate_measures_the_trigger_the_model_scan_reversed(demo: ReleaseDemo) -> None:
    release = json.loads((demo.release / "release.json").read_text())
    attack = release["gates"]["release_gate"]["attack_success"]
    reversed_names = [name for name in attack if "reversed" in name]
    assert reversed_names, attack  # the EfficientNet-Lite0 scan's smallest trigger, measured on the fine-tune
    assert all(0.0 <= attack[name] <= 1.0 for name in reversed_names)


def test_a_reversed_trigger_above_policy_stops_the_release(home: Path, demo: ReleaseDemo) -> None:
    work = _work(home, demo.spec, max_attack_success=0.1)  # the tiny demo model is easily moved (see tiny_spec)
    gate = work.evaluate()
    assert not gate.passed
    assert "efficientnet-lite0/backdoor_scanned reversed" in gate.reason and "policy allows 10.0%" in gate.reason
    with pytest.raises(ReleaseGateError, match="reversed"):
        work.release()


def test_lineage_svg_is_well_formed_and_escapes_labels(demo: ReleaseDemo) -> None:
    from integrity.release.provenance import lineage_markdown, render_svg

    lineage = json.loads((demo.release / "lineage.json").read_text())
    lineage["nodes"][0]["label"] = "<script>alert(1)</script>"
    svg = render_svg(lineage)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and b"<script>" not in svg
    kinds = {n["kind"] for n in lineage["nodes"]}
    assert {"source", "verification", "validation", "conversion", "attestation", "scan", "training", "evaluation",
            "release"} <= kinds
    assert all(e["type"] == "derived-from" for e in lineage["edges"])
    assert lineage_markdown(lineage).count("\n") == len(lineage["nodes"]) + 1


def test_inputs_resolve_only_from_records(home: Path, demo: ReleaseDemo) -> None:
    inputs = resolve_inputs(_work(home, demo.spec).ingestion, load_release_spec(demo.spec))
    base, digits = inputs
    assert base.kind == "model" and base.digest != base.verified_digest and base.conversions
    assert digits.kind == "dataset" and digits.digest != digits.verified_digest  # the screened copy
    assert digits.records["verification"].startswith("records/verifications/")
    assert digits.records["screening"].startswith("records/screenings/")
    assert digits.entry()["scan_records"] == [digits.records["screening"]]
    assert base.records["scans"][0].startswith("records/model-scans/")
    entry = base.entry()
    assert entry["used_digest"] == f"sha256:{base.digest}" and entry["conversion_records"]


def test_audit_lists_every_release_that_consumed_a_revoked_input(home: Path, demo: ReleaseDemo,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The incident-response question: a vendor's dataset is revoked; which releases used it?"""
    from integrity.cli import main

    assert main(["audit", "--revoked", "--home", str(home)]) == 0
    assert "no release is exposed" in capsys.readouterr().out
    store = Ingestion.open(load_catalog(CATALOG, root=home, strict=False), home=home).store
    revoke(store, release_signer(home), "source", "digits", "publisher's signing key was stolen")
    revoke(store, release_signer(home), "source", "breast-cancer", "license withdrawn")
    assert main(["audit", "--revoked", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    version = json.loads((demo.release / "release.json").read_text())["version"]
    assert "REVOKED source digits" in out and f"consumed by digits-classifier@{version}" in out
    assert "REVOKED source breast-cancer" in out and "no published release consumed it" in out
    assert main(["audit", str(demo.release), "--home", str(home)]) == 1  # and the release itself fails its audit
    assert "revoked" in capsys.readouterr().out.lower()
