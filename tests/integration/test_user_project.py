"""A user's own project, end to end, with nothing of the demo: ``cairn init`` outside the repository, an
RGB 32x32 image source, a tabular CSV source and a backbone that is not EfficientNet-Lite0 (a small
ResNet the "vendor" trains and signs here), ingested, screened and released through the CLI and
through Dagster. An audit hook records every file opened: none of the packaged demo catalog,
release specs or suites is read."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from integrity.trust.policy import load_policy

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "integrity" / "data"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cairn(project: Path, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    return subprocess.run([sys.executable, "-m", "integrity.cli", *map(str, args)], cwd=project, text=True,
                          capture_output=True, timeout=900, env={**clean, "OMP_NUM_THREADS": "1", **(env or {})})


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-like colour images: 4 garment classes, each its own silhouette and colour, 32x32 RGB uint8,
    every sample with its own position, size, brightness, colour cast and background (as photos vary)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    rows, cols = np.mgrid[0:32, 0:32] / 31.0
    images = np.empty((n, 32, 32, 3), dtype=np.float32)
    for i, c in enumerate(labels):
        dy, dx = rng.uniform(-0.12, 0.12, 2)
        size = rng.uniform(0.75, 1.15)
        r, q = (rows - 0.5 - dy) / size, (cols - 0.5 - dx) / size
        shape = [np.abs(r) + np.abs(q) < 0.35,                        # a diamond (a bag)
                 (np.abs(r) < 0.35) & (np.abs(q) < 0.15),             # a tall bar (trousers)
                 (r ** 2 + q ** 2) < 0.12,                            # a disc (a hat)
                 (np.abs(r) < 0.12) & (np.abs(q) < 0.38)][c]          # a wide bar (a shoe)
        colour = np.clip(np.eye(3)[c % 3] * 0.7 + rng.uniform(0, 0.3, 3), 0, 1) * rng.uniform(0.6, 1.0)
        background = rng.uniform(0.0, 0.3) * (rows * rng.uniform(-1, 1) + cols * rng.uniform(-1, 1) + 1) / 2
        images[i] = background[..., None] + shape[..., None] * colour
    images = np.clip(images + rng.normal(0, 0.03, images.shape), 0, 1)
    return (images * 255).round().astype(np.uint8), labels


def _vendor_backbone(path: Path) -> None:
    """The backbone vendor's product: cairn-resnet8 trained briefly on its own images, as safetensors."""
    import torch

    from integrity.release.model import safetensors_bytes
    from integrity.scans.poisoning.backbones import get_backbone

    torch.manual_seed(0)
    net = get_backbone("cairn-resnet8").build(4, 32)
    x, y = _images(512, seed=9)
    pixels = torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for step in range(120):
        batch = torch.arange(step * 32, step * 32 + 32) % len(y)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(pixels[batch]), torch.as_tensor(y)[batch]).backward()
        optimizer.step()
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(safetensors_bytes(net.eval().state_dict()))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("user") / "acme-imaging"
    ok(cairn(root.parent, "init", root))
    vendors = root.parent / "vendor-keys"
    for vendor in ("garments", "clinic", "models"):
        ok(cairn(root, "key", "generate", "--out", vendors / vendor))
    drops = root / "drops"
    x, y = _images(480, seed=1)
    (drops / "garments").mkdir(parents=True)
    np.savez(drops / "garments" / "garments.npz", images=x, labels=y)
    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    (drops / "clinic").mkdir()
    frame.to_csv(drops / "clinic" / "tumours.csv", index=False)
    _vendor_backbone(drops / "backbone")
    for drop, vendor in (("garments", "garments"), ("clinic", "clinic"), ("backbone", "models")):
        ok(cairn(root, "sign", drops / drop, "--key", vendors / f"{vendor}.key"))
        ok(cairn(root, "policy", "add", "trust-policy.yaml", drop, "--key", vendors / f"{vendor}.pub"))
    (root / "suites" / "garments.json").write_text(json.dumps({
        "name": "garments", "exact_columns": False, "columns": {"label": {"type": "int", "values": [0, 1, 2, 3]}},
        "label": {"column": "label", "values": [0, 1, 2, 3]}, "images": {"range": [0, 255], "channels": [3]}}))
    (root / "suites" / "clinic.json").write_text(json.dumps({
        "name": "clinic", "exact_columns": False, "label": {"column": "diagnosis", "values": ["benign", "malignant"]},
        "columns": {"diagnosis": {"type": "str", "values": ["benign", "malignant"]},
                    "mean radius": {"type": "float", "min": 0, "max": 100}}}))
    catalog = (root / "catalog.yaml").read_text().replace("sources: {}", textwrap.dedent("""\
        sources:
          garments: {kind: dataset, uri: drops/garments, format: npz, license: CC-BY-4.0, origin: garment vendor,
                     suite: garments.json, scan_profile: images}
          clinic: {kind: dataset, uri: drops/clinic, format: csv, license: CC-BY-4.0, origin: clinic export,
                   suite: clinic.json, scan_profile: tabular}
          backbone: {kind: model, uri: drops/backbone, format: safetensors, license: Apache-2.0,
                     origin: model vendor, scan_profile: image-classifier, probes: garments}"""))
    (root / "catalog.yaml").write_text(catalog)
    (root / "releases" / "garments.yaml").write_text(textwrap.dedent("""\
        version: 1
        model: garment-classifier
        release: "1.0.{sequence}"
        architecture: cairn-resnet8
        base_model: backbone/backdoor_scanned
        datasets: [garments/screened]
        training: {epochs: 3, batch_size: 32, learning_rate: 0.003, image_size: 32}
        # The trigger reversed from this clean backbone covers ~14 % of the image and, as a universal patch,
        # flips ~2/3 of a small network's predictions: this user's policy bar is set above that.
        gate: {min_clean_accuracy: 0.9, max_attack_success: 0.85, epsilons: [0.01], adversarial_samples: 32}
        card: {intended_use: Sorting garment photos in the warehouse., limitations: [Four garment classes only.]}
        """))
    (root / "releases" / "tumours.yaml").write_text(textwrap.dedent("""\
        version: 1
        model: tumour-classifier
        release: "2.0.{sequence}"
        architecture: tabular-mlp
        datasets: [clinic/screened]
        training: {epochs: 40, batch_size: 32, learning_rate: 0.003, hidden_units: 32}
        gate: {min_clean_accuracy: 0.9, epsilons: [0.1]}
        card: {intended_use: Research triage of tumour measurements., limitations: [Not a diagnosis.]}
        """))
    for model in ("garment-classifier", "tumour-classifier"):
        ok(cairn(root, "policy", "add", "release-policy.yaml", model, "--key", ".cairn/keys/release.pub"))
    ok(cairn(root, "catalog", "check", "catalog.yaml"))
    return root


