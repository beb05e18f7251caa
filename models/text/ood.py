"""Out-of-distribution validation of the comment models, from train.jsonl only.

A validation split drawn from the same files as training overstated the models (12 of 13 lines above the
TF-IDF floor there, 8 of 13 on the datasets' own test splits). Here the same training recipe is run with
whole sources, or groups of one source, left out (`FOLDS`), and each left-out part is scored by the model
that never saw it:
- leave one dataset out where a category has two sources in a language (en offensive: Davidson / OLID,
  en hate: Davidson / HatEval, en sentiment: SST-2 / TweetEval, zh sentiment: three review sets);
- leave one target out inside a source that has only one (COLD by topic: race / gender / region; YouTube
  spam by video).
Every row of a left-out part is unseen (its train and validation rows alike). Thresholds are chosen on
these scores (`choose_thresholds`): the shipped model is trained on everything, so they are estimates of
how its scores behave on sources it has not seen, which is what production meets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.text.calibration import Calibration, Platt, brier, expected_calibration_error, fit_platt
from models.text.config import CATEGORIES, ModerationSettings, reaches
from models.text.data import Example, load_splits, selected

if TYPE_CHECKING:
    from models.text.comments import CommentModels

FOLDS: tuple[tuple[str, ...], ...] = (
    (
        "olid_offensive", "hateval_en", "tweeteval_sentiment", "waimai_10k",
        "youtube_spam:video=Eminem", "cold_offensive:topic=gender",
    ),
    ("davidson_hate_offensive", "sst2", "chnsenticorp_htl", "youtube_spam:video=Psy", "cold_offensive:topic=race"),
    ("online_shopping_10_cats", "youtube_spam:video=KatyPerry", "cold_offensive:topic=region"),
)  # fmt: skip


def left_out(data_dir: Path, selectors: Sequence[str], limit: int | None = None) -> dict[str, list[Example]]:
    """Per selector, every example it names (train and validation rows: none was trained on)."""
    train, val = load_splits(data_dir, limit)
    return {sel: [e for e in (*train, *val) if selected(e, (sel,))] for sel in selectors}


def train_fold(data_dir: Path, out_dir: Path, fold: Sequence[str], epochs: int, threads: int,
               limit: int | None = None, overrides: Mapping[str, object] | None = None) -> Path:  # fmt: skip
    """A model trained by the shipped recipe without the fold's parts, saved (with its card) to out_dir;
    `overrides` (TrainOptions fields) change the recipe (lab/recipe_probe.py)."""
    from models.text.training import TrainOptions, save, train

    opts = TrainOptions(epochs=epochs, threads=threads, limit_per_dataset=limit)
    opts = dataclasses.replace(opts, **(overrides or {}), exclude=tuple(fold))
    return save(train(data_dir, opts), out_dir)


def evaluate_ood(data_dir: Path, folds_dir: Path, epochs: int = 8, threads: int = 1, limit: int | None = None,
                 with_baseline: bool = True, languages: Mapping[str, frozenset[str]] | None = None) -> dict:  # fmt: skip
    """Every fold's model (trained into folds_dir/fold-N unless already there: ~7 minutes each on this
    machine's 2 cores), its left-out parts scored, next to the TF-IDF floor in the same setting, the
    calibration fitted on them where it carries to parts it was not fitted on (`calibration_check`,
    `calibration_carries`) and the thresholds chosen on the scores as served (`choose_thresholds`)."""
    from models.text.comments import WEIGHTS_FILE
    from models.text.evaluation import compare
    from models.text.network import TaskLayout

    scored: dict[str, dict] = {}
    baseline: dict[str, dict] = {}
    for n, fold in enumerate(FOLDS):
        fold_dir = folds_dir / f"fold-{n}"
        if not (fold_dir / WEIGHTS_FILE).exists():
            train_fold(data_dir, fold_dir, fold, epochs, threads, limit)
        scored.update(fold_scores(fold_dir, data_dir, fold, limit))
        if with_baseline:
            baseline.update(baseline_report(data_dir, fold, limit))
    layout = TaskLayout()
    langs = languages or {c: layout.languages(c) for c in CATEGORIES}
    check = calibration_check(scored, langs)
    calibration = fit_calibration(scored, langs, only=calibration_carries(check))
    calibrated = {sel: {**part, "scores": calibration.apply(part["scores"], part["langs"])} for sel, part in scored.items()}
    chosen = choose_thresholds(calibrated, langs)
    return {
        "folds": [list(f) for f in FOLDS],
        "rows": {sel: len(part["examples"]) for sel, part in scored.items()},
        **compare(report(scored), baseline if with_baseline else None),
        **chosen,
        "calibration": calibration.to_json(),
        "calibration_check": check,
        "cross_language": cross_language_check(scored, langs),
        "rules": {"block_precision": BLOCK_PRECISION, "benign_block_budget": BENIGN_BLOCK_BUDGET,
                  "review_budget": REVIEW_BUDGET},
    }  # fmt: skip


def fold_scores(models_dir: Path, data_dir: Path, fold: Sequence[str], limit: int | None = None) -> dict[str, dict]:
    """Per selector of a fold: its examples' labels, languages and the fold model's scores."""
    from models.text.comments import CommentModels

    models = CommentModels.load(ModerationSettings(model_dir=str(models_dir)))
    return score_parts(models, left_out(data_dir, fold, limit))


def score_parts(models: CommentModels, parts: Mapping[str, Sequence[Example]]) -> dict[str, dict]:
    """Per selector: its examples, and the models' category scores, sentiment and resolved languages."""
    out = {}
    for sel, examples in parts.items():
        scores, sentiment, langs = models.predict([e.text for e in examples], [e.lang for e in examples])
        out[sel] = {"examples": examples, "scores": scores, "sentiment": sentiment, "langs": langs}
    return out


