"""Diversity: maximal marginal relevance (Carbonell & Goldstein 1998) over the item vectors.

A list of the k nearest videos to a user's factor is often k videos of one niche. MMR re-ranks a larger
candidate pool: each next pick maximises (1 - strength) * relevance - strength * (its largest cosine
similarity to a video already picked), relevance being the candidate's score scaled to [0, 1] within the
user's pool. strength 0 is the plain top-k. One micro-batch at once: k vectorised steps over (users, pool).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.recs.base import Scored


def rerank(
    pools: Sequence[Sequence[Scored]], vectors: Callable[[list[str]], np.ndarray], k: int, strength: float
) -> list[list[Scored]]:
    """Per user, k of their pool (best first by score, as searched) in MMR order, with their own scores.
    `vectors(ids)`: the item vectors of those ids, one row each."""
    if strength <= 0 or not pools:
        return [list(p[:k]) for p in pools]
    size = max(len(p) for p in pools)
    if size == 0:
        return [[] for _ in pools]
    users = len(pools)
    ids = [[v for v, _ in p] for p in pools]
    flat = [v for row in ids for v in row]
    x = np.asarray(vectors(flat), dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    unit = np.zeros((users, size, x.shape[1]), dtype=np.float32)
    scores = np.full((users, size), -np.inf)
    start = 0
    for u, p in enumerate(pools):
        unit[u, : len(p)] = x[start : start + len(p)]
        scores[u, : len(p)] = [s for _, s in p]
        start += len(p)
    valid = np.isfinite(scores)
    lo = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    relevance = np.where(valid, (scores - lo) / np.where(hi > lo, hi - lo, 1.0), -np.inf)
    similarity = unit @ unit.transpose(0, 2, 1)  # cosine, (users, size, size)
    closest = np.zeros((users, size))  # each candidate's largest similarity to a pick (none yet: no penalty)
    rows = np.arange(users)
    picks, found = [], []
    for step in range(min(k, size)):
        gain = (1.0 - strength) * relevance - (strength * closest if step else 0.0)
        pick = gain.argmax(axis=1)
        picks.append(pick)
        found.append(np.isfinite(relevance[rows, pick]))  # False once a user's pool is used up
        relevance[rows, pick] = -np.inf  # picked: never again
        closest = similarity[rows, pick] if step == 0 else np.maximum(closest, similarity[rows, pick])
    order, ok = np.stack(picks, axis=1).tolist(), np.stack(found, axis=1).tolist()
    return [[pools[u][i] for i, good in zip(order[u], ok[u]) if good] for u in range(users)]