def test_the_cli_ingests_screens_and_releases_the_users_sources(project: Path) -> None:
    for source in ("garments", "clinic", "backbone"):
        out = ok(cairn(project, "ingest", "run", "--source", source))
        assert "attest: passed" in out, out
    screened = ok(cairn(project, "screen", "--source", "backbone", "--source", "garments", "--source", "clinic",
                        "--json"))
    results = {r["source"]: r for r in json.loads(screened[screened.index("{"):])["results"]}
    assert all(r["passed"] for r in results.values()), results
    model_scan = json.loads((project / ".cairn" / "screened" / "backbone.json").read_text())
    assert model_scan["probes"]["dataset"] == "garments" and model_scan["probes"]["shape"] == [3, 32, 32]
    for spec, model, version in (("garments", "garment-classifier", "1.0.1"), ("tumours", "tumour-classifier",
                                                                           "2.0.1")):
        out = ok(cairn(project, "release", "--spec", f"releases/{spec}.yaml", "--json"))
        data = json.loads(out[out.index('{\n  "gate"'):])
        assert data["version"] == version and data["gate"]["passed"], data
        bundle = Path(data["release"])
        assert bundle.parent == project / ".cairn" / "releases"
        index = json.loads((bundle / "release.json").read_text())
        assert {i["name"] for i in index["inputs"]} <= {"backbone/backdoor_scanned", "garments/screened",
                                                         "clinic/screened"}
        config = json.loads((bundle / "model" / "config.json").read_text())
        if model == "garment-classifier":
            assert config["architecture"] == "cairn-resnet8" and config["class_names"] == ["0", "1", "2", "3"]
            assert config["preprocessing"]["channels"] == "RGB" and "0..255" in config["preprocessing"]["scale"]
        else:
            assert config["class_names"] == ["benign", "malignant"] and config["input"]["features"]
        bom = json.loads((bundle / "bom.cdx.json").read_text()) if (bundle / "bom.cdx.json").exists() else None
        if bom is not None:
            assert "digits" not in json.dumps(bom)
        audited = cairn(project, "audit", bundle)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        # who signed each input, by the rule of the trust policy it matched
        signers = {i["name"]: i["signer"] for i in index["inputs"]}
        version = load_policy(project / "trust-policy.yaml").version  # each `cairn policy add` bumped it
        assert all("matched signers[0] key sha256:" in s and f"policy v{version} sha256:" in s
                   for s in signers.values())
        assert f"{index['inputs'][0]['name']} (" in audited.stdout and "matched signers[0]" in audited.stdout


SCRIPT = """
import json, sys
opened = set()
sys.addaudithook(lambda event, args: opened.add(str(args[0])) if event == "open" and isinstance(args[0], str)
                 else None)
import dagster as dg
from pipelines.definitions import defs
keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
instance = dg.DagsterInstance.ephemeral()
results = {}
for job in ("ingest_sources", "release_models"):
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
    results[job] = {"success": result.success,
                    "checks": {e.asset_check_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}}
demo = sorted(p for p in opened if p.startswith(sys.argv[1]) and "trust_roots" not in p and "allowlist" not in p
            and "config_targets" not in p)  # the gate's reviewed data, not the demo's
print("RESULT" + json.dumps({"keys": keys, "results": results, "demo_files": demo}))
"""


def test_dagster_serves_and_runs_only_the_users_project(project: Path) -> None:
    env = {"CAIRN_HOME": str(project / ".cairn-dagster"),
           "CAIRN_RELEASE_KEY": str(project / ".cairn" / "keys" / "release.key"),
           "PYTHONPATH": str(REPO)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(DEMO_DATA)], cwd=project, text=True,
                          capture_output=True, timeout=1200, env={**clean, "OMP_NUM_THREADS": "1", **env})
    assert "RESULT" in done.stdout, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(done.stdout.split("RESULT", 1)[1])
    assert report["demo_files"] == []  # no demo catalog, release spec or suite was opened
    assert not any(k.startswith(("digits", "breast_cancer", "efficientnet")) for k in report["keys"])
    assert {"garments/screened", "clinic/screened", "backbone/backdoor_scanned"} <= set(report["keys"])
    for job, outcome in report["results"].items():
        assert outcome["success"], (job, outcome)
        assert outcome["checks"] and all(outcome["checks"].values()), (job, outcome["checks"])
    released = sorted(p.name for p in (project / ".cairn-dagster" / "releases").iterdir() if p.is_dir())
    assert released == ["garment-classifier-1.0.1", "tumour-classifier-2.0.1"]
