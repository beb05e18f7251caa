"""The one interface every vector index implements, and the input checks they share.

Scores are inner products (maximum-inner-product search over ALS factors); ids are the callers' string
video ids, mapped to FAISS's int64 labels inside each implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, Self, runtime_checkable

import numpy as np

Hits = list[list[tuple[str, float]]]


@runtime_checkable
class VectorIndex(Protocol):
    """Thread-safe MIPS index: a search running beside upserts/removes never fails and never returns an id
    whose removal had completed before the search began."""

    kind: str

    @property
    def dim(self) -> int: ...

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add new ids, replace the vectors of known ones; a duplicate id in one call keeps its last vector."""

    def remove(self, ids: Collection[str]) -> int:
        """Remove the ids that are present; return how many were."""

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Collection[str] | None = None,
        excludes: Sequence[Collection[str]] | None = None,
    ) -> Hits:
        """Top-k (id, inner product) per query, best first, never an id in `exclude` nor, for query i, in
        `excludes[i]`: a micro-batch of users (each with their own seen videos) is one search call."""

    def __len__(self) -> int: ...

    def __contains__(self, video_id: object) -> bool: ...

    def snapshot(self) -> bytes:
        """Everything needed to rebuild an identical index (same results, same settings)."""

    @classmethod
    def restore(cls, data: bytes) -> Self: ...


def check_vectors(ids: Sequence[str], vectors: np.ndarray, dim: int) -> np.ndarray:
    """Vectors as C-contiguous float32 (n, dim) matching `ids`, or a ValueError saying what is wrong."""
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, not one string")
    x = _as_matrix(vectors, dim, "vectors")
    if len(ids) != x.shape[0]:
        raise ValueError(f"{len(ids)} ids but {x.shape[0]} vectors")
    if not all(isinstance(i, str) for i in ids):
        raise ValueError("ids must be strings")
    return x


def check_queries(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Queries as C-contiguous float32 (n, dim), or a ValueError."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return _as_matrix(queries, dim, "queries")


def _as_matrix(a: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(a)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x


def query_skips(
    n_queries: int, exclude: Collection[str] | None, excludes: Sequence[Collection[str]] | None, keys: Mapping
) -> tuple[set[str], Sequence[Collection[str]]]:
    """The ids to skip: those of `exclude` that the index holds (`keys`: id -> label), for every query, and per
    query its own `excludes[i]`, as given. Ids, not labels, and no per-query lookup in `keys`: mapping every
    user's seen videos to labels missed the cache on every lookup (~10 us a user with 20 seen videos, ~10% of
    a micro-batch's serving time at 64 factors with IVF); a found label is named anyway."""
    shared = keys.keys() & exclude if exclude else set()
    if excludes is None:
        return shared, [()] * n_queries
    if len(excludes) != n_queries:
        raise ValueError(f"{len(excludes)} exclude sets for {n_queries} queries")
    return shared, excludes


def search_grouped(
    shared: set[str],
    skips: Sequence[Collection[str]],
    k: int,
    n: int,
    ids: Sequence[str] | Mapping[int, str],
    search: Callable[[list[int], int], tuple[np.ndarray, np.ndarray]],
) -> Hits:
    """Per query, its top-k (id, score) whose id is neither in `shared` nor in its skips (`query_skips`).
    `search(positions, fetch)` returns (scores, labels) best first, -1 labels past the end; `ids[label]` names a
    label. Queries are grouped by how many neighbours each must fetch (k plus its skips, rounded up to a power of
    two, at most n), one search per group: a user with 500 seen videos must not make every query of the
    micro-batch fetch 510 (measured: the index search doubled). A skip the index does not hold still counts (an
    over-fetch by the videos removed since the user saw them), as counting only held ones cost a lookup each."""
    out: Hits = [[] for _ in skips]
    if n == 0 or k == 0:
        return out
    groups: dict[int, list[int]] = {}
    for i, skip in enumerate(skips):
        groups.setdefault(min(n, 1 << (k + len(shared) + len(skip) - 1).bit_length()), []).append(i)
    for fetch, group in groups.items():
        scores, labels = search(group, fetch)
        for i, row_scores, row_labels in zip(group, scores.tolist(), labels.tolist()):
            hits, skip = out[i], skips[i]
            for score, label in zip(row_scores, row_labels):
                if label < 0:
                    break
                video = ids[label]
                if video not in skip and video not in shared:
                    hits.append((video, score))
                    if len(hits) == k:
                        break
    return out


def last_occurrence(ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct ids and the row of each one's last occurrence, so a repeated id keeps its last vector."""
    last = {v: i for i, v in enumerate(ids)}
    return list(last), np.fromiter(last.values(), dtype=np.int64, count=len(last))
