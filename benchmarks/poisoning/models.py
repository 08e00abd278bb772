"""Model-level benchmark: does the foundation-model scan tell backdoored backbones from clean ones?

    cairn bench poisoning --models 10 --out benchmarks/results/poisoning-models.json

Trains ``n`` clean and ``n`` backdoored small CNNs on scikit-learn's digits (backdoors alternate
BadNets and blended triggers, 10 % poisoned, the target class varies), scans each one with the
same scanner the pipeline runs on the foundation model (Neural Cleanse per class on the model's
own head, and on embedding regions of its trunk, as for an encoder without a head), and reports the
ROC-AUC of the scan scores and the verdicts at the policy's threshold.
"""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def run(n: int, out: Path, *, device: str = "cpu", log: Any = print, steps: int = 150,
        regions: bool = False) -> dict[str, Any]:
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    from benchmarks.poisoning.victims import penultimate, predict, train
    from integrity.scans.poisoning import ModelScanPolicy, scan_encoder
    from integrity.scans.poisoning.attacks import inject

    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32), data.target
    probes = x[np.random.default_rng(99).choice(len(y), 100, replace=False)]
    policy = ModelScanPolicy()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index in range(n):
        for backdoored in (False, True):
            attack = ("badnets", "blended")[index % 2]
            target = index % 10
            if backdoored:
                poisoned = inject(x, y, attack, 0.1, seed=100 + index, target=target)
                model = train(poisoned.x, poisoned.y, 10, seed=index, epochs=10, device=device)
                assert poisoned.trigger is not None
                asr = float((predict(model, poisoned.trigger(x[y != target]), device) == target).mean())
            else:
                model = train(x, y, 10, seed=index, epochs=10, device=device)
                asr = None
            trunk = penultimate(model)
            by_class = scan_encoder(model, probes, classifier=True, steps=steps, policy=policy, device=device)
            # the encoder mode (embedding regions of the trunk, no head) is optional: it doubles the cost
            by_region = scan_encoder(trunk, probes, regions=6, steps=steps, policy=policy, device=device) \
                if regions else by_class
            row = {"model": index, "backdoored": backdoored, "attack": attack if backdoored else None,
                   "target": target if backdoored else None, "asr": asr,
                   "score_classes": by_class.score, "region_found": by_class.trigger.region,
                   "anomaly_index_classes": by_class.summary()["anomaly_index"],
                   "mask_norms_classes": [round(v, 3) for v in by_class.trigger.mask_norms],
                   "passed_classes": by_class.verdict.passed, "score_regions": by_region.score,
                   "passed_regions": by_region.verdict.passed,
                   "seconds": round(by_class.seconds + by_region.seconds, 2)}
            rows.append(row)
            log(f"  model {index} {'backdoored ' + attack if backdoored else 'clean':20s} asr {asr} "
                f"score(classes) {by_class.score:.2f} AI {row['anomaly_index_classes']:.2f} "
                f"region {by_class.trigger.region} "
                f"score(regions) {by_region.score:.2f}")
    truth = np.array([r["backdoored"] for r in rows])
    summary: dict[str, Any] = {"clean": n, "backdoored": n}
    modes = ("classes", "regions") if regions else ("classes",)
    for mode in modes:
        scores = np.array([r[f"score_{mode}"] for r in rows])
        verdict = np.array([not r[f"passed_{mode}"] for r in rows])
        summary[mode] = {"roc_auc": float(roc_auc_score(truth, scores)),
                         "tpr_at_policy": float(verdict[truth].mean()), "fpr_at_policy": float(verdict[~truth].mean())}
    backdoors = [r for r in rows if r["backdoored"]]
    summary["target_found"] = float(np.mean([r["region_found"] == r["target"] for r in backdoors]))
    summary["mean_asr"] = float(np.mean([r["asr"] for r in backdoors]))
    anomaly = np.array([r["anomaly_index_classes"] for r in rows])
    summary["classes"]["roc_auc_anomaly_index"] = float(roc_auc_score(truth, anomaly))
    report = {"benchmark": "poisoning-models", "policy_max_score": policy.max_score,
              "policy_max_mask_ratio": policy.max_mask_ratio, "steps": steps,
              "seconds": round(time.perf_counter() - started, 1), "summary": summary, "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    bars = {"classes": f"mask ratio >= {policy.max_mask_ratio:g}", "regions": f"anomaly index >= {policy.max_score:g}"}
    table = ("| scan mode | score | ROC-AUC | TPR at policy | FPR at policy |\n|---|---|---|---|---|\n" +
             "\n".join(f"| Neural Cleanse on {m}, {steps} steps | {bars[m]} | {summary[m]['roc_auc']:.3f} | "
                       f"{summary[m]['tpr_at_policy']:.2f} | {summary[m]['fpr_at_policy']:.2f} |" for m in modes) +
             f"\n| (same scans, anomaly index instead of mask ratio) | anomaly index | "
             f"{summary['classes']['roc_auc_anomaly_index']:.3f} | - | - |" +
             f"\n\n{n} clean and {n} backdoored backbones; mean ASR of the backdoors {summary['mean_asr']:.3f}; "
             f"target class found by the class scan in {summary['target_found']:.0%}.\n")
    out.with_suffix(".md").write_text(table)
    return report
