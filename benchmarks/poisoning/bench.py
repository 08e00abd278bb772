"""``cairn bench poisoning``: inject an attack, run Cairn and the peers on the same arrays, write JSON + markdown.

    cairn bench poisoning --data digits --attack badnets --rate 0.05 --seeds 3 --out benchmarks/results/p.json

Per seed: poison the training split; train the victim (a small CNN, or an MLP for tabular data) on
it; compute the shared feature views once; run every method (``cairn``, ``art_ac_default``,
``art_ac_tuned``, ``art_ss_default``, ``art_ss_tuned``, ``cleanlab``, ``random``, ``oracle``); score
its flags and scores against the ground truth; retrain the victim on what it keeps and measure
clean accuracy and attack success (backdoors) on the untouched test split.
"""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from integrity.scans.poisoning.attacks import BACKDOOR_ATTACKS, feature_collision, inject

METHODS = ("cairn", "art_ac_default", "art_ac_tuned", "art_ss_default", "art_ss_tuned", "cleanlab", "random", "oracle")
METRICS = ("auroc", "tpr_at_fpr_1", "tpr_at_fpr_2", "tpr_at_fpr_5", "precision", "recall", "clean_acc_after",
           "asr_after", "seconds")


def tpr_at_fpr(scores: np.ndarray, truth: np.ndarray, fpr: float) -> float:
    from sklearn.metrics import roc_curve

    false_pos, true_pos, _ = roc_curve(truth, scores)
    return float(true_pos[np.searchsorted(false_pos, fpr, side="right") - 1])


