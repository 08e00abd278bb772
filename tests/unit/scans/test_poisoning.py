"""Poisoning scans on real data (scikit-learn's digits) with attacks injected on purpose."""

from typing import Any

import numpy as np
import pytest

from integrity.errors import UsageError
from integrity.scans.poisoning import ModelScanPolicy, ScanPolicy, scan_dataset, scan_encoder
from integrity.scans.poisoning.attacks import inject, patch_trigger
from integrity.scans.poisoning.features import FoundationModel, load_state_dict, packaged_weights, read_safetensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _auroc(scores: np.ndarray, poison: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(poison, scores))




@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))[:1400]
    return (data.images[order] / 16.0).astype(np.float32), data.target[order]


def test_clean_digits_pass_with_few_flags(digits):
    x, y = digits
    result = scan_dataset(x, y)
    assert result.verdict.passed, result.verdict.reason
    assert result.split_classes == []
    assert result.flagged.mean() < 0.02


@pytest.mark.parametrize("attack,rate", [("badnets", 0.01), ("badnets", 0.1), ("blended", 0.05),
                                         ("badnets_single", 0.05)])
def test_backdoors_from_many_or_one_source_are_found(digits, attack, rate):
    x, y = digits
    poisoned = inject(x, y, attack, rate, seed=3, target=4)
    result = scan_dataset(poisoned.x, poisoned.y)
    assert _auroc(result.scores, poisoned.poison) > 0.99
    assert not result.verdict.passed, "a backdoored drop must fail the policy"
    caught = result.flagged[poisoned.poison].mean()
    assert caught > 0.9, f"only {caught:.0%} of the poisons flagged"


def test_label_flips_score_high(digits):
    x, y = digits
    poisoned = inject(x, y, "label_flip", 0.05, seed=1)
    result = scan_dataset(poisoned.x, poisoned.y)
    assert _auroc(result.scores, poisoned.poison) > 0.99
    assert not result.verdict.passed


def test_the_scan_is_deterministic(digits):
    x, y = digits
    poisoned = inject(x, y, "blended", 0.05, seed=2)
    first, second = scan_dataset(poisoned.x, poisoned.y), scan_dataset(poisoned.x, poisoned.y)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_bad_input_is_refused(digits):
    x, y = digits
    with pytest.raises(UsageError):
        scan_dataset(x, y[:-1])
    with pytest.raises(UsageError):
        scan_dataset(x, np.zeros_like(y))
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(UsageError):
        scan_dataset(bad, y)
    with pytest.raises(UsageError):
        ScanPolicy(max_flagged_fraction=1.5)


def test_tabular_label_flips():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    poisoned = inject(data.data, data.target, "label_flip", 0.05, seed=0)
    result = scan_dataset(poisoned.x, poisoned.y)
    assert _auroc(result.scores, poisoned.poison) > 0.9


