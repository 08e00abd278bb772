"""Acceptance: the demo ends in a released model that verifies with the model_signing CLI and with
`cairn verify`, its provenance lists every input digest, Dagster's data versions agree with the lineage
graph, and `cairn audit` passes until any one byte of any file it names changes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from integrity.cli import main as cairn_main
from tests.support.release_demo import MODEL, ReleaseDemo, shared_release_demo

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ReleaseDemo:
    result = shared_release_demo(tmp_path_factory)
    assert result.returncode == 0, result.output[-4000:]
    assert result.release.is_dir(), result.output[-4000:]
    return result


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)


def test_demo_release_verifies_with_model_signing_and_cairn(demo: ReleaseDemo) -> None:
    assert f"Released {MODEL}" in demo.output
    public = demo.home / "keys" / "release.pub"
    model = demo.release / "model"
    signed = _run(BIN / "model_signing", "verify", "key", "--signature", model / "model.sig", "--public_key", public,
                  model)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    verified = _run(BIN / "cairn", "verify", model, "--key", public)
    assert verified.returncode == 0, verified.stderr
    assert "signed by key" in verified.stdout
    for name in ("release.json", "provenance.intoto.json", "bom.cdx.json", "lineage.json", "lineage.svg"):
        one = _run(BIN / "cairn", "verify", demo.release / name, "--key", public)
        assert one.returncode == 0, f"{name}: {one.stderr}"


def test_provenance_lists_every_input_digest(demo: ReleaseDemo) -> None:
    provenance = json.loads((demo.release / "provenance.intoto.json").read_text())
    assert provenance["predicateType"] == "https://slsa.dev/provenance/v1"
    definition = provenance["predicate"]["buildDefinition"]
    resolved = {d["digest"].get("sha256") for d in definition["resolvedDependencies"]}
    attested = demo.home / "attested"
    for source in ("digits", "efficientnet_lite0"):
        summary = json.loads((attested / f"{source}.json").read_text())
        assert summary["digest"] in resolved  # what the publisher signed
        assert summary["usable_digest"] in resolved  # what training read (the safetensors conversion)
    index = json.loads((demo.release / "release.json").read_text())
    for item in index["inputs"]:
        assert item["digest"].removeprefix("sha256:") in resolved
        assert item["verification_record"].startswith("records/verifications/")
        assert (demo.home / "store" / item["verification_record"]).is_file()
    external = definition["externalParameters"]
    assert external["catalog"]["digest"].startswith("sha256:")
    assert external["trustPolicies"] and external["releasePolicy"]["digest"].startswith("sha256:")
    details = provenance["predicate"]["runDetails"]
    assert details["metadata"]["invocationId"] and details["builder"]["id"]
    byproducts = {b["name"]: b for b in details["byproducts"]}
    assert byproducts["release-gate"]["annotations"]["passed"] is True
    assert byproducts["signer"]["annotations"]["method"] == "key"
    # The BOM conforms to CycloneDX 1.6 and names the same weights and data.
    from integrity.release.bom import validate_bom

    bom = json.loads((demo.release / "bom.cdx.json").read_text())
    validate_bom(bom)
    # The model card says what the release spec says (intended use, limitations), nothing from the code.
    considerations = bom["metadata"]["component"]["modelCard"]["considerations"]
    spec = yaml.safe_load(demo.spec.read_text())
    assert considerations["useCases"] == [spec["card"]["intended_use"]]
    assert considerations["technicalLimitations"] == spec["card"]["limitations"]
    hashes = {h["content"] for c in bom["components"] for h in c["hashes"]}
    assert {i["digest"].removeprefix("sha256:") for i in index["inputs"]} <= hashes
    # Completeness fails the build: a component without a license or a hash is refused.
    from integrity.release.bom import BomValidationError

    unlicensed = json.loads(json.dumps(bom))
    del unlicensed["components"][0]["licenses"]
    with pytest.raises(BomValidationError, match="no license"):
        validate_bom(unlicensed)
    unhashed = json.loads(json.dumps(bom))
    unhashed["metadata"]["component"]["hashes"] = []
    with pytest.raises(BomValidationError, match="released-model: no SHA-256 hash"):
        validate_bom(unhashed)


def test_dagster_data_versions_agree_with_the_lineage_graph(demo: ReleaseDemo) -> None:
    import dagster as dg

    lineage = json.loads((demo.release / "lineage.json").read_text())
    instance = dg.DagsterInstance.from_config(str(demo.home / "dagster"))
    checked = 0
    for node in lineage["nodes"]:
        asset = node.get("asset")
        if not asset:
            continue
        event = instance.get_latest_materialization_event(dg.AssetKey(asset["key"]))
        assert event is not None, asset["key"]
        tags = event.asset_materialization.tags or {}
        assert tags.get("dagster/data_version") == asset["data_version"], (asset, tags)
        checked += 1
    assert checked >= 9  # every input's verified/validated/attested assets and the three release assets
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey(["digits_classifier", "evaluated"]), "release_gate")])
    execution = next(iter(check.values()))
    assert execution.evaluation.passed is True


def test_audit_passes_and_names_any_changed_file(demo: ReleaseDemo, tmp_path: Path, capsys) -> None:
    ok = _run(BIN / "cairn", "audit", demo.release, "--home", demo.home, "--html", tmp_path / "audit.html")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "AUDIT PASSED" in ok.stdout and "training:" in ok.stdout and "source:digits" in ok.stdout
    page = (tmp_path / "audit.html").read_text()
    assert "AUDIT PASSED" in page and "<svg" in page and "<script" not in page and "http://" not in page.split(
        "xmlns")[0]
    index = json.loads((demo.release / "release.json").read_text())
    names = ["release.json", "release.json.sig", *index["files"]]
    assert len(names) == 13
    for name in names:
        copy = tmp_path / f"flip-{name.replace('/', '_')}" / demo.release.name
        shutil.copytree(demo.release, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
        code = cairn_main(["audit", str(copy), "--home", str(demo.home)])
        out = capsys.readouterr()
        assert code == 1, f"{name}: {out.out[-2000:]}"
        assert f"cairn audit: {name}" in out.err or f"/{name}" in out.err, f"{name} not named:\n{out.err}"
        assert "AUDIT FAILED" in out.out


def test_the_demo_is_a_project_in_its_home_and_says_what_it_does(demo: ReleaseDemo) -> None:
    """`cairn demo` makes its home a project (the layout `cairn init` gives a user) and runs from its files;
    it shows progress (stage and source) while it runs, not only a summary at the end."""
    from integrity.intake.catalog import load_catalog
    from integrity.settings import Settings

    settings = Settings(environ={}, project=demo.home / "cairn.yaml")
    assert settings.home == demo.home and settings.catalog == demo.home / "catalog.yaml"
    assert settings.suites == demo.home / "suites" and (settings.suites / "digits.json").is_file()
    assert [p.name for p in settings.release_specs] == ["demo.yaml"]
    catalog = load_catalog(settings.catalog, root=demo.home)
    assert catalog.source("digits").suite == demo.home / "suites" / "digits.json"  # the project's copy
    assert (demo.home / "workspace.yaml").is_file()
    # The provenance names the project's catalog, not the packaged one.
    provenance = json.loads((demo.release / "provenance.intoto.json").read_text())
    assert provenance["predicate"]["buildDefinition"]["externalParameters"]["catalog"]["path"] == str(
        demo.home / "catalog.yaml")
    for line in ("cairn demo: ingesting the demo project's sources", "[digits/screened] screening digits",
                 "!! [digits_vendor_b/screened] digits-vendor-b: backdoor signature",
                 "[digits_classifier/released] released digits-classifier"):
        assert line in demo.output, line
    assert "Dependencies for step" not in demo.output  # Dagster's cascade of skipped steps is not progress
