"""`cairn bench poisoning` writes per-method, per-sample figures (JSON + markdown) for one run."""

import json
from pathlib import Path

import pytest

from integrity.cli.main import main


def test_the_poisoning_benchmark_scores_every_method_on_one_poisoned_set(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection figures only (``--no-retrain``): retraining the victims is what the full runs add, and
    it takes most of their time, so the default test run leaves it to them."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the benchmarks live in the checkout
    out = tmp_path / "bench.json"
    argv = ["bench", "poisoning", "--data", "breast_cancer", "--attack", "label_flip", "--rate", "0.05", "--seeds",
            "1", "--methods", "cairn,random,oracle", "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--no-retrain"]) == 0
    report = json.loads(out.read_text())
    rows = {row["method"]: row for row in report["results"]}
    assert set(rows) == {"cairn", "random", "oracle"}
    assert rows["oracle"]["auroc"] == 1.0 and rows["oracle"]["tpr_at_fpr_2"] == 1.0
    assert rows["cairn"]["auroc"] > rows["random"]["auroc"]
    assert rows["cairn"]["poisons"] == rows["oracle"]["flagged"] == round(0.05 * 426)
    assert rows["oracle"]["clean_acc_after"] is None and rows["oracle"]["clean_acc_before"] is None
    table = out.with_suffix(".md").read_text()
    assert "TPR@FPR2%" in table and "| breast_cancer | label_flip | 0.05 | cairn |" in table
