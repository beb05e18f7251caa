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

# Same objective as scikit-learn's LogisticRegression(C=L2_C): C * sum(loss) + ||w||^2 / 2.
L2_C = 4.0
MAX_ITER = 100


@dataclass(frozen=True)
class LinearTask:
    """Rows of the training store, output columns, and targets: binary [n, k] or class ids [n]."""

    name: str
    rows: np.ndarray
    columns: list[int]
    targets: np.ndarray
    multiclass: bool


def tfidf_matrix(
    indices: np.ndarray, counts: np.ndarray, starts: np.ndarray, rows: np.ndarray, idf: np.ndarray
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse [len(rows), n_used] TF-IDF matrix (as CommentNet pools it) and the used bucket ids."""
    lens = counts[rows]
    offsets = np.concatenate(([0], np.cumsum(lens)[:-1]))
    gather = np.repeat(starts[rows] - offsets, lens) + np.arange(lens.sum())
    buckets = indices[gather].astype(np.int64)
    row_of = np.repeat(np.arange(len(rows)), lens)
    w = idf[buckets].astype(np.float64)
    norm = np.sqrt(np.bincount(row_of, weights=w * w, minlength=len(rows)))
    w = w / np.maximum(norm, 1e-6)[row_of]
    used, local = np.unique(buckets, return_inverse=True)
    x = sparse.csr_matrix((w, (row_of, local)), shape=(len(rows), len(used)))  # duplicates are summed
    return x, used


def fit_task(x: sparse.csr_matrix, task: LinearTask) -> tuple[np.ndarray, np.ndarray]:
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
        grad_w = L2_C * (xt @ err) + w
        value = L2_C * loss + 0.5 * float((w * w).sum())
        return value / n, np.concatenate([grad_w.ravel(), L2_C * err.sum(0)]) / n

    res = minimize(objective, np.zeros(v * k + k), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER})
    return res.x[: v * k].reshape(v, k), res.x[v * k :]


def fit_linear_heads(
    weight: torch.Tensor,
    bias: torch.Tensor,
    tasks: list[LinearTask],
    indices: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    idf: np.ndarray,
) -> None:
    """Fit every task and write its weights into the [buckets, n_linear] table and bias, in place."""
    for task in tqdm(tasks, desc="linear heads", unit="head"):
        x, used = tfidf_matrix(indices, counts, starts, task.rows, idf)
        w, b = fit_task(x, task)
        cols = torch.tensor(task.columns)
        weight[torch.from_numpy(used).unsqueeze(1), cols.unsqueeze(0)] = torch.from_numpy(w).float()
        bias[cols] = torch.from_numpy(b).float()
