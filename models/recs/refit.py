"""The slow speed of two-speed ALS: when to re-fit the batch model, and the fit itself. One implementation,
called by the deployed trainer (streams/trainer.py, on the users table's changelog) and by the in-process
evaluation (models/recs/evaluate.py), so that both run the same policy on the same code.

Policy (RecsSettings): no fit before `refit_min_interactions` stored interactions; after that, a refit once
the stored interactions changed by `refit_growth` times those of the last fit (a geometric schedule: a cold
system refits often while it learns, then rarely), or once event time moved `refit_interval_s` past the last
fit with anything changed. Event time, not wall time: a replay at any speed refits at the same points.

Each refit is warm-started from the previous one (implicit's factors seeded with the known rows), so it
needs few iterations; the first fit of a process runs the full `iterations`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.history import TS, Row
from models.recs.als import StreamingALS
from models.recs.confidence import user_confidences
from models.recs.config import RecsSettings
from models.recs.popularity import PopularityRecommender


@dataclass(frozen=True)
class FitMark:
    """What the last fit saw: its version, the stored interactions, and the latest event time."""

    model_version: str
    interactions: int
    until_ts: float
    users: int
    videos: int
    seconds: float


class Refitter:
    """Decides when to refit (`due`) and fits (`fit`): the caller keeps the histories and reports changes."""

    def __init__(self, settings: RecsSettings, *, seed: int = 0) -> None:
        self.settings = settings
        self.seed = seed
        self.model: StreamingALS | None = None
        self.last: FitMark | None = None
        self.changed = 0  # stored interactions added or removed since the last fit
        self.newest_ts = float("-inf")
        self.fits = 0

    def note(self, changed: int, newest_ts: float | None = None) -> None:
        """`changed` stored interactions were added or removed; `newest_ts`: the latest event time seen."""
        self.changed += changed
        if newest_ts is not None and newest_ts > self.newest_ts:
            self.newest_ts = newest_ts

    def due(self, interactions: int) -> bool:
        """Whether a refit is due, with `interactions` stored now."""
        s = self.settings
        if interactions < s.refit_min_interactions or not self.changed:
            return False
        if self.last is None:
            return True
        return (
            self.changed >= s.refit_growth * max(self.last.interactions, 1)
            or self.newest_ts - self.last.until_ts >= s.refit_interval_s
        )

    def fit(
        self, histories: Mapping[str, Sequence[Row]], popularity: PopularityRecommender | None = None
    ) -> StreamingALS:
        """A new model version from every user's stored rows, warm-started from the previous fit."""
        started = time.perf_counter()
        conf = {u: user_confidences(rows, self.settings, unique=True) for u, rows in histories.items()}
        conf = {u: c for u, c in conf.items() if c}
        warm = self.model if self.model is not None and self.model.n_items else None
        iterations = self.settings.refit_iterations if warm is not None else None
        model = StreamingALS.fit(
            conf, self.settings, popularity, iterations=iterations, random_state=self.seed, warm_start=warm
        )
        interactions = sum(len(rows) for rows in histories.values())
        newest = max((rows[-1][TS] for rows in histories.values() if rows), default=self.newest_ts)
        self.newest_ts = max(self.newest_ts, newest)
        self.model = model
        self.last = FitMark(
            model.model_version, interactions, self.newest_ts, len(conf), model.n_items,
            round(time.perf_counter() - started, 3),
        )  # fmt: skip
        self.changed = 0
        self.fits += 1
        return model
