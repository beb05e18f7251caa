"""The classic comparison point: char n-gram TF-IDF + logistic regression, one per dataset and label.

Needs scikit-learn (evaluation only; nothing at serving time imports this module).
"""

from __future__ import annotations

import numpy as np

from models.text.data import Example
from models.text.metrics import label_report


def _pipeline(lang: str):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    ngrams = (1, 4) if lang == "zh" else (2, 5)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=ngrams, sublinear_tf=True, min_df=2, max_features=300_000)
    return make_pipeline(vec, LogisticRegression(C=4.0, max_iter=2000))


def baseline_report(
    train: list[Example], val: list[Example]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per dataset and label, fit on that dataset's train rows and score its validation rows."""
    report: dict[str, dict[str, dict[str, float]]] = {}
    for ds in dict.fromkeys(e.dataset for e in val):
        tr = [e for e in train if e.dataset == ds]
        va = [e for e in val if e.dataset == ds]
        report[ds] = {}
        for label in sorted({k for e in tr for k in e.labels}):
            scored = fit_and_score([e for e in tr if label in e.labels], [e for e in va if label in e.labels], label, ds)
            if scored is not None:
                report[ds][label] = scored
    return report


def fit_and_score(train: list[Example], test: list[Example], label: str, dataset: str) -> dict[str, float] | None:
    """One baseline fitted on `train`'s `label` and scored on `test` (of `dataset`); None if either side
    cannot be scored (one class only, nothing to test)."""
    proba = fit_predict(train, test, label)
    if proba is None:
        return None
    return label_report(label, dataset, np.array([e.labels[label] for e in test]), proba)


def fit_predict(train: list[Example], test: list[Example], label: str) -> np.ndarray | None:
    """One baseline fitted on `train`'s `label`: `test`'s probabilities (sentiment: (n, 3) over negative, neutral,
    positive; else (n,) of the label); None if either side cannot be scored (one class only, nothing to test)."""
    y_tr = np.array([e.labels[label] for e in train])
    if len(set(y_tr.tolist())) < 2 or not test:
        return None
    model = _pipeline(train[0].lang).fit([e.text for e in train], y_tr)
    proba = model.predict_proba([e.text for e in test])
    if label == "sentiment":
        full = np.zeros((len(test), 3))
        full[:, model.classes_] = proba
        return full
    return proba[:, list(model.classes_).index(1)]
