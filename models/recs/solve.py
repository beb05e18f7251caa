"""The ALS least-squares step as pure functions, shared by the user side and the item side.

For one row (a user, or an item) with observed counterparts V (m, f) and ALS confidences c (see
`scale_confidence`), implicit ALS minimises sum_all c_j (p_j - x.v_j)^2 + reg |x|^2 with c = 1, p = 0 for unobserved
counterparts. Its closed form needs the Gram matrix G = sum over ALL counterparts of v v^T:

    (G + reg I + V^T diag(|c| - 1) V) x = V^T (c * [c > 0])

which is exactly what implicit's `recalculate_user` solves (Cholesky). We solve it ourselves because the
Gram matrix is then an input: the user side caches Y^T Y once per item refresh instead of per call, and
the item side gets X^T X summed from per-partition partial Grams (see `gram_update`), which implicit has
no way to accept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

# Rows per block of the batched user-side products: a block's operands stay in the cache (see low_rank_solve).
BLOCK = 64


def gram(factors: np.ndarray) -> np.ndarray:
    """Sum of outer products of the rows, in float64 so that streamed updates do not drift."""
    f = np.asarray(factors, dtype=np.float64)
    return f.T @ f


def gram_update(partial: np.ndarray, old: np.ndarray | None, new: np.ndarray | None) -> np.ndarray:
    """A partition's partial Gram after one factor changed from `old` to `new` (None = absent)."""
    out = np.array(partial, dtype=np.float64, copy=True)
    if old is not None:
        o = np.asarray(old, dtype=np.float64)
        out -= np.outer(o, o)
    if new is not None:
        n = np.asarray(new, dtype=np.float64)
        out += np.outer(n, n)
    return out


def gram_sum(partials: Iterable[np.ndarray]) -> np.ndarray:
    """The global Gram from the partitions' partial Grams."""
    return np.sum([np.asarray(p, dtype=np.float64) for p in partials], axis=0)


def scale_confidence(raw: np.ndarray, alpha: float, offset: float) -> np.ndarray:
    """Feedback confidence -> ALS confidence: sign(c) * (offset + alpha |c|)."""
    r = np.asarray(raw, dtype=np.float64)
    return np.sign(r) * (offset + alpha * np.abs(r))


def regularized(gram_all: np.ndarray, regularization: float) -> np.ndarray:
    """G + reg I: the part of every row's system that does not depend on the row."""
    return gram_all + regularization * np.eye(gram_all.shape[0])