def detection_metrics(scores: np.ndarray, flags: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    flagged = int(flags.sum())
    hits = int((flags & truth).sum())
    return {"auroc": float(roc_auc_score(truth, scores)), "tpr_at_fpr_1": tpr_at_fpr(scores, truth, 0.01),
            "tpr_at_fpr_2": tpr_at_fpr(scores, truth, 0.02), "tpr_at_fpr_5": tpr_at_fpr(scores, truth, 0.05),
            "precision": hits / flagged if flagged else 0.0, "recall": hits / int(truth.sum())}


def _foundation(device: str) -> Any:
    from integrity.scans.poisoning.features import FoundationModel, packaged_weights

    return FoundationModel.from_path(packaged_weights(), device=device)


def run_seed(data: str, attack: str, rate: float, seed: int, *, device: str, train_size: int | None,
             methods: tuple[str, ...], log: Any = print, retrain: bool = True) -> list[dict[str, Any]]:
    from benchmarks.poisoning import baselines
    from benchmarks.poisoning.data import load
    from benchmarks.poisoning.victims import as_input, predict, train
    from integrity.scans.poisoning.dataset_scan import feature_views, scan_dataset

    x_train, y_train, x_test, y_test = load(data, seed=seed, train_size=train_size)
    classes = int(max(y_train.max(), y_test.max()) + 1)
    images = x_train.ndim in (3, 4)
    foundation = _foundation(device) if images else None
    clean_label = attack.startswith("clean_label")
    collide = feature_collision(foundation.embed_tensor, foundation.prepare) if clean_label else None
    poisoned = inject(x_train, y_train, attack, rate, seed=seed, target=0, num_classes=classes, collide=collide)
    x, y, truth = poisoned.x, poisoned.y, poisoned.poison
    started = time.perf_counter()
    features = foundation.embed(x) if foundation is not None else None
    feature_seconds = time.perf_counter() - started
    # The victim: what ART's defences read activations from, and the baseline the retrained models are
    # compared with. Without ART and without retraining (``--no-retrain``) nothing needs it.
    needs_victim = retrain or any(m.startswith("art_") for m in methods)
    victim = train(x, y, classes, seed=seed, device=device) if needs_victim else None
    fraction = max(float(truth[y == c].mean()) for c in np.unique(y[truth])) if truth.any() else 0.0

    def attack_success(model: Any) -> float | None:
        if poisoned.trigger is None:
            if clean_label:  # the attacker's target instances, classified as the base class?
                aims = poisoned.details["target_instances"]
                return float((predict(model, aims, device) == poisoned.details["base_class"]).mean())
            return None
        source = (y_test == poisoned.source) if poisoned.source is not None else (y_test != poisoned.target)
        return float((predict(model, poisoned.trigger(x_test[source]), device) == poisoned.target).mean())

    baseline = {"clean_acc_before": float((predict(victim, x_test, device) == y_test).mean()) if victim else None,
                "asr_before": attack_success(victim) if victim else None}
    if "values_changed_per_poison" in poisoned.details:  # how much of a clean-label perturbation survived
        baseline["values_changed_per_poison"] = poisoned.details["values_changed_per_poison"]
    log(f"  seed {seed}: {int(truth.sum())} poisons; victim clean acc {baseline['clean_acc_before']}, "
        f"ASR {baseline['asr_before']}")
    rng = np.random.default_rng(seed + 1000)
    rows = []
    # A method that keeps the same samples as another trains the same victim (same data, same seed):
    # reuse it. Flagging nothing keeps the victim itself.
    retrained_by_kept: dict[bytes, Any] = {np.ones(len(y), dtype=bool).tobytes(): victim}
    for method in methods:
        began = time.perf_counter()
        if method == "cairn":
            result = scan_dataset(x, y, foundation_features=features, device=device)
            scores, flags = result.scores, result.flagged
            extra = {"verdict_passed": result.verdict.passed, "backdoor_classes": result.split_classes}
        elif method.startswith("art_"):
            run = baselines.art_activation_clustering if "_ac_" in method else baselines.art_spectral_signatures
            scores, flags = run(victim, as_input(x), y, classes, tuned=method.endswith("tuned"),
                                poison_fraction=fraction)
            extra = {}
        elif method == "cleanlab":
            views = list(feature_views(x, foundation=None, device=device, foundation_features=features).values())
            scores, flags = baselines.cleanlab_issues(views, y, seed)
            extra = {}
        elif method == "random":
            scores = rng.random(len(y))
            flags = np.zeros(len(y), dtype=bool)
            flags[rng.choice(len(y), int(truth.sum()), replace=False)] = True
            extra = {}
        elif method == "oracle":
            scores, flags, extra = truth.astype(float), truth.copy(), {}
        else:
            raise ValueError(f"unknown method {method!r}")
        seconds = time.perf_counter() - began + (feature_seconds if method in ("cairn", "cleanlab") else 0.0)
        keep = ~flags
        retrained = None
        if retrain:
            if keep.tobytes() not in retrained_by_kept:
                retrained_by_kept[keep.tobytes()] = train(x[keep], y[keep], classes, seed=seed, device=device)
            retrained = retrained_by_kept[keep.tobytes()]
        row = {"method": method, "data": data, "attack": attack, "rate": rate, "seed": seed,
               **detection_metrics(scores, flags, truth),
               "clean_acc_after": float((predict(retrained, x_test, device) == y_test).mean()) if retrained else None,
               "asr_after": attack_success(retrained) if retrained and (attack in BACKDOOR_ATTACKS or clean_label)
               else None,
               "seconds": round(seconds, 3), "flagged": int(flags.sum()), "poisons": int(truth.sum()),
               **baseline, **extra}
        rows.append(row)
        log(f"    {method:15s} auroc {row['auroc']:.4f} tpr@2 {row['tpr_at_fpr_2']:.3f} prec {row['precision']:.3f} "
            f"rec {row['recall']:.3f} acc {row['clean_acc_after']} asr {row['asr_after']} {seconds:.1f}s")
    return rows


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (data, attack, rate, method)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["data"], row["attack"], row["rate"], row["method"]), []).append(row)
    out = []
    for (data, attack, rate, method), rows in groups.items():
        mean = {m: (float(np.mean([r[m] for r in rows])) if all(r.get(m) is not None for r in rows) else None)
                for m in METRICS}
        out.append({"data": data, "attack": attack, "rate": rate, "method": method, "seeds": len(rows), **mean})
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| data | attack | rate | method | AUROC | TPR@FPR1% | TPR@FPR2% | TPR@FPR5% | precision | recall "
             "| clean acc after | ASR after | seconds | seeds |", "|" + "---|" * 14]

    def fmt(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for row in summary:
        lines.append(f"| {row['data']} | {row['attack']} | {row['rate']:g} | {row['method']} | {fmt(row['auroc'])} | "
                     f"{fmt(row['tpr_at_fpr_1'])} | {fmt(row.get('tpr_at_fpr_2'))} | {fmt(row['tpr_at_fpr_5'])} | "
                     f"{fmt(row['precision'])} | "
                     f"{fmt(row['recall'])} | {fmt(row['clean_acc_after'])} | {fmt(row['asr_after'])} | "
                     f"{fmt(row['seconds'], 1)} | {row['seeds']} |")
    return "\n".join(lines) + "\n"


def run(data: str, attacks: list[str], rates: list[float], seeds: int, out: Path, *, device: str | None = None,
        train_size: int | None = None, methods: tuple[str, ...] = METHODS, log: Any = print,
        retrain: bool = True) -> dict[str, Any]:
    import torch

    from integrity.scans.poisoning.features import pick_device

    device = pick_device(device)
    results: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for attack in attacks:
        for rate in rates:
            log(f"{data} {attack} rate {rate}")
            for seed in range(seeds):
                results += run_seed(data, attack, rate, seed, device=device, train_size=train_size,
                                    methods=methods, log=log, retrain=retrain)
                report = {"benchmark": "poisoning", "device": device, "torch": torch.__version__,
                          "seconds": round(time.perf_counter() - started, 1), "results": results,
                          "summary": summarize(results)}
                out.write_text(json.dumps(report, indent=2))  # rewritten after each seed: partial runs survive
                out.with_suffix(".md").write_text(markdown(report["summary"]))
    return report
