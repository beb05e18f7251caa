"""The classic comparison point: char n-gram TF-IDF + logistic regression, one per dataset and label.

Needs scikit-learn (evaluation only; nothing at serving time imports this module).
"""

from __future__ import annotations

import numpy as np

from models.text.data import BINARY_SENTIMENT, Example
from models.text.metrics import binary_report, sentiment_report


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
            tr_l = [e for e in tr if label in e.labels]
            va_l = [e for e in va if label in e.labels]
            y_tr = np.array([e.labels[label] for e in tr_l])
            y_va = np.array([e.labels[label] for e in va_l])
            if len(set(y_tr.tolist())) < 2 or not va_l:
                continue
            model = _pipeline(tr_l[0].lang).fit([e.text for e in tr_l], y_tr)
            proba = model.predict_proba([e.text for e in va_l])
            if label == "sentiment":
                full = np.zeros((len(va_l), 3))
                full[:, model.classes_] = proba
                report[ds][label] = sentiment_report(y_va, full, ds in BINARY_SENTIMENT)
            else:
                report[ds][label] = binary_report(y_va, proba[:, list(model.classes_).index(1)])
    return report
