"""Where does the TF-IDF floor's edge on an out-of-distribution line come from? (issue #17)

On three Chinese OOD lines (waimai, online shopping, COLD race; models/text/weights/MODEL_CARD.md) the floor
(models/text/baseline.py) beats the network, and a logistic regression on the network's own features fitted
like the floor does not reach it either. This refits the floor on the line's floor rows (`ood.floor_sets`)
with one thing changed at a time and scores the left-out part:
- `idf`: the idf taken over every row of the fold (both languages, as the network's idf is) instead
  of the floor's own rows; `idf-folded`: the floor's idf, but each row normalized with that whole-set idf
  (what a head of the network can carry: the ratio folds into its weights, linear.task_idf_ratio);
- `vocab-N`: the floor's vocabulary cut to its N most frequent n-grams (the network keeps one shared
  vocabulary, and a large source keeps a fifth to a quarter of its own n-grams in it);
- `char`, `char-padded`: sklearn's `char` analyzer, as is and on " " + text + " " (the network pads texts so);
- `ours-N`: the network's n-gram hashes (models/text/features.py, no shared vocabulary) as the floor's
  vocabulary: the fit rows' N most frequent with min_df 2, the floor's TF-IDF and regression on top.
Prints JSON: the line's metric per variant.

    python -m lab.floor_anatomy --fold 1 --part cold_offensive:topic=race
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import sparse

from models.text.data import Example, default_data_dir, load_splits, selected
from models.text.linear import smoothed_idf
from models.text.metrics import label_report, primary_metric
from models.text.ood import FOLDS, floor_sets

VARIANTS = ("floor", "idf", "idf-folded", "vocab-100000", "vocab-50000", "char", "char-padded", "ours-300000",
            "ours-80000")  # fmt: skip


def _vectorizer(lang: str, **changes):
    """The floor's vectorizer (baseline._pipeline), with `changes`."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    kw = {"analyzer": "char_wb", "ngram_range": (1, 4) if lang == "zh" else (2, 5), "sublinear_tf": True,
          "min_df": 2, "max_features": 300_000} | changes  # fmt: skip
    return TfidfVectorizer(**kw)


def _idf(counts: sparse.csr_matrix) -> np.ndarray:
    """Smoothed idf over the rows of a count matrix, as TfidfVectorizer computes it."""
    return smoothed_idf(np.asarray((counts > 0).sum(0)).ravel(), counts.shape[0])


def _tfidf(counts: sparse.csr_matrix, idf: np.ndarray, norm_idf: np.ndarray | None = None) -> sparse.csr_matrix:
    """Sublinear tf times idf, each row l2-normalized with `norm_idf` (default: `idf`)."""
    tf = counts.tocsr(copy=True).astype(np.float64)
    tf.data = 1.0 + np.log(tf.data)
    w = tf @ sparse.diags(norm_idf if norm_idf is not None else idf)
    norm = np.sqrt(np.asarray(w.multiply(w).sum(1)).ravel())
    return (sparse.diags(1 / np.maximum(norm, 1e-12)) @ tf @ sparse.diags(idf)).tocsr()


def _our_counts(fit_on: list[Example], part: list[Example], size: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Count matrices over the network's n-gram hashes: the `size` most frequent (min_df 2) of the fit rows, kept
    as training keeps its vocabulary (features.build_vocabulary, the fit rows as one group)."""
    from models.text.features import FeatureConfig, Featurizer, build_vocabulary

    texts, langs = [e.text for e in fit_on], [e.lang for e in fit_on]
    vocab = build_vocabulary(Featurizer(FeatureConfig()), [(texts, langs)], size)
    counting = Featurizer(FeatureConfig(buckets=len(vocab), vocabulary=True, sublinear_tf=False), vocab)

    def counts(exs: list[Example]) -> sparse.csr_matrix:
        batch = counting([e.text for e in exs], [e.lang for e in exs])
        rows = np.repeat(np.arange(len(exs)), np.diff(np.append(batch.offsets, len(batch.indices))))
        return sparse.csr_matrix((np.ones(len(rows)), (rows, batch.indices)), shape=(len(exs), len(vocab)))

    return counts(fit_on), counts(part)


def variant_features(
    name: str, fit_on: list[Example], part: list[Example], fold_rows: list[Example]
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """TF-IDF matrices of the fit rows and the left-out part for one variant."""
    lang = fit_on[0].lang
    texts, test = [e.text for e in fit_on], [e.text for e in part]
    if name.startswith("ours-"):
        c_fit, c_part = _our_counts(fit_on, part, int(name.split("-")[1]))
        idf = _idf(c_fit)
        return _tfidf(c_fit, idf), _tfidf(c_part, idf)
    if name in ("idf", "idf-folded"):
        vec = _vectorizer(lang).fit(texts)
        counter = _vectorizer(lang, vocabulary=vec.vocabulary_, use_idf=False, norm=None, sublinear_tf=False)
        whole = _idf(counter.fit_transform([e.text for e in fold_rows]))
        c_fit, c_part = counter.transform(texts), counter.transform(test)
        idf, norm = (whole, None) if name == "idf" else (vec.idf_, whole)
        return _tfidf(c_fit, idf, norm), _tfidf(c_part, idf, norm)
    changes: dict = {}
    if name.startswith("vocab-"):
        changes["max_features"] = int(name.split("-")[1])
    elif name == "char":
        changes["analyzer"] = "char"
    elif name == "char-padded":
        changes |= {"analyzer": "char", "preprocessor": lambda t: " " + t.lower() + " "}
    vec = _vectorizer(lang, **changes)
    return vec.fit_transform(texts), vec.transform(test)


def anatomy(fold: int, part_sel: str, variants: list[str]) -> dict:
    """The line's primary metric for each variant (label: the part's only one, or its first)."""
    from sklearn.linear_model import LogisticRegression

    data = default_data_dir()
    labels = floor_sets(data, FOLDS[fold])[part_sel]
    label = min(labels)
    fit_on, part = labels[label]
    train, val = load_splits(data)
    fold_rows = [e for e in (*train, *val) if not selected(e, FOLDS[fold])]
    y, y_part = np.array([e.labels[label] for e in fit_on]), np.array([e.labels[label] for e in part])
    out = {}
    for name in variants:
        x_fit, x_part = variant_features(name, fit_on, part, fold_rows)
        model = LogisticRegression(C=4.0, max_iter=2000).fit(x_fit, y)
        proba = model.predict_proba(x_part)
        if label == "sentiment":
            p = np.zeros((len(part), 3))
            p[:, model.classes_] = proba
        else:
            p = proba[:, list(model.classes_).index(1)]
        out[name] = round(label_report(label, part_sel.partition(":")[0], y_part, p)[primary_metric(label)], 4)
    return {"fold": fold, "part": part_sel, "label": label, "metric": primary_metric(label), "variants": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--part", required=True, help="A left-out part of that fold, e.g. cold_offensive:topic=race.")
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="Only these (default: all).")
    args = ap.parse_args()
    if args.part not in FOLDS[args.fold]:
        ap.error(f"{args.part} is not left out in fold {args.fold}: {', '.join(FOLDS[args.fold])}")
    print(json.dumps(anatomy(args.fold, args.part, args.variant or list(VARIANTS))))


if __name__ == "__main__":
    main()
