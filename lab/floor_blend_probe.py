"""Would the network blended with the TF-IDF floor's own model beat the floor out of distribution? (issue #17)

The floor (char n-gram TF-IDF + logistic regression, models/text/baseline.py) sees characters, the network
word n-grams: on the OOD lines each is ahead on some (models/text/weights/MODEL_CARD.md). This scores every
OOD fold's left-out parts (models/text/ood.py `FOLDS`, fold models from `reelstream eval models --ood
--folds-dir DIR`) with the fold model and with the floor fitted exactly as the OOD table fits it
(`ood.floor_sets`), mixed as w * logit(network) + (1 - w) * logit(floor) (sentiment: w * probabilities +
(1 - w) * probabilities), for each w in SETTINGS, and picks w leaving one fold out (on the other two folds'
margins over the floor, judged on the left-out fold's), as lab/blend_probe.py does. Prints JSON.

    python -m lab.floor_blend_probe --folds-dir .ood-folds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lab.blend_probe import leave_one_fold_out
from models.text.baseline import fit_predict
from models.text.comments import CommentModels
from models.text.config import CATEGORIES, ModerationSettings
from models.text.data import BINARY_SENTIMENT, default_data_dir
from models.text.evaluation import primary_metric
from models.text.metrics import binary_report, sentiment_report
from models.text.ood import FOLDS, floor_sets, left_out, score_parts

SETTINGS = (1.0, 0.8, 0.65, 0.5, 0.35, 0.2, 0.0)  # the network's weight: 1.0 is the network alone, 0.0 the floor


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_dir())
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
                rows = [i for i, e in enumerate(examples) if label in e.labels]
                y = np.array([e.labels[label] for e in part])
                metric = primary_metric(label)
                line = {"fold": n, "line": f"{sel}/{label}", "metric": metric}
                for w in SETTINGS:
                    if label == "sentiment":
                        mixed = w * scored[sel]["sentiment"][rows] + (1 - w) * floor
                        line[str(w)] = sentiment_report(y, mixed, sel.partition(":")[0] in BINARY_SENTIMENT)[metric]
                    else:
                        net = scored[sel]["scores"][rows, CATEGORIES.index(label)]
                        mixed = 1 / (1 + np.exp(-(w * _logit(net) + (1 - w) * _logit(floor))))
                        line[str(w)] = binary_report(y, mixed)[metric]
                lines.append({**line, "floor": line["0.0"]})

    held = leave_one_fold_out(lines, [str(s) for s in SETTINGS if s > 0], "1.0", len(FOLDS))
    print(json.dumps({"settings": SETTINGS, "lines": lines, "leave_one_fold_out": held}))


if __name__ == "__main__":
    main()
