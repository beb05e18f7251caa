"""Convex per-head logistic regressions over the hashed TF-IDF features (the linear view of CommentNet).

SGD on a bag-of-n-grams network memorizes these small datasets within an epoch or two and never reaches
what a properly regularized, fully converged logistic regression gets per dataset. So each head also gets
that regression, fitted by full-batch L-BFGS (scipy) with an L2 penalty, on the same features the network
sees.
"""

from __future__ import annotations

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
MAX_ITER = 100


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
) -> dict[str, float]:
    """Fit every task and write its weights into the [buckets, n_linear] table and bias, in place.

    With validation tasks (same names and columns), each task is fitted for every C of `grid` and the C
    with the best validation score is kept; returns the chosen C per task. Weights of the store's dense
    columns go to `dense_weight` [d, n_linear]."""
    by_key = {(t.name, tuple(t.columns)): t for t in (val_tasks or [])}
    chosen: dict[str, float] = {}
    for task in tqdm(tasks, desc="linear heads", unit="head"):
        x, used = tfidf_matrix(store, task.rows, idf)
        vt = by_key.get((task.name, tuple(task.columns))) if val_store is not None else None
        if vt is None or len(vt.rows) == 0:
            w, b = fit_task(x, task)
            c_best = L2_C
        else:
            xv, _ = tfidf_matrix(val_store, vt.rows, idf, used)
            best, init = None, None
            for c in grid:
                w, b = fit_task(x, task, c, init)
                init = np.concatenate([w.ravel(), b])
                score = _task_score(xv, w, b, vt)
                if best is None or score > best[0] + 1e-9:
                    best = (score, c, w, b)
            _, c_best, w, b = best
        chosen[f"{task.name} {task.columns[0]}"] = c_best
        cols = torch.tensor(task.columns)
        if dense_weight is not None and store.dense is not None:
            dense_weight[:, cols] = torch.from_numpy(w[len(used) :]).float()
            w = w[: len(used)]
        weight[torch.from_numpy(used).unsqueeze(1), cols.unsqueeze(0)] = torch.from_numpy(w).float()
        bias[cols] = torch.from_numpy(b).float()
    return chosen
