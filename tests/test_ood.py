"""Out-of-distribution validation of the comment models (models/text/ood.py): folds that leave sources or
groups out of training, thresholds chosen on what those folds never saw, and the worker using them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.text.config import CATEGORIES, ModerationSettings, Thresholds
from models.text.data import Example, selected
from models.text.ood import BENIGN_BLOCK_BUDGET, BLOCK_PRECISION, MIN_BLOCKS, choose_thresholds

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALL = frozenset({"en", "zh"})
LANGS = {"toxic": ALL, "offensive": ALL, "hate": frozenset({"en"}), "sexism": frozenset({"zh"}), "spam": frozenset({"en"})}


def _part(dataset: str, lang: str, labels: list[dict], scores: dict[str, list[float]]) -> dict:
    n = len(labels)
    matrix = np.zeros((n, len(CATEGORIES)), dtype=np.float32)
    for c, values in scores.items():
        matrix[:, CATEGORIES.index(c)] = values
    return {"examples": [Example(dataset, f"t{i}", lang, lab) for i, lab in enumerate(labels)], "scores": matrix,
            "langs": [lang] * n}  # fmt: skip


def test_selectors_name_datasets_and_groups_of_one() -> None:
    cold = Example("cold_offensive", "x", "zh", {"offensive": 1}, {"topic": "race"})
    assert selected(cold, ("cold_offensive",)) and selected(cold, ("sst2", "cold_offensive:topic=race"))
    assert not selected(cold, ("cold_offensive:topic=gender", "olid_offensive"))


def test_block_is_the_lowest_threshold_precise_on_left_out_rows_and_rare_on_benign_texts() -> None:
    rng = np.random.default_rng(0)
    # offensive (en): 200 positives scoring 0.7..1.0, 800 negatives 0..0.8 -> precision reaches 0.95 near 0.8
    pos, neg = rng.uniform(0.7, 1.0, 200), rng.uniform(0.0, 0.8, 800)
    labelled = _part("olid_offensive", "en", [{"offensive": 1}] * 200 + [{"offensive": 0}] * 800,
                     {"offensive": [*pos, *neg], "toxic": [*pos, *neg]})  # fmt: skip
    # benign tweets: 1% score 0.9 on offensive -> the block must rise above 0.9 to block at most 0.2% of them
    benign_scores = [0.9] * 10 + [0.1] * 990
    benign = _part("tweeteval_sentiment", "en", [{"sentiment": 1}] * 1000, {"offensive": benign_scores})
    chosen = choose_thresholds({"olid_offensive": labelled, "tweeteval_sentiment": benign}, LANGS)
    th, ev = chosen["thresholds"], chosen["evidence"]
    assert set(th["en"]) == {"toxic", "offensive", "hate", "spam"} and set(th["zh"]) == {"toxic", "offensive", "sexism"}
    block = th["en"]["offensive"]["block"]
    assert 0.9 < block < 0.92, block  # the benign tweets decide, not the precision (reached lower)
    assert ev["en"]["offensive"]["block_precision"] >= BLOCK_PRECISION
    assert ev["en"]["offensive"]["benign_blocked"] <= BENIGN_BLOCK_BUDGET
    assert th["en"]["toxic"]["block"] < block  # toxic: the same labelled rows, no benign tweet scores high
    assert th["en"]["hate"]["block"] == 0.9  # no labelled hate rows: the default block, benign tweets allow it
    assert th["zh"]["sexism"] == {"review": 0.5, "block": 0.9}  # no evidence at all in zh: the defaults
    for lang in th:
        for c, t in th[lang].items():
            assert t["review"] <= t["block"]
            if t["block"] < 1.0 and ev[lang][c]["labelled_rows"]:
                assert ev[lang][c]["blocked"] >= MIN_BLOCKS


def test_thresholds_chosen_for_weights_are_used_per_language_unless_configuration_sets_them(tmp_path) -> None:
    from models.text.comments import SHIPPED_DIR, THRESHOLDS_FILE, WEIGHTS_FILE, thresholds_for
    from models.text.static_embeddings import TOKENIZER_FILE

    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        shutil.copyfile(SHIPPED_DIR / name, tmp_path / name)
    chosen = {"en": {c: {"review": 0.6, "block": 0.97} for c in ("toxic", "offensive", "hate", "spam")},
              "zh": {c: {"review": 0.55, "block": 1.0} for c in ("toxic", "offensive", "sexism")}}  # fmt: skip
    (tmp_path / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": chosen}))
    settings = ModerationSettings(model_dir=str(tmp_path), device="cpu")
    per_lang = thresholds_for(settings, tmp_path)
    assert per_lang["en"]["spam"] == Thresholds(review=0.6, block=0.97)
    assert per_lang["zh"]["offensive"] == Thresholds(review=0.55, block=1.0)
    assert per_lang["zh"]["spam"] == settings.thresholds["spam"]  # abstains in zh anyway
    explicit = ModerationSettings(model_dir=str(tmp_path), thresholds={"hate": Thresholds(review=0.1, block=0.2)})
    assert all(per == dict(explicit.thresholds) for per in thresholds_for(explicit, tmp_path).values())

    from models.text.base import load_comment_models

    models = load_comment_models(settings)
    [zh] = models.score(["你这个垃圾，滚出去"], ["zh"])
    assert zh.action != "block"  # block 1.0 in zh: at most review
    assert models.thresholds["zh"]["offensive"].block == 1.0


@pytest.mark.slow
def test_ood_evaluation_trains_folds_without_their_parts_and_writes_thresholds(tmp_path) -> None:
    """The whole `eval models --ood` path on 200 rows per dataset and one epoch per fold."""
    from models.text.comments import THRESHOLDS_FILE, thresholds_for
    from models.text.data import load_splits
    from models.text.ood import FOLDS, evaluate_ood, left_out, write_thresholds_file

    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    result = evaluate_ood(DATA, tmp_path / "folds", epochs=1, limit=200)
    assert result["folds"] == [list(f) for f in FOLDS]
    parts = {sel for fold in FOLDS for sel in fold}
    assert set(result["lines"]) == parts and all(result["rows"][sel] > 0 for sel in parts)
    assert result["lines"]["olid_offensive"]["offensive"]["baseline"]["auc"] > 0.5  # fitted on Davidson
    train, val = load_splits(DATA, 200)
    for fold in FOLDS:  # nothing a fold is scored on was in its training rows
        kept = {(e.dataset, e.text) for e in (*train, *val) if not selected(e, fold)}
        for examples in left_out(DATA, fold, 200).values():
            assert not kept & {(e.dataset, e.text) for e in examples}
    path = write_thresholds_file(result, tmp_path)
    assert path.name == THRESHOLDS_FILE
    from models.text.calibration import Calibration
    from models.text.comments import calibration_for

    assert calibration_for(tmp_path) == Calibration.from_json(result["calibration"])  # served with the weights
    written = thresholds_for(ModerationSettings(), tmp_path)
    for lang, cats in result["thresholds"].items():
        for c, t in cats.items():
            assert written[lang][c] == Thresholds(**t)


@pytest.mark.slow  # loads every dataset twice per fold: ~9 s
def test_the_floor_is_fitted_on_the_fold_s_own_rows_of_the_part_s_label_and_language_only() -> None:
    """`floor_sets`, what the OOD table's floor and `lab.floor_blend_probe` fit: never a left-out row, only the
    part's language and label, the jigsaw sample out of binary labels; the part's rows in `left_out` order."""
    from models.text.ood import FOLDS, floor_sets, left_out

    if not DATA.exists():
        pytest.skip(f"training data not present at {DATA}")
    for fold in FOLDS:
        parts, sets = left_out(DATA, fold, 200), floor_sets(DATA, fold, 200)
        assert set(sets) == set(parts)
        for sel, labels in sets.items():
            assert labels and set(labels) <= {k for e in parts[sel] for k in e.labels}
            for label, (fit_on, part) in labels.items():
                assert part == [e for e in parts[sel] if label in e.labels]
                assert fit_on and not any(selected(e, fold) for e in fit_on)
                assert {e.lang for e in fit_on} == {part[0].lang} and all(label in e.labels for e in fit_on)
                assert label == "sentiment" or all(e.dataset != "jigsaw_toxic_sample" for e in fit_on)


# --- calibration ----------------------------------------------------------------------------------------
def test_platt_calibration_recovers_the_rate_of_labels_and_keeps_rankings() -> None:
    from scipy.special import expit, logit

    from models.text.calibration import expected_calibration_error, fit_platt

    rng = np.random.default_rng(1)
    raw = rng.uniform(0.001, 0.999, 20_000)
    y = rng.uniform(size=raw.size) < expit(0.5 * logit(raw) - 1.0)  # over-confident raw scores
    platt = fit_platt(y, raw)
    assert platt is not None and abs(platt.a - 0.5) < 0.05 and abs(platt.b + 1.0) < 0.1, platt
    assert expected_calibration_error(y, platt(raw)) < 0.02 < expected_calibration_error(y, raw)
    assert (np.argsort(platt(raw), kind="stable") == np.argsort(raw, kind="stable")).all()
    assert fit_platt(np.ones(50), raw[:50]) is None  # one class: nothing to fit
    assert fit_platt(~y, raw) is None  # a score that ranks backwards is not turned into a probability


def test_calibration_is_fitted_per_language_and_category_and_checked_on_parts_it_was_not_fitted_on() -> None:
    from models.text.calibration import Calibration
    from models.text.ood import calibration_check, fit_calibration

    rng = np.random.default_rng(2)

    def labelled(dataset: str, n: int, rate: float) -> dict:
        y = rng.uniform(size=n) < rate
        s = np.clip(np.where(y, rng.normal(0.8, 0.1, n), rng.normal(0.5, 0.15, n)), 0, 1)
        return _part(dataset, "en", [{"offensive": int(v)} for v in y], {"offensive": s, "toxic": s})

    scored = {"olid_offensive": labelled("olid_offensive", 3000, 0.3),
              "davidson_hate_offensive": labelled("davidson_hate_offensive", 3000, 0.7),
              "tweeteval_sentiment": _part("tweeteval_sentiment", "en", [{"sentiment": 1}] * 100, {"offensive": [0.2] * 100})}  # fmt: skip
    cal = fit_calibration(scored, LANGS)
    assert set(cal.maps["en"]) == {"offensive", "toxic"} and cal.maps["zh"] == {}  # no rows for hate, spam, zh
    assert Calibration.from_json(cal.to_json()) == cal
    check = calibration_check(scored, LANGS)
    rows = check["en"]["offensive"]
    assert [r["part"] for r in rows] == ["olid_offensive", "davidson_hate_offensive"]  # benign set not a part
    assert all(r["n"] == 3000 for r in rows)
    # fitted on the other source's base rate (0.7 vs 0.3): the check shows the error that leaves behind
    olid = rows[0]
    assert olid["ece_platt"] > 0.1 and abs(olid["positive_share"] - 0.3) < 0.03
    both = np.vstack([scored[k]["scores"] for k in ("olid_offensive", "davidson_hate_offensive")])
    truth = [e.labels["offensive"] for k in ("olid_offensive", "davidson_hate_offensive") for e in scored[k]["examples"]]
    calibrated = cal.apply(both, ["en"] * 6000)
    assert (calibrated[:, CATEGORIES.index("hate")] == 0).all()  # uncalibrated columns untouched
    # a maximum-likelihood logistic fit matches the pooled rate of the rows it was fitted on
    assert np.isclose(calibrated[:, CATEGORIES.index("offensive")].mean(), np.mean(truth), atol=0.01)


def test_weights_with_a_calibration_serve_calibrated_scores_and_decide_on_them(tmp_path) -> None:
    from models.text.base import load_comment_models
    from models.text.calibration import Platt
    from models.text.comments import SHIPPED_DIR, THRESHOLDS_FILE, WEIGHTS_FILE
    from models.text.static_embeddings import TOKENIZER_FILE

    raw_dir, cal_dir = tmp_path / "raw", tmp_path / "calibrated"
    for d in (raw_dir, cal_dir):
        d.mkdir()
        for name in (WEIGHTS_FILE, TOKENIZER_FILE):
            shutil.copyfile(SHIPPED_DIR / name, d / name)
    th = {"en": {c: {"review": 0.5, "block": 0.9} for c in ("toxic", "offensive", "hate", "spam")},
          "zh": {c: {"review": 0.5, "block": 0.9} for c in ("toxic", "offensive", "sexism")}}  # fmt: skip
    (raw_dir / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": th}))
    (cal_dir / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": th, "calibration": {"en": {"offensive": {"a": 0.2, "b": -3.0}}}}))
    texts, langs = ["you are a fucking idiot", "what a lovely video", "你这个垃圾，滚出去"], ["en", "en", "zh"]
    raw = load_comment_models(ModerationSettings(model_dir=str(raw_dir), device="cpu"))
    cal = load_comment_models(ModerationSettings(model_dir=str(cal_dir), device="cpu"))
    r, c = raw.predict(texts, langs)[0], cal.predict(texts, langs)[0]
    off = CATEGORIES.index("offensive")
    assert np.allclose(c[:2, off], Platt(0.2, -3.0)(r[:2, off]), atol=1e-6)
    assert c[0, off] < r[0, off] and np.array_equal(np.delete(c, off, axis=1), np.delete(r, off, axis=1))
    assert c[2, off] == r[2, off]  # zh rows: no zh map
    # the decision reads the calibrated score: raw offensive blocks, calibrated (< 0.9) does not block on it
    assert r[0, off] >= 0.9 and c[0, off] < 0.9
    assert not any(reason.startswith("offensive>=0.90") for reason in cal.score(texts[:1], langs[:1])[0].reasons)
    (cal_dir / THRESHOLDS_FILE).write_text(json.dumps({"thresholds": th, "calibration": {"en": {"offensive": {"a": -1, "b": 0}}}}))
    with pytest.raises(ValueError, match="en/offensive"):
        load_comment_models(ModerationSettings(model_dir=str(cal_dir), device="cpu"))


def test_cross_language_check_measures_a_head_where_it_abstains() -> None:
    from models.text.ood import cross_language_check

    # zh parts scored by a spam head that fires on abuse it never learned: AUC 1 vs any abuse label, and on a
    # quarter of the benign reviews
    labels = [{"offensive": 1}] * 50 + [{"offensive": 0}] * 50
    cold = _part("cold_offensive", "zh", labels, {"spam": [0.95] * 50 + [0.1] * 50, "offensive": [0.5] * 100})
    reviews = _part("waimai_10k", "zh", [{"sentiment": 2}] * 100, {"spam": [0.95] * 25 + [0.6] * 25 + [0.0] * 50})
    tweets = _part("sst2", "en", [{"sentiment": 2}] * 10, {"sexism": [0.99] * 10})
    check = cross_language_check({"cold_offensive:topic=race": cold, "waimai_10k": reviews, "sst2": tweets}, LANGS)
    assert set(check) == {"hate", "spam", "sexism"}  # toxic and offensive have data in both languages
    spam = check["spam"]["zh"]
    assert spam == {"labelled_rows": 100, "auc_any_abuse": 1.0, "benign_rows": 100,
                    "benign_review_at_default": 0.5, "benign_block_at_default": 0.25}  # fmt: skip
    assert check["sexism"]["en"]["labelled_rows"] == 0 and check["sexism"]["en"]["benign_block_at_default"] == 1.0


def test_a_calibration_is_served_only_where_it_carried_to_sources_it_was_not_fitted_on() -> None:
    from models.text.ood import calibration_carries, fit_calibration

    def row(part: str, raw: float, platt: float) -> dict:
        return {"part": part, "ece_raw": raw, "ece_platt": platt}

    check = {"en": {"offensive": [row("olid", 0.10, 0.05), row("davidson", 0.10, 0.12)],  # mean 0.085 < 0.10
                    "toxic": [row("olid", 0.17, 0.32), row("davidson", 0.27, 0.47)],  # worse than raw
                    "hate": [row("davidson", 0.48, 0.37)]},  # better, but on one source only
             "zh": {"offensive": [row("gender", 0.04, 0.06), row("race", 0.07, 0.09), row("region", 0.01, 0.04)]}}  # fmt: skip
    assert calibration_carries(check) == {("en", "offensive")}
    labels = [{"offensive": 0}] * 70 + [{"offensive": 1}] * 30  # the higher the score, the likelier
    s = np.linspace(0.0, 1.0, 100)
    scored = {"olid_offensive": _part("olid_offensive", "en", labels, {"offensive": s, "toxic": s})}
    assert set(fit_calibration(scored, LANGS, only={("en", "offensive")}).maps["en"]) == {"offensive"}


def test_a_threshold_of_one_never_fires_though_scores_do_reach_one() -> None:
    from models.text.base import decide

    never = {c: Thresholds(review=1.0, block=1.0) for c in CATEGORIES}
    assert decide(dict.fromkeys(CATEGORIES, 1.0), never) == ("allow", [])  # fp32 sigmoid saturates at 1.0
    # 40 offensive rows saturate at 1.0, only half of them offensive: no threshold is precise, so `block` is
    # "never", and the evidence for it counts nothing blocked (it counted the 40 while 1.0 still fired)
    labels = [{"offensive": 1}] * 20 + [{"offensive": 0}] * 20 + [{"offensive": 0}] * 960
    s = [1.0] * 40 + [0.3] * 960
    part = _part("olid_offensive", "en", labels, {"offensive": s, "toxic": s})
    chosen = choose_thresholds({"olid_offensive": part}, LANGS)
    assert chosen["thresholds"]["en"]["offensive"]["block"] == 1.0
    assert chosen["evidence"]["en"]["offensive"]["blocked"] == 0


def test_a_reason_states_its_threshold_without_rounding_it_up() -> None:
    from models.text.base import decide

    th = {c: Thresholds(review=0.5, block=0.9) for c in CATEGORIES} | {"spam": Thresholds(review=0.999, block=0.9999)}
    assert decide(dict.fromkeys(CATEGORIES, 0.0) | {"spam": 0.99995, "hate": 0.95}, th) == ("block", ["hate>=0.90", "spam>=0.9999"])


def test_the_recipe_probe_reads_set_pairs_as_training_options_and_refuses_unknown_fields() -> None:
    """lab/recipe_probe: `--set` values are JSON where they parse (true, numbers), text otherwise, and only
    TrainOptions fields are accepted, so a typo cannot train three folds of the unchanged recipe."""
    from lab.recipe_probe import overrides

    assert overrides(["refit_deep_on_validation=true", "seed=7", "ngram_dropout=0.25"]) == {
        "refit_deep_on_validation": True, "seed": 7, "ngram_dropout": 0.25}  # fmt: skip
    assert overrides(["plain_linear=[\"hate\", \"spam\"]"]) == {"plain_linear": ("hate", "spam")}
    for bad in (["refit_deep=true"], ["seed"]):
        with pytest.raises(SystemExit, match="FIELD=VALUE"):
            overrides(bad)
