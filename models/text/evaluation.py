"""`reelstream eval models`: the shipped model against the TF-IDF+LR baseline on the same validation split,
and the actions its thresholds take there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.text.comments import CommentModels
from models.text.data import SPLIT_SEED, VALIDATION_FRACTION, Example, load_splits
from models.text.metrics import primary_metric
from models.text.training import validation_report

Report = dict[str, dict[str, dict[str, float]]]


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


def actions_report(models: CommentModels, examples: Sequence[Example]) -> dict[str, dict[str, float | int | None]]:
    """Per dataset: the share of its texts the thresholds block and send to review, and where it labels
    `offensive`, the precision of `block` and the share of offensive texts blocked (the figures the
    thresholds are judged by: benign reviews and tweets should almost never be blocked)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for ds in dict.fromkeys(e.dataset for e in examples):
        rows = [e for e in examples if e.dataset == ds]
        action = np.array([s.action for s in models.score([e.text for e in rows], [e.lang for e in rows])])
        blocked = action == "block"
        entry: dict[str, float | int | None] = {
            "n": len(rows), "blocked": round(float(blocked.mean()), 4), "review": round(float((action == "review").mean()), 4),
        }  # fmt: skip
        if all("offensive" in e.labels for e in rows):
            y = np.array([e.labels["offensive"] for e in rows])
            entry["block_precision"] = round(float(y[blocked].mean()), 4) if blocked.any() else None
            entry["offensive_blocked"] = round(float(blocked[y == 1].mean()), 4) if y.any() else None
        out[ds] = entry
    return out


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
        # True when the experts' linear heads (the deep view) were refit on the validation rows after the choices
        # (training's refit_on_validation, refit_deep_on_validation): these lines then measure a fit, not unseen
        # data; the card's validation table holds the lines taken before the refit.
        "validation_in_linear_fit": models.net.config.linear_fit != "train",
        "validation_in_deep_fit": models.net.config.deep_fit != "train",
        "members": len(models.members),  # deep views whose scores are averaged (TrainOptions.members)
        "baseline": "per-dataset char n-gram TF-IDF (en 2-5, zh 1-4, char_wb, sublinear) + LogisticRegression(C=4)",
        **compare(model_report, baseline),
        "actions": actions_report(models, val),
    }
