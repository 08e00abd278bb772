"""The peers, run the way their documentation and papers intend, with the known pitfalls handled.

* ART's ``ActivationDefence`` and ``SpectralSignatureDefense`` read activations from the last
  top-level module of the model. For a plain ``nn.Sequential`` that is the logits layer (what the
  *default* configurations get, as a user would); the *tuned* ones get a classifier wrapping the
  trunk, so the last module is the penultimate layer the papers use.
* ``SpectralSignatureDefense``'s ``expected_pp_poison`` defaults to 0.33 per class; tuned: the true
  poison fraction of the most-poisoned class.
* ``ActivationDefence``'s ``relative-size`` analysis crashes under NumPy 2 (``cluster_id in
  poison_clusters`` on a tuple of arrays); tuned AC applies ART's relative-size rule to ART's own
  clusters here, with the size threshold just above the true poison fraction.
* ART gives flags only; for ROC figures each gets a continuous score from its own internals
  (AC: margin towards the cluster it flags in its reduced space; SS: the within-class quantile of
  ART's ``spectral_signature_scores``, which is what its cutoff thresholds).
* ART imports ``packaging`` without declaring it (it is in the ``bench`` extra).
* cleanlab's ``find_label_issues`` gets out-of-fold predicted probabilities (5-fold logistic
  regression on the same feature views Cairn uses).
"""

from typing import Any

import numpy as np


def _classifier(model: Any, shape: tuple[int, ...], classes: int) -> Any:
    import torch
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes,
                             clip_values=None, device_type="cpu")


def _onehot(y: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[y]


def art_activation_clustering(model: Any, x: np.ndarray, y: np.ndarray, classes: int, *, tuned: bool,
                              poison_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from art.defences.detector.poison import ActivationDefence

    from benchmarks.poisoning.victims import penultimate

    net = penultimate(model) if tuned else model
    defence = ActivationDefence(_classifier(net, tuple(x.shape[1:]), classes), x, _onehot(y, classes))
    _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
    flags = np.asarray(is_clean) == 0
    scores = np.zeros(len(y))
    for label in range(classes):
        members = np.flatnonzero(y == label)
        if len(members) == 0:
            continue
        clusters = np.asarray(defence.clusters_by_class[label])
        reduced = np.asarray(defence.red_activations_by_class[label])
        sizes = np.bincount(clusters, minlength=2)
        small = int(np.argmin(sizes))
        if tuned:  # ART's relative-size rule (its own implementation fails under NumPy 2)
            threshold = min(0.5, poison_fraction * 1.5 + 0.01)
            flagged_here = sizes[small] / sizes.sum() < threshold
            flags[members] = (clusters == small) & flagged_here
        centre_small = reduced[clusters == small].mean(0) if sizes[small] else reduced.mean(0)
        centre_big = reduced[clusters != small].mean(0)
        margin = ((reduced - centre_big) ** 2).sum(1) - ((reduced - centre_small) ** 2).sum(1)
        spread = np.abs(margin).max() or 1.0
        scores[members] = flags[members] + 0.5 * (margin / spread)
    return scores, flags


def art_spectral_signatures(model: Any, x: np.ndarray, y: np.ndarray, classes: int, *, tuned: bool,
                            poison_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from art.defences.detector.poison import SpectralSignatureDefense

    from benchmarks.poisoning.victims import penultimate

    net = penultimate(model) if tuned else model
    classifier = _classifier(net, tuple(x.shape[1:]), classes)
    kwargs = {"expected_pp_poison": min(1.0, poison_fraction)} if tuned else {}
    defence = SpectralSignatureDefense(classifier, x, _onehot(y, classes), **kwargs)
    _, is_clean = defence.detect_poison()
    flags = np.asarray(is_clean) == 0
    activations = classifier.get_activations(x, layer=len(classifier.layer_names) - 1, batch_size=256)
    activations = np.reshape(activations, (len(x), -1))
    scores = np.zeros(len(y))
    for label in range(classes):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            continue
        raw = SpectralSignatureDefense.spectral_signature_scores(activations[members])[:, 0]
        scores[members] = np.argsort(np.argsort(raw)) / (len(members) - 1)
    return scores, flags


def cleanlab_issues(views: list[np.ndarray], y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate(views, axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, features, y, cv=folds, method="predict_proba")
    flags = find_label_issues(labels=y, pred_probs=probabilities)
    scores = 1.0 - get_label_quality_scores(y, probabilities)
    return scores, np.asarray(flags, dtype=bool)
