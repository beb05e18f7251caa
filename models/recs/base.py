"""What the interactions agent needs from a recommender, whichever model serves."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import numpy as np

Scored = tuple[str, float]  # (video_id, score)


class Recommender(Protocol):
    """A recommender the agent calls once per user per micro-batch.

    `history` is the user's video_id -> confidence (models.recs.confidence.confidences of their stored
    interactions); seen videos are never recommended, nor those in `exclude` (removed, blocked).
    """

    model_version: str

    def recommend(self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()) -> list[Scored]: ...

    def observe(self, video_id: str, weight: float, ts: float) -> None:
        """Learning hook for one interaction with its confidence weight at event time."""

    def remove_videos(self, video_ids: Sequence[str]) -> None:
        """Removed or blocked videos leave the model for good."""


def top_k(ids: Sequence[str], scores: np.ndarray, k: int) -> list[Scored]:
    """The k best (id, score) pairs, best first, skipping -inf (excluded) entries."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k]
    best = part[np.argsort(-scores[part], kind="stable")]
    return [(ids[i], float(scores[i])) for i in best if np.isfinite(scores[i])]
