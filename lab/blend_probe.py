"""Would blends chosen out of distribution beat the ones chosen on the validation split? (issue #17)

Each head's logit is `blend * linear + (1 - blend) * deep`, blend chosen per head on the in-distribution
validation split (models/text/network.py). This re-scores every OOD fold's left-out parts (models/text/ood.py
`FOLDS`, fold models from `reelstream eval models --ood --folds-dir DIR`) with those blends and with one
global blend per setting, then picks a setting leaving one fold out (chosen on the other two folds' lines,
judged on the left-out fold's), so the choice is not judged on the lines it was made on. Prints JSON.

    python -m lab.blend_probe --folds-dir .ood-folds --ood-json ood.json   # ood.json: `eval models --ood --json`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from models.text.comments import CommentModels
from models.text.config import ModerationSettings
from models.text.data import default_data_dir
from models.text.metrics import primary_metric
from models.text.ood import FOLDS, left_out, report, score_parts

SETTINGS = ("chosen", 0.0, 0.3, 0.5, 0.7, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--ood-json", type=Path, required=True, help="`reelstream eval models --ood --json` output (the floors).")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    args = ap.parse_args()
    floors = json.loads(args.ood_json.read_text())["ood"]["lines"]
    lines: list[dict] = []  # one per left-out part and label: fold, floor, metric per setting
    for n, fold in enumerate(FOLDS):
        models = CommentModels.load(ModerationSettings(model_dir=str(args.folds_dir / f"fold-{n}"), device="cpu"))
        chosen = [m.blend.clone() for m in models.members]  # each member's own blends
        parts = left_out(args.data, fold)
        per_setting = {}
        for s in SETTINGS:
            with torch.no_grad():
                for m, blend in zip(models.members, chosen):
                    m.blend.copy_(blend if s == "chosen" else torch.full_like(blend, s))
            per_setting[str(s)] = report(score_parts(models, parts))
        lines += metric_lines(n, floors, per_setting, "chosen")

    held = leave_one_fold_out(lines, [str(s) for s in SETTINGS], "chosen", len(FOLDS))
    print(json.dumps({"lines": lines, "leave_one_fold_out": held}))


def metric_lines(n: int, floors: dict, per_setting: dict[str, dict], reference: str) -> list[dict]:
    """One line per left-out part and label of fold `n` (the labels `reference`'s report has): its floor and its
    primary metric under each setting (per_setting: setting -> models.text.ood.report). `floors[sel][label]`:
    the baseline's metrics, or an `eval models --ood` line holding them under "baseline"."""
    lines = []
    for sel, labels in per_setting[reference].items():
        for label in labels:
            key, floor = primary_metric(label), floors[sel][label]
            lines.append({"fold": n, "line": f"{sel}/{label}", "floor": floor.get("baseline", floor)[key],
                          **{s: r[sel][label][key] for s, r in per_setting.items()}})  # fmt: skip
    return lines


def leave_one_fold_out(lines: Sequence[dict], settings: Sequence[str], reference: str, folds: int) -> list[dict]:
    """Per fold, the setting with the largest mean margin over the floor on the other folds' lines, and this
    fold's margin and lines above the floor with it and with `reference` (lines: {"fold", "floor", setting: metric})."""

    def margin(rows: list[dict], s: str) -> float:
        return sum(r[s] - r["floor"] for r in rows) / len(rows)

    held = []
    for n in range(folds):
        other, mine = [r for r in lines if r["fold"] != n], [r for r in lines if r["fold"] == n]
        pick = max(settings, key=lambda s: margin(other, s))
        held.append({"fold": n, "picked": pick, "margin_picked": round(margin(mine, pick), 4),
                     f"margin_{reference}": round(margin(mine, reference), 4),
                     "beats_floor_picked": sum(r[pick] > r["floor"] for r in mine),
                     f"beats_floor_{reference}": sum(r[reference] > r["floor"] for r in mine), "lines": len(mine)})  # fmt: skip
    return held


if __name__ == "__main__":
    main()