def test_foundation_features_from_the_packaged_weights(digits, tmp_path):
    x, y = digits
    state = load_state_dict(packaged_weights())
    # the safetensors path the pipeline uses (what the model gate's conversion writes)
    import json
    import struct

    names = sorted(state)[:3]
    header, blobs, offset = {}, [], 0
    for name in names:
        raw = state[name].numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(state[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    back = read_safetensors(tmp_path / "w.safetensors")
    for name in names:
        np.testing.assert_array_equal(back[name], state[name].numpy())
    model = FoundationModel(state, device="cpu")
    features = model.embed(x[:64])
    assert features.shape == (64, 1280) and np.isfinite(features).all()
    result = scan_dataset(x[:400], y[:400], foundation_features=model.embed(x[:400]))
    assert [v.view for v in result.views] == ["raw", "foundation"]


def test_model_scan_tells_a_backdoored_backbone_from_a_clean_one(digits):
    from benchmarks.poisoning.victims import predict, train

    x, y = digits
    probes = x[:100]
    poisoned = inject(x, y, "badnets", 0.1, seed=1, target=1)
    clean_model = train(x, y, 10, seed=1, epochs=10)
    backdoored = train(poisoned.x, poisoned.y, 10, seed=1, epochs=10)
    assert (predict(backdoored, patch_trigger(x[y != 1])) == 1).mean() > 0.9  # the backdoor works
    clean_scan = scan_encoder(clean_model, probes, classifier=True, steps=150)
    bad_scan = scan_encoder(backdoored, probes, classifier=True, steps=150, policy=ModelScanPolicy())
    assert bad_scan.trigger.region == 1, bad_scan.summary()
    assert bad_scan.kind == "mask_ratio" and bad_scan.score > clean_scan.score
    assert not bad_scan.verdict.passed
    assert clean_scan.verdict.passed, clean_scan.summary()


def test_clean_label_feature_collisions_are_flagged(digits):
    """Poison Frogs against the packaged foundation model: correctly labelled, perturbed base images."""
    from integrity.scans.poisoning.attacks import feature_collision

    x, y = digits
    model = FoundationModel(load_state_dict(packaged_weights()), device="cpu")
    poisoned = inject(x, y, "clean_label", 0.01, seed=0, target=0,
                      collide=feature_collision(model.embed_tensor, model.prepare))
    assert (poisoned.y[poisoned.poison] == poisoned.source).all()  # clean label: the base class, unchanged
    result = scan_dataset(poisoned.x, poisoned.y, foundation_features=model.embed(poisoned.x))
    assert result.flagged[poisoned.poison].all(), result.scores[poisoned.poison]
    assert result.flagged[~poisoned.poison].mean() < 0.02
    assert result.perturbation is not None
    assert result.perturbation.details["encoding"]["anomalies"] == int(poisoned.poison.sum())


def test_encoding_residual_needs_a_shared_alphabet(digits):
    from integrity.scans.poisoning.perturbation import ENCODING_SCORE, perturbation_scores

    x, _ = digits
    nudged = x.copy()
    nudged[:5, 2:4, 3] += 0.013  # two values off the 17-level grid in five images
    on_grid = x.copy()
    on_grid[5:10, 2:4, 3] = 1.0  # changed, but on the grid: not an encoding anomaly
    scores = perturbation_scores(np.concatenate([nudged[:10], on_grid[5:10], x[10:]]))
    assert (scores.encoding[:5] == ENCODING_SCORE).all() and np.isinf(scores.encoding[5:]).all()
    continuous = perturbation_scores(x + np.random.default_rng(0).normal(0, 0.01, x.shape).astype(np.float32))
    assert not continuous.details["encoding"]["active"] and np.isinf(continuous.encoding).all()


def test_quantised_clean_label_poisons_use_only_the_datasets_values(digits):
    """The adaptive variant rounds its perturbation to the data's encoding, which the encoding test cannot see."""
    from integrity.scans.poisoning.perturbation import perturbation_scores

    x, y = digits

    def nudge(bases: np.ndarray, targets: np.ndarray, *, seed: int = 0) -> np.ndarray:
        return np.clip(bases + 0.04 * (targets - bases), 0.0, 1.0)  # 0.04 of a step toward the target

    plain = inject(x, y, "clean_label", 0.01, seed=0, target=0, collide=nudge)
    snapped = inject(x, y, "clean_label_quantised", 0.01, seed=0, target=0, collide=nudge)
    assert set(np.unique(snapped.x)) <= set(np.unique(x))
    assert not set(np.unique(plain.x)) <= set(np.unique(x))
    assert 0 < snapped.details["values_changed_per_poison"] < plain.details["values_changed_per_poison"]
    assert np.isinf(perturbation_scores(snapped.x).encoding).all()


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y


@pytest.mark.parametrize("rate", [0.01, 0.1])
def test_tabular_feature_triggers_are_a_backdoor_signature(rate: float) -> None:
    x, y = _breast_cancer()
    poisoned = inject(x, y, "badnets", rate, seed=0, target=0, num_classes=2)
    result = scan_dataset(poisoned.x, poisoned.y)
    assert not result.verdict.passed and result.split_classes == [0]
    assert result.flagged[poisoned.poison].all()  # every stamped row
    assert result.flagged[~poisoned.poison].mean() <= 0.01
    found = result.details["feature_triggers"]["0"]
    assert found["rule"] == "shared extreme feature values" and found["members"] == int(poisoned.poison.sum())


def test_clean_tables_and_natural_repeated_extremes_are_not_triggers() -> None:
    x, y = _breast_cancer()
    clean = scan_dataset(x, y)
    assert clean.verdict.passed and clean.flagged.mean() <= 0.01 and "feature_triggers" not in clean.details
    # A capped sensor: class 1's largest values of one feature clipped to one value. The rows share an
    # extreme value and one label, but look like their own class without it: no trigger.
    capped = x.copy()
    column = capped[:, 3]
    top = np.flatnonzero(y == 1)[np.argsort(column[y == 1])[-12:]]
    capped[top, 3] = 2.5
    result = scan_dataset(capped, y)
    assert "feature_triggers" not in result.details and result.verdict.passed


def test_tabular_label_flips_are_judged_by_an_out_of_fold_classifier() -> None:
    from sklearn.metrics import roc_auc_score

    x, y = _breast_cancer()
    poisoned = inject(x, y, "label_flip", 0.05, seed=1, num_classes=2)
    result = scan_dataset(poisoned.x, poisoned.y)
    assert roc_auc_score(poisoned.poison, result.scores) >= 0.99
    assert result.details["label_classifier"]["passes"] == 2


def _standardised_split(loader: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x, y = loader(return_X_y=True)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-9)).astype(np.float32)
    xs, _, ys, _ = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    return xs, ys


@pytest.mark.parametrize(("name", "seed"), [("wine", 1), ("digits", 2)])
def test_natural_groups_of_clean_tables_are_not_backdoor_signatures(name: str, seed: int) -> None:
    """Wine (a 36-row class with two modes) and digits as a table (five near-identical 1s) once failed
    as backdoored: the neighbour test's group rules, which the label classifier now has to confirm."""
    from sklearn import datasets

    x, y = _standardised_split(getattr(datasets, f"load_{name}"), seed)
    result = scan_dataset(x, y)
    assert result.verdict.passed, result.verdict
    assert result.split_classes == [] and result.flagged.mean() <= 0.01
    dismissed = [s for v in result.views for s in v.class_stats.values() if "dismissed" in s]
    assert dismissed, "the group the neighbour test found is reported as dismissed, not silently dropped"
