"""Build or restore the configured index implementation."""

from __future__ import annotations

from indexer.base import VectorIndex
from indexer.config import IndexSettings
from indexer.exact import ExactIndex
from indexer.ivf import IvfIndex
from indexer.snapshot import unpack

_KINDS: dict[str, type[ExactIndex] | type[IvfIndex]] = {"exact": ExactIndex, "ivf": IvfIndex}


def make_index(settings: IndexSettings, dim: int) -> VectorIndex:
    if settings.kind == "exact":
        return ExactIndex(dim, search_threads=settings.search_threads)
    return IvfIndex(
        dim,
        nlist=settings.nlist,
        nprobe=settings.nprobe,
        train_per_list=settings.train_per_list,
        norm_headroom=settings.norm_headroom,
        search_threads=settings.search_threads,
    )


def restore_index(data: bytes) -> VectorIndex:
    """Restore a snapshot of any kind (the kind and its settings travel in the snapshot)."""
    kind = unpack(data)[0].get("kind")
    if kind not in _KINDS:
        raise ValueError(f"not an index snapshot (kind {kind!r})")
    return _KINDS[kind].restore(data)
