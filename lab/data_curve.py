"""What are the validation rows worth as training rows? (issue #17)

The shipped model trains on the train split of each `train.jsonl` (90%); the validation split only chooses C,
blends and epochs, so a model judged on a dataset's own test split has seen a tenth fewer of its rows than a
floor fitted on the whole file. This estimates what that tenth is worth from the slope of the learning curve
just below it: per dataset and label, the TF-IDF floor (models/text/baseline.py) fitted on the train split
against the floor fitted on 90% of it (SEEDS random subsets), both scored on the validation split. Prints
JSON: per line the full fit's metric, the subsets' and the gain (full minus the subsets' mean).

    python -m lab.data_curve
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from models.text.baseline import baseline_report
from models.text.data import default_data_dir, load_splits
from models.text.metrics import primary_metric

SEEDS = 3
FRACTION = 0.9
SKIPPED = ("jigsaw_toxic_sample",)  # a smoke-test sample, not one of the judged lines


def curve(seeds: int = SEEDS, fraction: float = FRACTION) -> dict[str, dict]:
    """Per `dataset/label` of the validation split: {"full", "subsets", "gain"} of the primary metric."""
    train, val = load_splits(default_data_dir())
    train, val = [e for e in train if e.dataset not in SKIPPED], [e for e in val if e.dataset not in SKIPPED]
    full = baseline_report(train, val)
    subsets = []
    for seed in range(seeds):  # the same share of every dataset's rows
        kept = []
        for ds in full:
            rows = [e for e in train if e.dataset == ds]
            keep = np.random.default_rng(seed).permutation(len(rows))[: int(fraction * len(rows))]
            kept += [rows[i] for i in np.sort(keep)]
        subsets.append(baseline_report(kept, val))
    out: dict[str, dict] = {}
    for ds, labels in full.items():
        for label, report in labels.items():
            key = primary_metric(label)
            subs = [s[ds][label][key] for s in subsets]
            out[f"{ds}/{label}"] = {"full": round(report[key], 4), "subsets": [round(s, 4) for s in subs],
                                    "gain": round(report[key] - float(np.mean(subs)), 4)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--fraction", type=float, default=FRACTION)
    args = ap.parse_args()
    lines = curve(args.seeds, args.fraction)
    gains = [v["gain"] for v in lines.values()]
    print(json.dumps({"fraction": args.fraction, "seeds": args.seeds, "lines": lines,
                      "mean_gain": round(float(np.mean(gains)), 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