def solve_many(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The factors of many rows, A (n, f, f) and b (n, f), in one stacked LAPACK call (the same per-matrix
    solve as `solve_factor`; one call per micro-batch instead of one per row, for the worker's user side)."""
    return np.linalg.solve(a, b[..., None])[..., 0].astype(np.float32)


def gather(
    groups: Iterable[Mapping[str, float]], lookup: Callable[[str], T | None]
) -> tuple[list[int], list[T], list[float], list[int]]:
    """The inputs of `solve_stacked` for many rows (users with their video -> confidence, or videos with
    their user -> confidence): each row's counterparts that `lookup` knows (their item row, or factor) and
    their confidences, in one flat list. Returns (positions of the rows with at least one counterpart,
    counterparts, confidences, bounds): rows with none are left out, as they have nothing to solve."""
    found: list[T] = []
    conf: list[float] = []
    placed, bounds = [], [0]
    for n, group in enumerate(groups):
        for key, c in group.items():
            x = lookup(key)
            if x is not None:
                found.append(x)
                conf.append(c)
        if len(found) > bounds[-1]:
            placed.append(n)
            bounds.append(len(found))
    return placed, found, conf, bounds


def stacked_systems(
    v: np.ndarray, scaled: np.ndarray, bounds: Sequence[int], base: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The systems A (n, f, f) and right-hand sides b (n, f) that `solve_stacked` solves."""
    weighted = v * (np.abs(scaled) - 1.0)[:, None]
    b = np.add.reduceat(v * np.maximum(scaled, 0.0)[:, None], bounds[:-1], axis=0)
    a = np.stack([weighted[s:e].T @ v[s:e] for s, e in zip(bounds, bounds[1:])])
    a += base
    return a, b


def solve_stacked(v: np.ndarray, scaled: np.ndarray, bounds: Sequence[int], base: np.ndarray) -> np.ndarray:
    """`solve_factor` for many rows in one stacked LAPACK call: row n's observed counterparts are
    v[bounds[n]:bounds[n+1]] (float64, every row has at least one), with ALS confidences `scaled` (see
    `scale_confidence`); base = regularized(G, reg). Per-call numpy overhead dominated per row."""
    return solve_many(*stacked_systems(v, scaled, bounds, base))


def padded(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of variable length as one padded block: per row, the flat positions starts + 0..max(lengths)-1
    (0 past its end) and which of them are its own ((rows, m) each), so they go through batched products."""
    offsets = np.arange(int(lengths.max()))
    valid = offsets[None, :] < lengths[:, None]
    return np.where(valid, starts[:, None] + offsets[None, :], 0), valid


def low_rank_solve(
    v: np.ndarray, scaled: np.ndarray, flat: np.ndarray, valid: np.ndarray, base_inv: np.ndarray, block: int = BLOCK
) -> np.ndarray:
    """Per row with few counterparts (flat, valid from `padded`; v float64, `scaled` ALS confidences): its
    counterparts' A^-1 v_j max(c_j, 0), (rows, m, f) padded with zeros. They sum to the factor
    x = A^-1 V^T max(c, 0), and a target's score t.x splits into their dot products with t (`contributions`):
    the explanations' shares come from the same solve. By Woodbury, with A = B + V^T D V, B = base (the same for
    every row, `base_inv` = B^-1 cached), D = diag(|c| - 1) and P = V B^-1: A^-1 V^T = P^T (I + D V P^T)^-1,
    one m x m inverse per row instead of an f x f factorisation, the rest batched products (measured at
    m = 20, f = 64: ~16 us per row against ~55 us for the f x f solves of the factor and its explanation).
    Rows go through in blocks of `block`: a micro-batch's operands at once (~10 MB each for 1,000 rows at m = 20,
    f = 64) left the cache between products; in blocks of 64 a row took 14.3 us instead of 18.4 (in process,
    bit for bit the same result)."""
    out = np.empty((*flat.shape, v.shape[1]))
    for at, solved in low_rank_blocks(v, scaled, flat, valid, base_inv, block):
        out[at] = solved
    return out


def low_rank_blocks(
    v: np.ndarray, scaled: np.ndarray, flat: np.ndarray, valid: np.ndarray, base_inv: np.ndarray, block: int = BLOCK
) -> Iterator[tuple[slice, np.ndarray]]:
    """`low_rank_solve`'s rows a block at a time, (rows of flat, their result): a caller that consumes each block
    while it is in the cache (the worker sums the factors and keeps the explanation rows) avoids writing and
    reading back the whole padded result (~10 MB for 1,000 users), which in the worker took 14-15 us of CPU per
    user, nearly as much as the solve, against ~1.5 in process."""
    for start in range(0, len(flat), block):
        at = slice(start, start + block)
        yield at, _low_rank_block(v, scaled, flat[at], valid[at], base_inv)


def _low_rank_block(
    v: np.ndarray, scaled: np.ndarray, flat: np.ndarray, valid: np.ndarray, base_inv: np.ndarray
) -> np.ndarray:
    users, m = flat.shape
    vv = v[flat] * valid[..., None]
    p = (vv.reshape(users * m, -1) @ base_inv).reshape(vv.shape)
    d = np.where(valid, np.abs(scaled[flat]) - 1.0, 0.0)
    s = np.eye(m) + d[..., None] * (p @ vv.transpose(0, 2, 1))
    return np.linalg.inv(s).transpose(0, 2, 1) @ p * np.where(valid, np.maximum(scaled[flat], 0.0), 0.0)[..., None]


def contributions(a: np.ndarray, weighted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """How much each observed counterpart adds to each target's score (targets, m): the factor is
    x = A^-1 sum_j max(c_j, 0) v_j, so target t's score t.x splits exactly into t.A^-1 v_j max(c_j, 0) per
    counterpart j (implicit's `explain`, from the same system); `weighted` rows are v_j max(c_j, 0)."""
    return np.asarray(targets, dtype=np.float64) @ np.linalg.solve(a, np.asarray(weighted).T)


def solve_factor(
    counterparts: np.ndarray, confidences: np.ndarray, gram_all: np.ndarray, regularization: float
) -> np.ndarray:
    """The ALS factor of one row given its observed counterparts' factors and ALS (scaled) confidences."""
    v = np.asarray(counterparts, dtype=np.float64)
    c = np.asarray(confidences, dtype=np.float64)
    a = regularized(gram_all, regularization) + (v.T * (np.abs(c) - 1.0)) @ v
    return np.linalg.solve(a, v.T @ np.where(c > 0, c, 0.0)).astype(np.float32)
