"""ROC AUC, macro-F1 and accuracy in numpy, so training and the model card need no scikit-learn."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def primary_metric(label: str) -> str:
    """The number each line is judged by: accuracy for sentiment, ROC AUC for moderation labels."""
    return "accuracy" if label == "sentiment" else "auc"


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form with tie-averaged ranks; NaN when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(y: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """Unweighted mean of per-class F1 over all `classes` labels."""
    f1s = []
    for c in range(classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def binary_report(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, macro-F1 and accuracy of a binary score at a fixed threshold."""
    pred = (np.asarray(score) >= threshold).astype(int)
    return {
        "auc": roc_auc(y, score),
        "macro_f1": macro_f1(np.asarray(y), pred, 2),
        "accuracy": float(np.mean(pred == np.asarray(y))),
        "n": int(len(y)),
    }


def sentiment_report(y: np.ndarray, probs: np.ndarray, binary: bool) -> dict[str, float]:
    """Binary sets (y in {0, 2}) are scored by positive vs negative, ignoring the neutral column;
    the 3-class set by argmax. AUC is positive-vs-rest (P(positive) for binary sets)."""
    y = np.asarray(y)
    probs = np.asarray(probs)
    if binary:
        pred = np.where(probs[:, 2] >= probs[:, 0], 2, 0)
        score = probs[:, 2] / np.maximum(probs[:, 0] + probs[:, 2], 1e-12)
        return {
            "auc": roc_auc(y == 2, score),
            "macro_f1": macro_f1(y // 2, pred // 2, 2),
            "accuracy": float(np.mean(pred == y)),
            "accuracy_3way_argmax": float(np.mean(probs.argmax(1) == y)),
            "n": int(len(y)),
        }
    pred = probs.argmax(1)
    return {
        "auc": roc_auc(y == 2, probs[:, 2]),
        "macro_f1": macro_f1(y, pred, 3),
        "accuracy": float(np.mean(pred == y)),
        "n": int(len(y)),
    }


def label_report(label: str, dataset: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Metrics of one dataset's `label`: sentiment_report of probabilities (n, 3) for sentiment (positive vs
    negative on the binary sentiment sets), else binary_report of the label's scores (n,)."""
    from models.text.data import BINARY_SENTIMENT

    if label == "sentiment":
        return sentiment_report(y, p, dataset in BINARY_SENTIMENT)
    return binary_report(y, p)
