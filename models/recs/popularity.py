"""Time-decayed popularity: the answer for users we know nothing about, and the baseline to beat.

Scores are kept relative to a reference time: adding weight w at time t adds w * 2^((t - t_ref)/h). Every
score decays by the same factor as time passes, so the ranking never needs a sweep over all videos; the
reference moves forward (one rescale) before the exponent could overflow.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import numpy as np

from models.recs.base import Scored, top_k

_MAX_EXPONENT = 500.0


class PopularityRecommender:
    """Ranks videos by decayed engagement. half_life_s=inf gives all-time popularity."""

    model_version = "popularity-v1"

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.t_ref: float | None = None
        self.ids: list[str] = []
        self._row: dict[str, int] = {}
        self._scores = np.zeros(1024, dtype=np.float64)
        self._removed: set[str] = set()

    def observe(self, video_id: str, weight: float, ts: float) -> None:
        """Learning hook: one interaction's (non-negative) weight at event time ts."""
        if weight <= 0 or video_id in self._removed:
            return
        if self.t_ref is None:
            self.t_ref = ts
        exponent = (ts - self.t_ref) / self.half_life_s
        if exponent > _MAX_EXPONENT:
            self._scores *= 2.0 ** (-exponent)
            self.t_ref, exponent = ts, 0.0
        row = self._row.get(video_id)
        if row is None:
            row = self._row[video_id] = len(self.ids)
            self.ids.append(video_id)
            if row >= len(self._scores):
                self._scores = np.concatenate([self._scores, np.zeros_like(self._scores)])
        self._scores[row] += weight * 2.0**exponent

    def remove_videos(self, video_ids: Iterable[str]) -> None:
        """Removed or blocked videos never come back, whatever engagement arrives later."""
        for vid in video_ids:
            self._removed.add(vid)
            row = self._row.get(vid)
            if row is not None:
                self._scores[row] = 0.0

    def scores(self) -> np.ndarray:
        """Current relative scores, aligned with `ids` (a view; do not modify)."""
        return self._scores[: len(self.ids)]

    def recommend(self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()) -> list[Scored]:
        rows = [self._row[v] for v in (*history, *exclude) if v in self._row]
        scores = self.scores().copy()
        scores[rows] = -np.inf
        scores[scores <= 0] = -np.inf
        return top_k(self.ids, scores, k)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save with a model (see als.save)."""
        return {
            "pop_ids": np.array(self.ids, dtype=np.str_),
            "pop_scores": self.scores().copy(),
            "pop_t_ref": np.array([np.nan if self.t_ref is None else self.t_ref]),
            "pop_removed": np.array(sorted(self._removed), dtype=np.str_),
        }

    @classmethod
    def from_state(cls, half_life_s: float, arrays: Mapping[str, np.ndarray]) -> PopularityRecommender:
        pop = cls(half_life_s)
        t_ref = float(arrays["pop_t_ref"][0])
        pop.t_ref = None if np.isnan(t_ref) else t_ref
        pop.ids = [str(v) for v in arrays["pop_ids"]]
        pop._row = {v: i for i, v in enumerate(pop.ids)}
        pop._scores = np.concatenate([arrays["pop_scores"].astype(np.float64), np.zeros(1024)])
        pop._removed = {str(v) for v in arrays["pop_removed"]}
        return pop
