"""`reelstream eval models`: the shipped model against the TF-IDF+LR baseline on the same validation split."""

from __future__ import annotations

from pathlib import Path

from models.text.comments import CommentModels
from models.text.data import SPLIT_SEED, VALIDATION_FRACTION, load_splits
from models.text.training import validation_report

Report = dict[str, dict[str, dict[str, float]]]


def primary_metric(label: str) -> str:
    """The number each line is judged by: accuracy for sentiment, ROC AUC for moderation labels."""
    return "accuracy" if label == "sentiment" else "auc"


def compare(model: Report, baseline: Report | None) -> dict:
    """Per dataset and label: both metric sets and whether the model beats the baseline's primary metric."""
    lines: dict = {}
    beats, total = 0, 0
    for ds, labels in model.items():
        lines[ds] = {}
        for label, m in labels.items():
            entry: dict = {"primary": primary_metric(label), "model": m}
            b = (baseline or {}).get(ds, {}).get(label)
            if b is not None:
                key = primary_metric(label)
                entry["baseline"] = b
                entry["delta"] = m[key] - b[key]
                entry["beats_baseline"] = bool(m[key] > b[key])
                beats += entry["beats_baseline"]
                total += 1
            lines[ds][label] = entry
    return {"lines": lines, "beats_baseline": f"{beats}/{total}"}


def evaluate(models: CommentModels, data_dir: Path, with_baseline: bool = True) -> dict:
    """One JSON-ready object: model and baseline metrics per dataset and label on the validation split."""
    train, val = load_splits(data_dir)
    model_report = validation_report(models, val)
    baseline = None
    if with_baseline:
        from models.text.baseline import baseline_report

        baseline = baseline_report(train, val)
    return {
        "model_version": models.model_version,
        "split": {"seed": SPLIT_SEED, "validation_fraction": VALIDATION_FRACTION, "data_dir": str(data_dir)},
        "baseline": "per-dataset char n-gram TF-IDF (en 2-5, zh 1-4, char_wb, sublinear) + LogisticRegression(C=4)",
        **compare(model_report, baseline),
    }
