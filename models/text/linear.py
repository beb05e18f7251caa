"""Convex per-head logistic regressions over the TF-IDF n-gram features (the linear view of CommentNet).

SGD on a bag-of-n-grams network memorizes these small datasets within an epoch or two and never reaches
what a properly regularized, fully converged logistic regression gets per dataset. So each head also gets
that regression, fitted by full-batch L-BFGS (scipy) with an L2 penalty, on the same features the network
sees.

Two-class heads may instead be fitted NB-LR style (Wang & Manning 2012, "Baselines and bigrams"): each
feature is scaled by its naive Bayes log-count ratio r = log((p / |p|_1) / (q / |q|_1)), p and q = 1 + the
number of positive / negative training texts containing it, and the regression fitted on the scaled
features. r is folded into the stored weights (w * r), so serving is unchanged. Whether a head uses it,
and its C, are chosen on the validation split.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit, logsumexp
from tqdm import tqdm

# Same objective as scikit-learn's LogisticRegression(C): C * sum(loss) + ||w||^2 / 2. Each head's C is
# chosen from C_GRID on the validation split (warm-started from the previous C's solution).
L2_C = 4.0
C_GRID = (4.0, 8.0, 16.0, 32.0)
NB_C_GRID = (1.0, 2.0, 4.0, 8.0, 16.0)  # NB-scaled features have larger values: the best C is smaller
MAX_ITER = 100
NB_ALPHA = 1.0


@dataclass(frozen=True)
class LinearTask:
    """Rows of the training store, output columns, and targets: binary [n, k] or class ids [n]."""

    name: str
    rows: np.ndarray
    columns: list[int]
    targets: np.ndarray
    multiclass: bool


@dataclass(frozen=True)
class Store:
    """Featurized texts back to back: bucket ids, tf weight per entry, entries per text and where each starts."""

    indices: np.ndarray
    tf: np.ndarray | None
    counts: np.ndarray
    starts: np.ndarray
    dense: np.ndarray | None = None  # [n_texts, d] extra dense features (the scaled static vectors)


def joined(a: Store, b: Store) -> Store:
    """The texts of `a`, then those of `b`, as one store (b's row i becomes row len(a.counts) + i): the refit on
    training and validation rows reuses both featurized stores instead of featurizing the texts again."""

    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None and y is None else np.concatenate([x, y])

    return Store(np.concatenate([a.indices, b.indices]), cat(a.tf, b.tf), np.concatenate([a.counts, b.counts]),
                 np.concatenate([a.starts, b.starts + len(a.indices)]), cat(a.dense, b.dense))  # fmt: skip


def tfidf_matrix(
    store: Store, rows: np.ndarray, idf: np.ndarray, used: np.ndarray | None = None
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse [len(rows), n_used] TF-IDF matrix (as CommentNet pools it) and the used bucket ids
    (given `used`, columns are those buckets and any other bucket is left out of the matrix)."""
    lens = store.counts[rows]
    offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
    gather = np.repeat(store.starts[rows] - offsets, lens) + np.arange(lens.sum())
    buckets = store.indices[gather].astype(np.int64)
    row_of = np.repeat(np.arange(len(rows)), lens)
    w = idf[buckets].astype(np.float64)
    if store.tf is not None:
        w = w * store.tf[gather]
    norm = np.sqrt(np.bincount(row_of, weights=w * w, minlength=len(rows)))
    w = w / np.maximum(norm, 1e-6)[row_of]
    if used is None:
        used, local = np.unique(buckets, return_inverse=True)
    else:
        local = np.minimum(np.searchsorted(used, buckets), len(used) - 1)
        known = used[local] == buckets
        w, row_of, local = w[known], row_of[known], local[known]
    x = sparse.csr_matrix((w, (row_of, local)), shape=(len(rows), len(used)))  # duplicates are summed
    if store.dense is not None:  # dense columns after the buckets
        x = sparse.hstack([x, sparse.csr_matrix(store.dense[rows].astype(np.float64))], format="csr")
    return x, used


def fit_task(
    x: sparse.csr_matrix, task: LinearTask, c: float = L2_C, init: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Minimize C * sum(log loss) + ||W||^2 / 2 (bias unpenalized) with L-BFGS; returns W [n_used, k], b [k]."""
    n, v = x.shape
    k = len(task.columns)
    xt = x.T.tocsr()
    if task.multiclass:
        y = np.zeros((n, k))
        y[np.arange(n), task.targets] = 1.0
    else:
        y = task.targets.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: v * k].reshape(v, k), theta[v * k :]
        z = x @ w + b
        if task.multiclass:
            lse = logsumexp(z, axis=1, keepdims=True)
            loss = float((lse - z)[y > 0].sum())
            err = np.exp(z - lse) - y
        else:
            loss = float((np.logaddexp(0.0, z) - y * z).sum())
            err = expit(z) - y
        grad_w = c * (xt @ err) + w
        value = c * loss + 0.5 * float((w * w).sum())
        return value / n, np.concatenate([grad_w.ravel(), c * err.sum(0)]) / n

    x0 = np.zeros(v * k + k) if init is None else init
    res = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER})
    return res.x[: v * k].reshape(v, k), res.x[v * k :]


def nb_ratio(x: sparse.csr_matrix, task: LinearTask) -> np.ndarray | None:
    """Naive Bayes log-count ratio per column of x for a two-class task (one binary column, or a multiclass
    task whose targets hold exactly two classes: the larger is positive); None for any other task."""
    if task.multiclass:
        classes = np.unique(task.targets)
        if len(classes) != 2:
            return None
        pos = task.targets == classes[1]
    elif len(task.columns) == 1:
        pos = task.targets[:, 0] > 0.5
    else:
        return None
    present = (x > 0).astype(np.float64).tocsr()
    p = NB_ALPHA + np.asarray(present[pos].sum(0)).ravel()
    q = NB_ALPHA + np.asarray(present[~pos].sum(0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def _split_columns(task: LinearTask) -> list[LinearTask]:
    """A multi-label binary task as one task per column (the objective is separable, so fitting them apart
    is the same regression; each column can then get its own NB ratio and C). A column is fitted on the rows
    that have its label (target >= 0): a reviewer's decision labels one category of a dataset with two."""
    if task.multiclass:
        return [task]
    parts = []
    for j, c in enumerate(task.columns):
        known = task.targets[:, j] >= 0
        rows, targets = (task.rows, task.targets[:, j : j + 1]) if known.all() else (task.rows[known], task.targets[known, j : j + 1])
        parts.append(LinearTask(task.name, rows, [c], targets, multiclass=False))
    return parts


def _task_score(x: sparse.csr_matrix, w: np.ndarray, b: np.ndarray, task: LinearTask) -> float:
    """Validation score of one fitted task: accuracy (multiclass) or mean ROC AUC over its columns."""
    from models.text.metrics import roc_auc

    z = x @ w + b
    if task.multiclass:
        return float(np.mean(z.argmax(1) == task.targets))
    aucs = [roc_auc(task.targets[:, j], z[:, j]) for j in range(z.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else 0.0


def fit_linear_heads(
    weight: torch.Tensor,
    bias: torch.Tensor,
    tasks: list[LinearTask],
    store: Store,
    idf: np.ndarray,
    val_tasks: list[LinearTask] | None = None,
    val_store: Store | None = None,
    grid: tuple[float, ...] = C_GRID,
    dense_weight: torch.Tensor | None = None,
    nb_grid: tuple[float, ...] = NB_C_GRID,
    plain_columns: Collection[int] = (),
    task_idf: bool = False,
    choices: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Fit every task and write its weights into the [buckets, n_linear] table and bias, in place.

    With validation tasks (same names and columns), each task is fitted for every C of `grid` on plain
    features and, for two-class tasks, for every C of `nb_grid` on NB-scaled features (see nb_ratio); the
    fit with the best validation score is kept. Returns the choice per task ("C" or "C NB"). Weights of the
    store's dense columns go to `dense_weight` [d, n_linear]. Columns in `plain_columns` skip that choice and
    are fitted on plain features at L2_C (chosen for them on out-of-distribution folds instead: a choice that
    wins on the validation split can lose on sources the head never saw). With `task_idf`, each task's
    features are weighted by the idf of its own rows (task_idf_ratio) instead of the whole training set's.
    With `choices` (what an earlier call returned), a task found there is fitted with that C and scaling and
    no validation: the refit on more rows once the choice is made."""
    tasks = [part for t in tasks for part in _split_columns(t)]
    val_parts = [part for t in (val_tasks or []) for part in _split_columns(t)]
    by_key = {(t.name, tuple(t.columns)): t for t in val_parts}
    chosen: dict[str, str] = {}
    for task in tqdm(tasks, desc="linear heads", unit="head"):
        if len(task.rows) == 0:
            continue  # no training rows (its datasets absent from this training): its weights stay zero
        x, used = tfidf_matrix(store, task.rows, idf)
        vt = by_key.get((task.name, tuple(task.columns))) if val_store is not None else None
        r = None
        t = task_idf_ratio(x, len(used), idf[used]) if task_idf else None
        if t is not None:
            x = _scale(x, t)
        key = f"{task.name} {task.columns[0]}"
        if choices is not None and key in choices:
            label = choices[key]
            c, _, nb = label.partition(" ")
            r = nb_ratio(x[:, : len(used)], task) if nb else None
            w, b = fit_task(x if r is None else _scale(x, r), task, float(c))
        elif vt is None or len(vt.rows) == 0 or task.columns[0] in plain_columns:
            w, b = fit_task(x, task)
            label = f"{L2_C:g}"
        else:
            xv, _ = tfidf_matrix(val_store, vt.rows, idf, used)
            if t is not None:
                xv = _scale(xv, t)
            ratio = nb_ratio(x[:, : len(used)], task)
            families: list[tuple[np.ndarray | None, tuple[float, ...]]] = [(None, grid)]
            if ratio is not None and nb_grid:
                families.append((ratio, nb_grid))
            best = None
            for rr, cs in families:
                xs, xvs = (x, xv) if rr is None else (_scale(x, rr), _scale(xv, rr))
                init = None
                for c in cs:
                    w, b = fit_task(xs, task, c, init)
                    init = np.concatenate([w.ravel(), b])
                    score = _task_score(xvs, w, b, vt)
                    if best is None or score > best[0] + 1e-9:
                        best = (score, f"{c:g}" if rr is None else f"{c:g} NB", w, b, rr)
            _, label, w, b, r = best
        chosen[key] = label
        cols = torch.tensor(task.columns)
        if dense_weight is not None and store.dense is not None:
            dense_weight[:, cols] = torch.from_numpy(w[len(used) :]).float()
            w = w[: len(used)]
        if r is not None:  # fold the NB scaling into the weights: (x * r) @ w == x @ (r * w)
            w = w * r[:, None]
        if t is not None:  # and the task's idf the same way
            w = w * t[:, None]
        weight[torch.from_numpy(used).unsqueeze(1), cols.unsqueeze(0)] = torch.from_numpy(w).float()
        bias[cols] = torch.from_numpy(b).float()
    return chosen


def task_idf_ratio(x: sparse.csr_matrix, n_buckets: int, idf: np.ndarray) -> np.ndarray:
    """Per bucket column of x, the smoothed idf over x's own rows divided by `idf` (the whole training set's):
    scaling the columns by it weights a task's n-grams by how rare they are in its own data, as a TF-IDF
    fitted on that data alone does (rows keep their whole-set norm, so serving needs no second idf)."""
    return smoothed_idf(np.asarray((x[:, :n_buckets] > 0).sum(0)).ravel(), x.shape[0]) / idf


def smoothed_idf(df: np.ndarray, n: int) -> np.ndarray:
    """log((1 + n) / (1 + df)) + 1 per column of document frequency `df` over `n` texts, as scikit-learn's
    TfidfVectorizer computes idf (smooth_idf)."""
    return np.log((1 + n) / (1 + df)) + 1


def _scale(x: sparse.csr_matrix, ratio: np.ndarray) -> sparse.csr_matrix:
    """x with its first len(ratio) columns multiplied by ratio (the dense columns after them unchanged)."""
    factors = np.concatenate([ratio, np.ones(x.shape[1] - len(ratio))])
    return (x @ sparse.diags(factors)).tocsr()
