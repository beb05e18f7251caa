"""Would a change to the training recipe hold up out of distribution? (issue #17)

Trains the out-of-distribution folds (models/text/ood.py `FOLDS`) with some TrainOptions fields changed
(`--set FIELD=VALUE`, the value read as JSON: `--set refit_deep_on_validation=true`, `--set seed=20240608`)
into --folds-dir (a fold whose weights are there already is kept), scores each fold's left-out parts with
them and with the shipped recipe's fold models (--reference-dir: the folds of `reelstream eval models --ood
--folds-dir DIR`), next to the floors of --ood-json (that run's `--json` output). `--combine` picks the recipe
leaving one fold out and per category (lab/blend_probe.py, lab/linear_probe.py). A run with only `--set
seed=...` measures how far the shipped recipe's lines move with its random seed alone: the noise any other
change must beat. `--ensemble-with DIR` (repeatable: fold models of further seeds) adds an "ensemble" line:
the mean of the scores (category scores, sentiment probabilities) of the reference, the changed and those
fold models, as averaging them at serving time would score. Prints JSON.

    python -m lab.recipe_probe --folds-dir .deep --reference-dir .ood-folds --ood-json ood.json \\
        --set refit_deep_on_validation=true --fold 0 > f0.json   # one per fold (~7-14 minutes each here)
    python -m lab.recipe_probe --combine f0.json f1.json f2.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lab.blend_probe import leave_one_fold_out, metric_lines
from lab.linear_probe import per_category
from models.text.comments import WEIGHTS_FILE, CommentModels
from models.text.config import ModerationSettings
from models.text.data import default_data_dir
from models.text.ood import FOLDS, left_out, report, score_parts, train_fold
from models.text.training import TrainOptions


def overrides(pairs: list[str]) -> dict[str, object]:
    """`FIELD=VALUE` pairs as TrainOptions fields (values as JSON, lists as tuples, else as text); unknown
    fields are refused."""
    fields = set(TrainOptions.__dataclass_fields__)
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[name] = tuple(parsed) if isinstance(parsed, list) else parsed  # TrainOptions holds tuples
    return out


def fold_lines(folds_dir: Path, reference_dir: Path, data: Path, floors: dict, n: int, changed: dict,
               ensemble_with: Sequence[Path] = ()) -> list[dict]:  # fmt: skip
    """The fold's lines: floor, the shipped recipe's fold model ("trained"), the changed recipe's ("changed") and,
    given `ensemble_with`, the mean of all their scores ("ensemble")."""
    if not (folds_dir / f"fold-{n}" / WEIGHTS_FILE).exists():
        train_fold(data, folds_dir / f"fold-{n}", FOLDS[n], epochs=TrainOptions.epochs, threads=1, overrides=changed)
    parts = left_out(data, FOLDS[n])
    scored = {}
    for name, d in (("trained", reference_dir), ("changed", folds_dir), *((str(d), d) for d in ensemble_with)):
        models = CommentModels.load(ModerationSettings(model_dir=str(d / f"fold-{n}"), device="cpu"))
        scored[name] = score_parts(models, parts)
    per_recipe = {name: report(scored[name]) for name in ("trained", "changed")}
    if ensemble_with:
        per_recipe["ensemble"] = report({sel: {**scored["trained"][sel], **{
            key: np.mean([s[sel][key] for s in scored.values()], axis=0) for key in ("scores", "sentiment")}}
            for sel in parts})  # fmt: skip
    return metric_lines(n, floors, per_recipe, "trained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path, help="Where the changed recipe's fold models are (trained if absent).")
    ap.add_argument("--reference-dir", type=Path, help="The shipped recipe's fold models.")
    ap.add_argument("--ood-json", type=Path, help="`reelstream eval models --ood --json` output (the floors).")
    ap.add_argument("--set", dest="pairs", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--fold", type=int, help="Train and score this fold only (its lines as JSON).")
    ap.add_argument("--combine", type=Path, nargs="+", help="Per-fold outputs: pick a recipe leaving one fold out.")
    ap.add_argument("--ensemble-with", type=Path, action="append", default=[], metavar="DIR",
                    help="Fold models to average with the reference and the changed ones.")  # fmt: skip
    ap.add_argument("--data", type=Path, default=default_data_dir())
    args = ap.parse_args()
    if args.combine:
        runs = [json.loads(f.read_text()) for f in args.combine]
        lines = [line for run in runs for line in run["lines"]]
        recipes = ["trained", "changed", *(["ensemble"] if all("ensemble" in line for line in lines) else [])]
        print(json.dumps({"set": runs[0]["set"], "lines": lines,
                          "leave_one_fold_out": leave_one_fold_out(lines, recipes, "trained", len(FOLDS)),
                          "per_category": per_category(lines, recipes)}))  # fmt: skip
        return
    if args.folds_dir is None or args.reference_dir is None or args.ood_json is None:
        ap.error("--folds-dir, --reference-dir and --ood-json are needed unless --combine")
    changed = overrides(args.pairs)
    floors = json.loads(args.ood_json.read_text())["ood"]["lines"]
    folds = range(len(FOLDS)) if args.fold is None else [args.fold]
    lines = [line for n in folds
             for line in fold_lines(args.folds_dir, args.reference_dir, args.data, floors, n, changed,
                                    args.ensemble_with)]  # fmt: skip
    print(json.dumps({"set": changed, "lines": lines}))


if __name__ == "__main__":
    main()