def report(scored: Mapping[str, Mapping]) -> dict[str, dict[str, dict[str, float]]]:
    """Per left-out part and label, the metrics `reelstream eval models` reports for the validation split."""
    from models.text.metrics import label_report

    out: dict[str, dict[str, dict[str, float]]] = {}
    for sel, part in scored.items():
        examples = part["examples"]
        dataset = sel.partition(":")[0]
        out[sel] = {}
        for label in sorted({k for e in examples for k in e.labels}):
            rows = [i for i, e in enumerate(examples) if label in e.labels]
            y = np.array([examples[i].labels[label] for i in rows])
            p = part["sentiment"][rows] if label == "sentiment" else part["scores"][rows, CATEGORIES.index(label)]
            out[sel][label] = label_report(label, dataset, y, p)
    return out


def baseline_report(data_dir: Path, fold: Sequence[str], limit: int | None = None) -> dict[str, dict[str, dict]]:
    """The TF-IDF+LR floor in the same out-of-distribution setting: per left-out part and label, fitted on
    the fold's training rows of that label and language (the other sources or groups), scored on the part."""
    from models.text.baseline import fit_and_score

    return {sel: {label: scored for label, (fit_on, part) in labels.items()
                  if (scored := fit_and_score(fit_on, part, label, sel.partition(":")[0])) is not None}
            for sel, labels in floor_sets(data_dir, fold, limit).items()}  # fmt: skip


def floor_sets(
    data_dir: Path, fold: Sequence[str], limit: int | None = None
) -> dict[str, dict[str, tuple[list[Example], list[Example]]]]:
    """Per left-out part and label: (the rows the floor is fitted on: the fold's training rows of that label and
    language, the jigsaw sample left out of binary labels; the part's rows with that label, in `left_out` order)."""
    train, val = load_splits(data_dir, limit)
    kept = [e for e in (*train, *val) if not selected(e, tuple(fold))]
    out: dict[str, dict[str, tuple[list[Example], list[Example]]]] = {}
    for sel, examples in left_out(data_dir, fold, limit).items():
        out[sel] = {}
        for label in sorted({k for e in examples for k in e.labels}):
            part = [e for e in examples if label in e.labels]
            fit_on = [e for e in kept if label in e.labels and e.lang == part[0].lang]
            if label != "sentiment":
                fit_on = [e for e in fit_on if e.dataset != "jigsaw_toxic_sample"]
            if fit_on:
                out[sel][label] = (fit_on, part)
    return out


