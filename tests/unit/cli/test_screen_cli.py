"""``cairn screen DATA``: a bare dataset screened outside any catalog, with a documented JSON report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from integrity.cli.main import main
from integrity.schemas import problems

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _screen(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["screen", *args, "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert problems("screen-report", report) == []  # the documented schema (docs/schemas/screen-report.schema.json)
    return code, report


def _rgb(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Colour 32x32 images of 3 classes that differ in hue and layout (a learnable, Fashion-MNIST-like set)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    base = np.zeros((n, 32, 32, 3), dtype=np.float32)
    for c in range(3):
        members = labels == c
        base[members, :, :, c] = 0.6
        base[members, 8 * c:8 * c + 12, 4:28, :] += 0.3
    images = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    return (images * 255).round().astype(np.uint8), labels


def test_rgb_backdoor_is_quarantined_and_the_poisons_are_the_flagged(tmp_path: Path, capsys) -> None:
    images, labels = _rgb()
    rng = np.random.default_rng(1)
    poisoned = rng.choice(np.flatnonzero(labels != 0), 30, replace=False)
    images[poisoned, -5:, -5:, :] = 255  # a white corner patch, relabelled to class 0 (BadNets)
    labels = labels.copy()
    labels[poisoned] = 0
    np.savez(tmp_path / "drop.npz", x=images, y=labels)
    code, report = _screen(capsys, str(tmp_path / "drop.npz"), "--all-scores")
    assert code == 1 and report["verdict"] == "quarantined" and report["kind"] == "image"
    assert report["read"]["layout"] == "NHWC" and report["read"]["pixel_range"] == [0.0, 255.0]
    flagged = {f["index"] for f in report["flagged"]}
    assert len(flagged & set(poisoned.tolist())) >= 27 and len(flagged - set(poisoned.tolist())) <= 12
    assert len(report["scores"]) == len(labels) and report["classes"] == ["0", "1", "2"]


def test_clean_table_passes_and_flipped_labels_are_caught(tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = np.where(frame.pop("target") == 1, "benign", "malignant")
    frame.iloc[:300].to_csv(tmp_path / "part-1.tsv", sep="\t", index=False)
    frame.iloc[300:].to_csv(tmp_path / "part-2.tsv", sep="\t", index=False)  # several files: one table
    code, report = _screen(capsys, str(tmp_path), "--label-column", "diagnosis")
    assert code == 0 and report["passed"] and report["samples"] == len(frame)
    assert report["classes"] == ["benign", "malignant"] and report["read"]["format"] == "tsv"
    flips = np.random.default_rng(2).choice(len(frame), 28, replace=False)  # 5 %
    flipped = frame.copy()
    flipped.loc[flips, "diagnosis"] = np.where(frame.loc[flips, "diagnosis"] == "benign", "malignant", "benign")
    flipped.to_parquet(tmp_path / "flipped.parquet")
    code, report = _screen(capsys, str(tmp_path / "flipped.parquet"), "--label-column", "diagnosis", "--all-scores")
    assert code == 1 and not report["passed"]
    truth = np.zeros(len(frame), dtype=bool)
    truth[flips] = True
    assert roc_auc_score(truth, report["scores"]) >= 0.97  # per-sample ranking (benchmarks/ has the full figures)
    assert len({f["index"] for f in report["flagged"]} & set(flips.tolist())) >= 14


def test_image_folder_with_labels_csv_keeps_the_listed_order(tmp_path: Path, capsys) -> None:
    images, labels = _rgb(60)
    rows = ["file,label"]
    for i in reversed(range(60)):  # the sample order is labels.csv's order, not the file names'
        Image.fromarray(images[i]).save(tmp_path / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{['shirt', 'shoe', 'bag'][labels[i]]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    code, report = _screen(capsys, str(tmp_path))
    assert report["read"]["layout"] == "files" and report["classes"] == ["bag", "shirt", "shoe"]
    assert report["samples"] == 60 and code in (0, 1)


@pytest.mark.parametrize(("setup", "args", "message"), [
    (lambda p: np.savez(p / "d.npz", images=np.arange(20 * 64).reshape(20, 8, 8) % 17, labels=np.arange(20) % 2),
     ["d.npz"], "not implied by their dtype"),
    (lambda p: np.savez(p / "d.npz", images=np.zeros((20, 8, 8), np.uint8)), ["d.npz"], "no labels"),
    (lambda p: np.savez(p / "d.npz", images=np.zeros((20, 8, 8), np.uint8), labels=np.zeros(20)), ["d.npz"],
     "one class only"),
    (lambda p: (p / "t.csv").write_text("a,b\n1,2\n"), ["t.csv"], "label column is not named"),
    (lambda p: (p / "t.jsonl").write_text('{"text": "hi", "label": 1}\n'), ["t.jsonl", "--kind", "text"],
     "no poisoning screen is registered for text"),
    (lambda p: np.savez(p / "d.npz", images=np.full((20, 8, 8), 300.0), labels=np.arange(20) % 2),
     ["d.npz", "--range", "0:255"], "outside the declared range"),
])
def test_bad_input_is_a_usage_error_naming_the_artifact(tmp_path: Path, setup, args, message) -> None:
    setup(tmp_path)
    args = [str(tmp_path / args[0]), *args[1:]]
    done = subprocess.run([sys.executable, "-m", "integrity.cli", "screen", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and str(tmp_path) in done.stderr
