"""A VectorIndex wrapper that meters index operations and search latency.

Wrapping the index (rather than editing each implementation) meters exact and IVF alike, and keeps
the index package free of Prometheus.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from indexer.base import Hits, VectorIndex
from monitoring.metrics import INDEX_OPS, INDEX_SEARCH


class MeteredIndex:
    """Implements indexer.base.VectorIndex by delegating to `inner`."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.kind = inner.kind
        self._upserts = INDEX_OPS.labels("upsert")
        self._removals = INDEX_OPS.labels("remove")

    @property
    def dim(self) -> int:
        return self.inner.dim

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self.inner.upsert(ids, vectors)
        self._upserts.inc(len(ids))

    def remove(self, ids: Collection[str]) -> int:
        removed = self.inner.remove(ids)
        self._removals.inc(removed)
        return removed

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Collection[str] | None = None,
        excludes: Sequence[Collection[str]] | None = None,
    ) -> Hits:
        with INDEX_SEARCH.time():
            return self.inner.search(queries, k, exclude, excludes)

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.inner

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
