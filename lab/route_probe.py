"""Would flatter expert weights carry better to unseen sources? (issue #17)

Where a category has several experts in a language, a router (or the domain head) says how much each counts
(models/text/network.py `_expert_weights`); a text from a source no expert was trained on is still routed to
the one it resembles most. This re-scores every OOD fold's left-out parts (models/text/ood.py `FOLDS`, fold
models from `reelstream eval models --ood --folds-dir DIR`) with the weights raised to 1/T and renormalised
(softmax(logits / T): T = 1 as trained, "inf" every expert of the language alike), next to the TF-IDF floor
fitted as the OOD table fits it, and picks T leaving one fold out (`lab.blend_probe.leave_one_fold_out`).
Prints JSON.

    python -m lab.route_probe --folds-dir .ood-folds
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch

from lab.blend_probe import leave_one_fold_out, metric_lines
from models.text.comments import CommentModels
from models.text.config import ModerationSettings
from models.text.data import default_data_dir
from models.text.ood import FOLDS, baseline_report, left_out, report, score_parts

TEMPERATURES = ("0.5", "1", "2", "4", "inf")


def flatten_routing(net: torch.nn.Module, temperature: str) -> None:
    """Make `net` weigh its experts by softmax(routing logits / T): its trained weights to the power 1/T."""
    trained = type(net)._expert_weights
    power = 0.0 if temperature == "inf" else 1 / float(temperature)

    def weights(
        self: torch.nn.Module,
        cat: str,
        logits: torch.Tensor,
        p_dom: torch.Tensor,
        is_zh: torch.Tensor,
        routing: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        w = trained(self, cat, logits, p_dom, is_zh, routing)
        w = torch.where(w > 0, w.clamp_min(1e-30) ** power, torch.zeros_like(w))  # experts of other languages stay 0
        return w / w.sum(-1, keepdim=True)

    net._expert_weights = types.MethodType(weights, net)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=default_data_dir())
    args = ap.parse_args()
    lines: list[dict] = []  # one per left-out part and label: fold, floor, the metric per temperature
    for n, fold in enumerate(FOLDS):
        parts, floors = left_out(args.data, fold), baseline_report(args.data, fold)
        models = CommentModels.load(ModerationSettings(model_dir=str(args.folds_dir / f"fold-{n}"), device="cpu"))
        per_t = {}
        for t in TEMPERATURES:
            for member in models.members:  # from the class's weights each time: the settings do not compound
                flatten_routing(member, t)
            per_t[t] = report(score_parts(models, parts))
        lines += metric_lines(n, floors, per_t, "1")
    held = leave_one_fold_out(lines, list(TEMPERATURES), "1", len(FOLDS))
    print(json.dumps({"lines": lines, "leave_one_fold_out": held}))


if __name__ == "__main__":
    main()
