"""Would the network blended with the TF-IDF floor's own model beat the floor out of distribution? (issue #17)

The floor (char n-gram TF-IDF + logistic regression, models/text/baseline.py) sees characters, the network
word n-grams: on the OOD lines each is ahead on some (models/text/weights/MODEL_CARD.md). This scores every
OOD fold's left-out parts (models/text/ood.py `FOLDS`, fold models from `reelstream eval models --ood
--folds-dir DIR`) with the fold model and with the floor fitted exactly as the OOD table fits it
(`ood.floor_sets`), mixed as w * logit(network) + (1 - w) * logit(floor) (sentiment: w * probabilities +
(1 - w) * probabilities), for each w in SETTINGS, and picks w leaving one fold out (on the other two folds'
margins over the floor, judged on the left-out fold's), as lab/blend_probe.py does. Prints JSON.

    python -m lab.floor_blend_probe --folds-dir .ood-folds

`--partner pooled` blends with a logistic regression on the fold model's own TF-IDF features instead (plain
C 4 on the floor's rows: every source of the label and language pooled, as the floor is): a head the
network could carry in its linear view at no featurizing cost. The margins are still over the floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax

from lab.blend_probe import leave_one_fold_out
from models.text.baseline import fit_predict
from models.text.comments import CommentModels
from models.text.config import CATEGORIES, ModerationSettings
from models.text.data import Example, default_data_dir
from models.text.linear import LinearTask, fit_task, tfidf_matrix
from models.text.metrics import label_report, primary_metric
from models.text.ood import FOLDS, floor_sets, left_out, score_parts
from models.text.training import _FeatureStore

SETTINGS = (1.0, 0.8, 0.65, 0.5, 0.35, 0.2, 0.0)  # the network's weight: 1.0 is the network alone, 0.0 the floor


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def pooled_predict(models: CommentModels, fit_on: list[Example], part: list[Example], label: str) -> np.ndarray:
    """A plain C 4 logistic regression on the model's TF-IDF features (its featurizer and idf), fitted on
    `fit_on`'s `label`: `part`'s probabilities (sentiment: (n, 3); else (n,))."""
    store = _FeatureStore(models.featurizer, fit_on + part, models.max_text_chars).store()
    idf = models.net.idf.cpu().numpy()
    x, used = tfidf_matrix(store, np.arange(len(fit_on)), idf)
    x_part, _ = tfidf_matrix(store, np.arange(len(fit_on), len(fit_on) + len(part)), idf, used)
    y = np.array([e.labels[label] for e in fit_on])
    if label == "sentiment":
        w, b = fit_task(x, LinearTask(label, np.arange(len(y)), [0, 1, 2], y.astype(np.int64), multiclass=True))
        return softmax(x_part @ w + b, axis=1)
    w, b = fit_task(x, LinearTask(label, np.arange(len(y)), [0], y[:, None].astype(np.float64), multiclass=False))
    return expit(x_part @ w + b)[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--partner", choices=("floor", "pooled"), default="floor", help="What the network is blended with.")
    args = ap.parse_args()
    lines: list[dict] = []  # one per left-out part and label: fold, and the metric per setting
    for n, fold in enumerate(FOLDS):
        models = CommentModels.load(ModerationSettings(model_dir=str(args.folds_dir / f"fold-{n}"), device="cpu"))
        scored = score_parts(models, left_out(args.data, fold))
        for sel, labels in floor_sets(args.data, fold).items():
            examples = scored[sel]["examples"]
            for label, (fit_on, part) in labels.items():
                floor = fit_predict(fit_on, part, label)
                if floor is None:
                    continue
                partner = floor if args.partner == "floor" else pooled_predict(models, fit_on, part, label)
                rows = [i for i, e in enumerate(examples) if label in e.labels]
                y = np.array([e.labels[label] for e in part])
                line = {"fold": n, "line": f"{sel}/{label}", "metric": primary_metric(label)}
                dataset = sel.partition(":")[0]
                sentiment = label == "sentiment"
                net = scored[sel]["sentiment"][rows] if sentiment else scored[sel]["scores"][rows, CATEGORIES.index(label)]
                for w in SETTINGS:
                    if sentiment:
                        mixed = w * net + (1 - w) * partner
                    else:
                        mixed = 1 / (1 + np.exp(-(w * _logit(net) + (1 - w) * _logit(partner))))
                    line[str(w)] = label_report(label, dataset, y, mixed)[line["metric"]]
                lines.append({**line, "floor": label_report(label, dataset, y, floor)[line["metric"]]})

    held = leave_one_fold_out(lines, [str(s) for s in SETTINGS if s > 0], "1.0", len(FOLDS))
    print(json.dumps({"settings": SETTINGS, "lines": lines, "leave_one_fold_out": held}))


if __name__ == "__main__":
    main()