BLOCK_PRECISION = 0.95  # of `block`, on the left-out labelled parts of a category and language
BENIGN_BLOCK_BUDGET = 0.002  # per category: share of left-out benign texts (reviews, ordinary tweets) blocked
REVIEW_BUDGET = 0.05  # per language: share of left-out benign texts sent to human review, split over categories
MIN_BLOCKS = 20  # fewer blocked rows than this say nothing about a threshold's precision
MIN_CALIBRATION_PARTS = 2  # a calibration is served only if it carried to this many sources it was not fitted on
GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50)) + (0.995, 0.999, 0.9999, 0.99999)  # 1.0: never
TOXIC_LABELS = ("toxic", "offensive", "hate", "sexism")


def _truth(example: Example, category: str) -> int | None:
    """1/0 where the example is labelled for the category (toxic: any of its sources), else None."""
    if category != "toxic":
        return example.labels.get(category)
    known = [example.labels[k] for k in TOXIC_LABELS if k in example.labels]
    return int(any(known)) if known else None


def choose_thresholds(scored: Mapping[str, Mapping], languages: Mapping[str, frozenset[str]]) -> dict:
    """Per language and category: `block` at the lowest grid point whose block precision on the left-out
    labelled parts is at least BLOCK_PRECISION and that blocks at most BENIGN_BLOCK_BUDGET of every
    left-out benign set (sentiment data: reviews and tweets nobody labelled as abusive); `review` at the
    lowest point that sends at most the category's share of REVIEW_BUDGET of those benign sets to review.
    A category whose block no grid point makes precise enough (on at least MIN_BLOCKS blocked rows) never
    blocks (1.0): it only asks for review. One without labelled left-out rows keeps the configured default
    block, raised if the benign sets need it.
    Returns {"thresholds": {lang: {category: {review, block}}}, "evidence": per lang/category figures}."""
    default = ModerationSettings().thresholds
    thresholds: dict = {}
    evidence: dict = {}
    for lang in ("en", "zh"):
        deciding = [c for c in CATEGORIES if lang in languages[c]]
        benign = [p for p in scored.values() if _is_benign_part(p) and p["examples"][0].lang == lang]
        thresholds[lang], evidence[lang] = {}, {}
        for c in deciding:
            col = CATEGORIES.index(c)
            y_arr, s_arr = _labelled(scored.values(), c, lang)
            benign_scores = [p["scores"][:, col] for p in benign]

            def benign_rate(lo: float, hi: float = 2.0) -> float:
                return max((float((reaches(b, lo) & ~reaches(b, hi)).mean()) for b in benign_scores), default=0.0)

            def precise(t: float) -> bool:
                hit = reaches(s_arr, t)
                return int(hit.sum()) >= MIN_BLOCKS and float(y_arr[hit].mean()) >= BLOCK_PRECISION

            if len(y_arr):
                block = next((t for t in GRID if precise(t) and benign_rate(t) <= BENIGN_BLOCK_BUDGET), 1.0)
            else:  # no labelled left-out rows (sexism): the default, raised if benign texts need it
                block = next((t for t in GRID if t >= default[c].block and benign_rate(t) <= BENIGN_BLOCK_BUDGET), 1.0)
            share = REVIEW_BUDGET / len(deciding)
            review = next((t for t in GRID if t <= block and benign_rate(t, block) <= share), block)
            thresholds[lang][c] = {"review": review, "block": block}
            hit = reaches(s_arr, block)
            evidence[lang][c] = {
                "labelled_rows": len(y_arr), "positives": int(y_arr.sum()) if len(y_arr) else 0,
                "blocked": int(hit.sum()),
                "block_precision": round(float(y_arr[hit].mean()), 4) if hit.any() else None,
                "block_recall": round(float(hit[y_arr == 1].mean()), 4) if len(y_arr) and y_arr.any() else None,
                "benign_blocked": round(benign_rate(block), 5), "benign_review": round(benign_rate(review, block), 5),
                "benign_sets": len(benign),
            }  # fmt: skip
    return {"thresholds": thresholds, "evidence": evidence}


