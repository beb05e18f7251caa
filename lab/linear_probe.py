"""Would the experts' linear heads fitted like the floor (plain L2, fixed C) hold up better out of distribution?
(issue #17)

Each expert's logistic regression (models/text/linear.py) takes its C, and NB scaling or not, from the
in-distribution validation split; the floor fits plain C = 4 and beats the network on some unseen Chinese
parts (models/text/weights/MODEL_CARD.md). This refits every expert's linear head of an OOD fold model
(models/text/ood.py `FOLDS`, fold models from `reelstream eval models --ood --folds-dir DIR`) on that fold's
training rows with each policy of POLICIES, keeps the deep view and routers as trained, chooses the blends
again on the fold's validation split as training does, and re-scores the fold's left-out parts. `--combine`
picks one policy leaving one fold out (lab/blend_probe.py), and per category and language judges each line
with the policy picked on the other folds' lines of its category (`per_category`). Prints JSON. "trained" is
the fold model as trained: since `TrainOptions.plain_linear` its `hate` experts are plain already, and every
refit keeps them so, as training does (before 2026-12-07's task idf run, refits chose them by validation
too). "as trained" refits with training's own grids (what differs from "trained" is the fp16 rounding the
fold model's heads went through); "as trained, then on train + validation" then fits every expert again with
its choice on the fold's training and validation rows (training.refit_experts, TrainOptions.refit_on_validation
since 2026-12-07; it won on every fold left out). `--policy` refits with some policies only; `--combine`
compares the policies every fold has.

    python -m lab.linear_probe --folds-dir .ood-folds --ood-json ood.json --fold 0 > f0.json   # one per fold
    python -m lab.linear_probe --combine f0.json f1.json f2.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from lab.blend_probe import leave_one_fold_out, metric_lines
from models.text.comments import CommentModels
from models.text.config import ModerationSettings
from models.text.data import DATASETS, Example, default_data_dir, load_splits, selected
from models.text.linear import C_GRID, NB_C_GRID, LinearTask, fit_linear_heads, joined
from models.text.network import TaskLayout
from models.text.ood import FOLDS, left_out, report, score_parts
from models.text.training import (
    TrainOptions,
    _counts,
    _FeatureStore,
    _linear_tasks,
    _Targets,
    choose_blend,
    expert_tasks,
    plain_columns,
    refit_experts,
)

# name -> (plain C grid, NB C grid, pooled, task idf, then on train + validation); "trained" keeps the heads as
# the fold model has them. Pooled: every sentiment expert is fitted on the sentiment rows of all sources of its
# language, as the floor is. Task idf: each head's features weighted by the idf of its own rows, as the floor's
# (linear.task_idf_ratio). Then on train + validation: once C and the blends are chosen on the validation
# split, every expert ("experts": as training does) or every linear head, routers and toxic too ("all"), is
# fitted again with its choice on the training and validation rows together, as the floor is fitted on both
# (ood.floor_sets).
POLICIES: dict[str, tuple[tuple[float, ...], tuple[float, ...], bool, bool, str]] = {
    "plain C4": ((4.0,), (), False, False, ""),
    "C4, NB by validation": ((4.0,), (4.0,), False, False, ""),
    "pooled sentiment, plain C4": ((4.0,), (), True, False, ""),
    "task idf": (C_GRID, NB_C_GRID, False, True, ""),
    "task idf, plain C4": ((4.0,), (), False, True, ""),
    "as trained": (C_GRID, NB_C_GRID, False, False, ""),
    "as trained, then on train + validation": (C_GRID, NB_C_GRID, False, False, "experts"),
    "as trained, then every linear head on train + validation": (C_GRID, NB_C_GRID, False, False, "all"),
}


def _pooled(tasks: list[LinearTask], examples: list[Example], layout: TaskLayout) -> list[LinearTask]:
    """Each sentiment expert's task on the sentiment rows of every source of its language."""
    lang = {d: lang for d, lang in zip(layout.domains, layout.domain_langs)}
    rows = {ln: np.flatnonzero([e.dataset in layout.sentiment and lang[e.dataset] == ln for e in examples]) for ln in ("en", "zh")}
    targets = np.array([e.labels.get("sentiment", -1) for e in examples], dtype=np.int64)
    return [
        dataclasses.replace(t, rows=rows[lang[t.name]], targets=targets[rows[lang[t.name]]])
        if t.multiclass and t.name in layout.sentiment else t
        for t in tasks
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FoldRows:
    """A fold's training and validation rows, featurized once by the fold model (every policy refits on them)."""

    train: list[Example]
    val: list[Example]
    store: _FeatureStore
    val_store: _FeatureStore


def fold_rows(models: CommentModels, data: Path, fold: tuple[str, ...]) -> FoldRows:
    """The rows the fold model was trained and validated on, featurized as training featurizes them."""
    net = models.net
    train_ex, val_ex = load_splits(data)
    train_ex = [e for e in train_ex if not selected(e, fold)]
    val_ex = [e for e in val_ex if not selected(e, fold)]
    pieces = None if models.pieces is None else (models.pieces, net.static.weight.detach().cpu())
    store = _FeatureStore(models.featurizer, train_ex, models.max_text_chars, pieces=pieces)
    val_store = _FeatureStore(models.featurizer, val_ex, models.max_text_chars, pieces=pieces)
    mean, std = net.static_mean.cpu().numpy(), net.static_std.cpu().numpy()
    store.standardize(mean, std, net.config.static_scale)
    val_store.standardize(mean, std, net.config.static_scale)
    return FoldRows(train_ex, val_ex, store, val_store)


def refit(
    models: CommentModels,
    rows: FoldRows,
    grid: tuple[float, ...],
    nb_grid: tuple[float, ...],
    pooled: bool,
    task_idf: bool = False,
    then_both: str = "",
) -> None:
    """Refit every dataset expert's linear head of `models.net` on the fold's training rows, in place (C from
    the grids on the fold's validation rows, as training chooses it; one value: that value); `then_both`: then
    once more with those choices on the training and validation rows, the blends kept ("experts": the experts,
    "all": routers and toxic head too, at the default C as training fits them)."""
    net = models.net
    tasks, val_tasks = expert_tasks(rows.train, net.layout), expert_tasks(rows.val, net.layout)
    if pooled:
        tasks, val_tasks = _pooled(tasks, rows.train, net.layout), _pooled(val_tasks, rows.val, net.layout)
    cols = sorted({c for t in tasks for c in t.columns})
    with torch.no_grad():
        net.linear.weight[:, cols] = 0.0
        net.static_linear[:, cols] = 0.0
    plain = plain_columns(net.layout, TrainOptions.plain_linear)
    chosen = fit_linear_heads(
        net.linear.weight.data, net.linear_bias, tasks, rows.store.store(), net.idf.cpu().numpy(), val_tasks,
        rows.val_store.store(), grid=grid, dense_weight=net.static_linear, nb_grid=nb_grid,
        plain_columns=plain, task_idf=task_idf,
    )  # fmt: skip
    for member in models.members:  # as training does after fitting the heads (they share the linear view)
        choose_blend(member, rows.val, models, _counts(rows.train))
    if then_both:
        both = rows.train + rows.val
        both_tasks = (expert_tasks(both, net.layout) if then_both == "experts"
                      else _linear_tasks(both, _Targets(both, net.layout), net.layout))  # fmt: skip
        if pooled:
            both_tasks = _pooled(both_tasks, both, net.layout)
        assert not task_idf, "the refit on train + validation fits without task idf, as training does"
        both_store = joined(rows.store.store(), rows.val_store.store())
        refit_experts(net, both_tasks, both_store, chosen, TrainOptions.plain_linear)


def fold_lines(folds_dir: Path, data: Path, floors: dict, n: int, policies: list[str]) -> list[dict]:
    """The fold's lines: floor, and the metric as trained and with each of `policies`."""
    fold = FOLDS[n]
    parts = left_out(data, fold)
    per_policy, rows = {}, None
    for name in ("trained", *policies):
        models = CommentModels.load(ModerationSettings(model_dir=str(folds_dir / f"fold-{n}"), device="cpu"))
        if name != "trained":
            rows = rows or fold_rows(models, data, fold)
            refit(models, rows, *POLICIES[name])
        per_policy[name] = report(score_parts(models, parts))
    return metric_lines(n, floors, per_policy, "trained")


def per_category(lines: list[dict], policies: list[str]) -> dict:
    """Per line, the policy with the largest summed margin over the floor on the other folds' lines of the same
    category and language, judged on this line; and per category, the policy all its lines pick."""
    lang = {d.name: d.lang for d in DATASETS}

    def category(line: dict) -> str:
        part, label = line["line"].rsplit("/", 1)
        return f"{label}/{lang[part.partition(':')[0]]}"

    def margin(rows: list[dict], p: str) -> float:
        return sum(r[p] - r["floor"] for r in rows)

    judged = []
    for line in lines:
        other = [r for r in lines if category(r) == category(line) and r["fold"] != line["fold"]]
        pick = max(policies, key=lambda p: margin(other, p))
        judged.append({"line": line["line"], "category": category(line), "picked": pick,
                       "margin_picked": round(line[pick] - line["floor"], 4),
                       "margin_trained": round(line["trained"] - line["floor"], 4)})  # fmt: skip
    chosen = {c: max(policies, key=lambda p: margin([r for r in lines if category(r) == c], p))
              for c in dict.fromkeys(map(category, lines))}  # fmt: skip
    return {"lines": judged, "beats_floor_picked": sum(j["margin_picked"] > 0 for j in judged),
            "beats_floor_trained": sum(j["margin_trained"] > 0 for j in judged),
            "mean_margin_picked": round(sum(j["margin_picked"] for j in judged) / len(judged), 4),
            "mean_margin_trained": round(sum(j["margin_trained"] for j in judged) / len(judged), 4),
            "chosen_on_all_lines": chosen}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds-dir", type=Path)
    ap.add_argument("--ood-json", type=Path, help="`reelstream eval models --ood --json` output (the floors).")
    ap.add_argument("--fold", type=int, help="Score this fold only (its lines as JSON).")
    ap.add_argument("--combine", type=Path, nargs="+", help="Per-fold outputs: pick a policy leaving one fold out.")
    ap.add_argument("--policy", action="append", choices=list(POLICIES), help="Refit with these only (default: all).")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    args = ap.parse_args()
    if args.combine:
        lines = [line for f in args.combine for line in json.loads(f.read_text())["lines"]]
        policies = ["trained", *[p for p in POLICIES if all(p in line for line in lines)]]
        held = leave_one_fold_out(lines, policies, "trained", len(FOLDS))
        print(json.dumps({"lines": lines, "leave_one_fold_out": held, "per_category": per_category(lines, policies)}))
        return
    if args.folds_dir is None or args.ood_json is None:
        ap.error("--folds-dir and --ood-json are needed unless --combine")
    floors = json.loads(args.ood_json.read_text())["ood"]["lines"]
    folds = range(len(FOLDS)) if args.fold is None else [args.fold]
    policies = args.policy or list(POLICIES)
    lines = [line for n in folds for line in fold_lines(args.folds_dir, args.data, floors, n, policies)]
    print(json.dumps({"lines": lines}))


if __name__ == "__main__":
    main()
