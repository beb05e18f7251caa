"""Time-decayed popularity: the answer for users we know nothing about, and the baseline to beat.

Scores are kept relative to a reference time: adding weight w at time t adds w * 2^((t - t_ref)/h). Every
score decays by the same factor as time passes, so the ranking never needs a sweep over all videos; the
reference moves forward (one rescale) before the exponent could overflow. Scores are reported decayed to the
latest event observed, which does not depend on the order events were observed in (a restart recounts them
in another order).

Counts are kept per `events` partition (plus a base loaded with a saved model), so that a worker's counts
are those of the partitions it holds: a revoked partition's are dropped, and a partition taken on is
recounted from its users' stored histories (models.recs.serving.StreamingRecommender.restore_users).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import numpy as np

from models.recs.base import Scored, top_k

_MAX_EXPONENT = 500.0
BASE = -1  # the counts loaded with a saved model: no partition, never dropped


class PopularityRecommender:
    """Ranks videos by decayed engagement. half_life_s=inf gives all-time popularity."""

    model_version = "popularity-v1"

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.t_ref: float | None = None
        self.t_last: float | None = None
        self.ids: list[str] = []
        self._row: dict[str, int] = {}
        self._scores = np.zeros(1024, dtype=np.float64)
        self._parts: dict[int, np.ndarray] = {}
        self._removed: set[str] = set()

    def observe(self, video_id: str, weight: float, ts: float, partition: int = 0) -> None:
        """Learning hook: one interaction's (non-negative) weight at event time ts, from an `events`
        partition."""
        if weight <= 0 or video_id in self._removed:
            return
        if self.t_ref is None:
            self.t_ref = ts
        self.t_last = ts if self.t_last is None else max(self.t_last, ts)
        exponent = (ts - self.t_ref) / self.half_life_s
        if exponent > _MAX_EXPONENT:
            self._rescale(2.0 ** (-exponent))
            self.t_ref, exponent = ts, 0.0
        row = self._row.get(video_id)
        if row is None:
            row = self._row[video_id] = len(self.ids)
            self.ids.append(video_id)
            if row >= len(self._scores):
                self._scores = _grown(self._scores)
        part = self._parts.get(partition)
        if part is None or row >= len(part):
            part = self._parts[partition] = _grown(part, len(self._scores))
        added = weight * 2.0**exponent
        part[row] += added
        self._scores[row] += added

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions revoked in a rebalance: their counts now live with their new owner. The sum is rebuilt
        from what stays (not subtracted: residues of rounding would rank videos nobody here engaged with)."""
        dropped = [self._parts.pop(p) for p in set(partitions) if p != BASE and p in self._parts]
        if dropped:
            self._scores[:] = 0.0
            for part in self._parts.values():
                self._scores[: len(part)] += part

    def remove_videos(self, video_ids: Iterable[str]) -> None:
        """Removed or blocked videos never come back, whatever engagement arrives later."""
        for vid in video_ids:
            self._removed.add(vid)
            row = self._row.get(vid)
            if row is not None:
                self._scores[row] = 0.0
                for part in self._parts.values():
                    if row < len(part):
                        part[row] = 0.0

    def _decay(self) -> float:
        """What the kept scores (relative to t_ref) are multiplied by to read them as of the latest event."""
        if self.t_ref is None or self.t_last is None or self.t_last == self.t_ref:
            return 1.0
        return 2.0 ** ((self.t_ref - self.t_last) / self.half_life_s)

    def scores(self) -> np.ndarray:
        """Current scores, aligned with `ids`, decayed to the latest event observed (a copy)."""
        return self._scores[: len(self.ids)] * self._decay()

    def weight_of(self, video_id: str) -> float:
        """A video's score now (decayed to the latest event; its count, with an infinite half-life)."""
        row = self._row.get(video_id)
        return 0.0 if row is None else float(self._scores[row] * self._decay())

    def recommend(self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()) -> list[Scored]:
        rows = [self._row[v] for v in (*history, *exclude) if v in self._row]
        scores = self.scores()
        scores[rows] = -np.inf
        scores[scores <= 0] = -np.inf
        return top_k(self.ids, scores, k)

    def _rescale(self, factor: float) -> None:
        self._scores *= factor
        for part in self._parts.values():
            part *= factor

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save with a model (see als.save): the sum over every partition, as one base."""
        return {
            "pop_ids": np.array(self.ids, dtype=np.str_),
            "pop_scores": self._scores[: len(self.ids)].copy(),
            "pop_t_ref": np.array([np.nan if self.t_ref is None else self.t_ref]),
            "pop_t_last": np.array([np.nan if self.t_last is None else self.t_last]),
            "pop_removed": np.array(sorted(self._removed), dtype=np.str_),
        }

    @classmethod
    def from_state(cls, half_life_s: float, arrays: Mapping[str, np.ndarray]) -> PopularityRecommender:
        pop = cls(half_life_s)
        t_ref = float(arrays["pop_t_ref"][0])
        pop.t_ref = None if np.isnan(t_ref) else t_ref
        t_last = float(arrays["pop_t_last"][0]) if "pop_t_last" in arrays else np.nan  # saved before it existed
        pop.t_last = pop.t_ref if np.isnan(t_last) else t_last
        pop.ids = [str(v) for v in arrays["pop_ids"]]
        pop._row = {v: i for i, v in enumerate(pop.ids)}
        pop._scores = np.concatenate([arrays["pop_scores"].astype(np.float64), np.zeros(1024)])
        pop._parts = {BASE: pop._scores.copy()}
        pop._removed = {str(v) for v in arrays["pop_removed"]}
        return pop


def _grown(array: np.ndarray | None, size: int = 1024) -> np.ndarray:
    """A copy of `array` (or zeros) at least `size` long, doubled past its own length."""
    if array is None:
        return np.zeros(size)
    out = np.zeros(max(size, 2 * len(array)))
    out[: len(array)] = array
    return out