def _labelled(parts: Iterable[Mapping], category: str, lang: str, column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The truth of `category` and the score of `column` (default: the same category) for every labelled
    left-out row in `lang` (benign sets aside)."""
    col = CATEGORIES.index(column or category)
    y, s = [], []
    for part in parts:
        if _is_benign_part(part):
            continue
        for e, lang_e, row in zip(part["examples"], part["langs"], part["scores"][:, col]):
            truth = _truth(e, category)
            if truth is not None and lang_e == lang:
                y.append(truth)
                s.append(float(row))
    return np.array(y, dtype=np.int64), np.array(s, dtype=np.float64)


def fit_calibration(scored: Mapping[str, Mapping], languages: Mapping[str, frozenset[str]],
                    only: Collection[tuple[str, str]] | None = None) -> Calibration:  # fmt: skip
    """Per language and category it decides in (those in `only`, when given): a Platt map fitted on every
    labelled left-out row (pairs with no labelled rows, zh sexism today, stay raw)."""
    maps: dict[str, dict[str, Platt]] = {}
    for lang in ("en", "zh"):
        maps[lang] = {}
        for c in (c for c in CATEGORIES if lang in languages[c] and (only is None or (lang, c) in only)):
            platt = fit_platt(*_labelled(scored.values(), c, lang))
            if platt is not None:
                maps[lang][c] = platt
    return Calibration(maps)


def calibration_carries(check: Mapping[str, Mapping[str, Sequence[Mapping]]]) -> set[tuple[str, str]]:
    """The (language, category) pairs whose calibration is served: checked on at least MIN_CALIBRATION_PARTS
    left-out parts, and closer to the truth there than the raw scores (mean ECE over those parts)."""
    return {(lang, c) for lang, cats in check.items() for c, rows in cats.items()
            if len(rows) >= MIN_CALIBRATION_PARTS
            and np.mean([r["ece_platt"] for r in rows]) < np.mean([r["ece_raw"] for r in rows])}  # fmt: skip


def calibration_check(scored: Mapping[str, Mapping], languages: Mapping[str, frozenset[str]]) -> dict:
    """How calibration carries to a source it was not fitted on: per language and category, each labelled
    left-out part scored by a Platt map (and, for comparison, an isotonic one) fitted on the other parts
    only, next to the raw scores. Pairs with fewer than two labelled parts cannot be checked this way."""
    from scipy.optimize import isotonic_regression

    out: dict = {}
    for lang in ("en", "zh"):
        for c in (c for c in CATEGORIES if lang in languages[c]):
            per_part = {sel: _labelled([p], c, lang) for sel, p in scored.items()}
            parts = {sel: ys for sel, ys in per_part.items() if len(ys[0])}
            rows = []
            for sel, (y, s) in parts.items():
                others = [ys for other, ys in parts.items() if other != sel]
                if not others:
                    continue
                y_fit, s_fit = (np.concatenate(a) for a in zip(*others))
                platt = fit_platt(y_fit, s_fit)
                if platt is None:
                    continue
                order = np.argsort(s_fit, kind="stable")
                iso = isotonic_regression(y_fit[order].astype(np.float64)).x
                p_iso = np.interp(s, s_fit[order], iso)
                rows.append({
                    "part": sel, "n": len(y), "positive_share": round(float(y.mean()), 4),
                    "ece_raw": round(expected_calibration_error(y, s), 4),
                    "ece_platt": round(expected_calibration_error(y, platt(s)), 4),
                    "ece_isotonic": round(expected_calibration_error(y, p_iso), 4),
                    "brier_raw": round(brier(y, s), 4), "brier_platt": round(brier(y, platt(s)), 4),
                    "brier_isotonic": round(brier(y, p_iso), 4),
                })  # fmt: skip
            if rows:
                out.setdefault(lang, {})[c] = rows
    return out


def cross_language_check(scored: Mapping[str, Mapping], languages: Mapping[str, frozenset[str]]) -> dict:
    """What a head would do in a language it has no training data in (where it abstains): per category and
    such language, the AUC of its raw score against any abuse label (toxic, offensive, hate, sexism) of the
    left-out labelled rows in that language, and the share of the left-out benign texts in that language it
    would send to review or block at the configured defaults."""
    from models.text.metrics import roc_auc

    default = ModerationSettings().thresholds
    out: dict = {}
    for c in CATEGORIES:
        col = CATEGORIES.index(c)
        for lang in sorted({"en", "zh"} - languages[c]):
            y, s = _labelled(scored.values(), "toxic", lang, column=c)
            benign = np.concatenate([p["scores"][:, col] for p in scored.values()
                                     if _is_benign_part(p) and p["langs"][0] == lang] or [np.zeros(0)])  # fmt: skip
            out.setdefault(c, {})[lang] = {
                "labelled_rows": len(y), "auc_any_abuse": round(roc_auc(y, s), 4) if len(y) else None,
                "benign_rows": len(benign),
                "benign_review_at_default": round(float(reaches(benign, default[c].review).mean()), 4) if len(benign) else None,
                "benign_block_at_default": round(float(reaches(benign, default[c].block).mean()), 4) if len(benign) else None,
            }  # fmt: skip
    return out


def _is_benign_part(part: Mapping) -> bool:
    """A left-out sentiment set: texts nobody labelled as abusive (reviews, ordinary tweets)."""
    return all(set(e.labels) <= {"sentiment"} for e in part["examples"])


def write_thresholds_file(ood: Mapping, weights_dir: Path) -> Path:
    """THRESHOLDS_FILE beside the weights (models.text.comments.thresholds_for reads it): the thresholds,
    the figures they were chosen on, and the rules."""
    import json

    from models.text.comments import THRESHOLDS_FILE

    path = weights_dir / THRESHOLDS_FILE
    keep = {k: ood[k] for k in ("thresholds", "evidence", "rules", "folds", "calibration", "calibration_check")}
    path.write_text(json.dumps(keep, indent=1, sort_keys=True) + "\n")
    return path


CARD_START, CARD_END = "<!-- ood:start -->", "<!-- ood:end -->"


def card_section(ood: Mapping, in_distribution: Mapping) -> str:
    """The model card's out-of-distribution section: each left-out part next to the in-distribution line of
    its dataset, the TF-IDF floor in the same setting, and the thresholds with the figures they rest on."""
    fitted = in_distribution.get("validation_in_linear_fit") or in_distribution.get("validation_in_deep_fit")
    ind_title = "shipped model on its validation rows (a fit: refit on them)" if fitted else "in-distribution model"
    rows = [f"| left out (never trained on) | label | metric | OOD model | OOD TF-IDF floor | {ind_title} |",
            "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for sel, labels in ood["lines"].items():
        for label, e in labels.items():
            key = e["primary"]
            base = e.get("baseline", {}).get(key)
            ind = in_distribution["lines"].get(sel.partition(":")[0], {}).get(label, {}).get("model", {}).get(key)
            rows.append(f"| {sel} | {label} | {key} | {e['model'][key]:.4f} | "
                        f"{'n/a' if base is None else f'{base:.4f}'} | {'n/a' if ind is None else f'{ind:.4f}'} |")  # fmt: skip
    th = ["| lang | category | review | block | OOD block precision | OOD block recall | OOD benign blocked | OOD benign to review |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for lang, cats in ood["thresholds"].items():
        for c, t in cats.items():
            ev = ood["evidence"][lang][c]
            prec = "n/a" if ev["block_precision"] is None else f"{ev['block_precision']:.3f}"
            rec = "n/a" if ev["block_recall"] is None else f"{ev['block_recall']:.3f}"
            th.append(f"| {lang} | {c} | {t['review']:g} | {t['block']:g} | {prec} | {rec} | "
                      f"{100 * ev['benign_blocked']:.2f}% | {100 * ev['benign_review']:.2f}% |")  # fmt: skip
    cal = ["| lang | category | left-out part | rows | positives | ECE raw | ECE Platt | ECE isotonic | Brier raw | Brier Platt |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for lang, cats in ood["calibration_check"].items():
        for c, rows_c in cats.items():
            for row in rows_c:
                figures = " | ".join(f"{row[k]:.4f}" for k in ("ece_raw", "ece_platt", "ece_isotonic", "brier_raw", "brier_platt"))
                cal.append(f"| {lang} | {c} | {row['part']} | {row['n']} | {100 * row['positive_share']:.1f}% | {figures} |")
    served = [f"{lang} {c} (a {m['a']:.3f}, b {m['b']:+.3f})" for lang, cats in ood["calibration"].items() for c, m in cats.items()]
    cross = ["| head | language it has no data in | labelled rows | AUC vs any abuse label | benign texts | to review at 0.5 | blocked at 0.9 |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c, per_lang in ood["cross_language"].items():
        for lang, x in per_lang.items():
            auc = "n/a" if x["auc_any_abuse"] is None else f"{x['auc_any_abuse']:.4f}"
            rates = ["n/a" if x[k] is None else f"{100 * x[k]:.2f}%" for k in ("benign_review_at_default", "benign_block_at_default")]
            cross.append(f"| {c} | {lang} | {x['labelled_rows']} | {auc} | {x['benign_rows']} | {rates[0]} | {rates[1]} |")
    r = ood["rules"]
    return "\n".join([
        CARD_START,
        "## Out-of-distribution validation",
        "",
        "The same recipe trained three more times, each time without some sources or groups (models/text/ood.py "
        "`FOLDS`), and each left-out part scored by the model that never saw it; the floor is the TF-IDF + "
        "logistic regression baseline fitted on the same fold's rows of that label and language. "
        f"Beats the floor on {ood['beats_baseline']} lines out of distribution (in distribution: "
        f"{in_distribution['beats_baseline']} on the validation split"
        + ("; the shipped linear experts were refit on those rows, so that column is a fit, not a validation: "
           "the validation table above holds the lines taken before the refit" if fitted else "")
        + ").",
        "",
        *rows,
        "",
        "### Calibration",
        "",
("A calibration per language and category (models/text/calibration.py: Platt scaling, p = sigmoid(a * "
        "logit(raw) + b), fitted on the labelled left-out rows of that language and category) is checked the "
        "way production would meet it: each row below fits it on the other left-out parts only and scores it "
        "on this one (ECE over 10 equal-width bins, Brier score), next to the raw score; an isotonic fit is "
        f"shown for comparison. It is served only where it beats the raw score's mean ECE over at least "
        f"{MIN_CALIBRATION_PARTS} such parts (`calibration_carries`); served: {', '.join(served) or 'none'}. "
        "Sources differ in base rate and label definition (Davidson's 'offensive' is any profanity, at 83% "
        "of its rows), so a map fitted on some sources moves scores away from another's rates."),
        "",
        *cal,
        "",
        "### Across languages",
        "",
        ("A head with no training data in a language abstains there (never decides; the flag lists it in "
        "`abstained`). What it would do otherwise, from the same left-out parts: its raw score against any "
        "abuse label (toxic, offensive, hate, sexism) of that language's labelled rows, and the share of that "
        "language's benign texts it would send to review or block at the untuned defaults."),
        "",
        *cross,
        "",
        "### Thresholds (chosen on those left-out parts, on the scores as served)",
        "",
        (f"`block`: the lowest threshold (0.50, 0.51, ..., 0.99, 0.995, 0.999, 0.9999, 0.99999) whose block "
         f"precision on the left-out labelled rows is at least {r['block_precision']} (over at least 20 blocked "
         f"rows) and that blocks at most {100 * r['benign_block_budget']:.1f}% of each left-out benign set "
         f"(reviews, ordinary tweets); 1.0 = never blocks (review only; a threshold of 1.0 is never reached, "
         f"though scores do reach 1.0). `review`: the lowest threshold sending at most the category's share of "
         f"{100 * r['review_budget']:.0f}% of those benign texts to review. The model shipped is trained on "
         "everything, so these figures estimate how its scores behave on sources it has not seen. A category "
         "is decided only in the languages it has training data in."),
        "",
        *th,
        CARD_END,
    ])  # fmt: skip


def write_card_section(card: Path, section: str) -> None:
    """Replace the section between its markers in the model card, or append it."""
    text = card.read_text()
    if CARD_START in text and CARD_END in text:
        head, rest = text.split(CARD_START, 1)
        text = head + section + rest.split(CARD_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    card.write_text(text)
