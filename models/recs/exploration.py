"""Exploration slots: a fixed share of list positions goes to videos that have (almost) no interactions yet.

Why: a new upload has no ALS vector until someone interacts with it, and then a short one (solved from a
few interactions under strong regularisation), so ranking alone would rarely show it; popularity never
would. Here a new video waits in a pool until it has `explore_until_interactions` interactions on this
worker's partitions (it "graduates": ranking can take over) or has had `explore_max_impressions` exploration
impressions here without getting them (it had its chance; the budget goes to the next one). The budget is
`explore_share` of the list positions served: a running allowance grows by share x k per list, and a list
gives its last positions to pool videos while the allowance holds whole ones (share 0.05, k 10: the last
position of every other list). Pool videos are taken round robin: the pool is a queue, a new video enters
at its front and a video shown goes to its back, so the least shown come first (explore-first, not a learned bandit: every new video gets the
same budget whatever its early response; what users then do decides through ranking). Nothing is spent
while the pool has no video the user has not seen.

State: the pool and the per-video counts are kept in memory. After a restart or a rebalance the counts come
back from the users' stored histories (`observe` through the recommender's recount) and the pool from the
catalog's uploads; impressions restart at 0 (at worst a video gets its budget again).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable
from itertools import islice

from models.recs.base import Scored

REASON = "explore"


class Exploration:
    """The pool of little-seen videos and the exploration budgets (one per A/B arm, or one)."""

    def __init__(
        self, share: float, until_interactions: int, max_impressions: int, scan: int = 16, pooled: bool | None = None
    ) -> None:
        """`pooled`: keep the pool although `share` is 0 (an A/B arm explores); default: share > 0."""
        self.share, self.until, self.max_impressions, self.scan = share, until_interactions, max_impressions, scan
        self.pooled = share > 0 if pooled is None else pooled
        self._allowance: dict[str, float] = {}  # per budget (an A/B arm's, or ""): list positions owed
        self._pool: OrderedDict[str, int] = OrderedDict()  # video -> exploration impressions, least shown first
        self._interactions: dict[str, int] = {}  # per video seen here, capped at `until`
        self._gone: set[str] = set()  # removed or blocked

    def upload(self, video_id: str) -> None:
        """A video is available: into the pool unless it graduated or is gone; a new one at the front (never
        shown: its turn comes first, not after a whole round of the pool)."""
        if (
            self.pooled
            and video_id not in self._pool
            and video_id not in self._gone
            and self._interactions.get(video_id, 0) < self.until
        ):
            self._pool[video_id] = 0
            self._pool.move_to_end(video_id, last=False)

    def observe(self, video_id: str) -> None:
        """One interaction with a video (a video first seen here through an interaction is new too)."""
        n = self._interactions.get(video_id, 0)
        if n >= self.until:
            return
        self._interactions[video_id] = n + 1
        if n + 1 >= self.until:
            self._pool.pop(video_id, None)
        else:
            self.upload(video_id)

    def remove(self, video_id: str) -> None:
        self._gone.add(video_id)
        self._pool.pop(video_id, None)

    def fill(
        self,
        items: list[Scored],
        k: int,
        seen: Collection[str],
        exclude: Collection[str],
        share: float | None = None,
        budget: str = "",
    ) -> set[str]:
        """Put pool videos in the last positions the allowance holds of a top-k list (in place; a shorter list
        is extended); returns the videos placed. Never one of the user's `seen` videos, one in `exclude`, or
        one already listed. `share` (default: the configured one) and `budget`: an A/B arm's own."""
        share = self.share if share is None else share
        if not self._pool or not share:
            return set()
        # Owed positions carry over to the next list, but never more than one list's worth (lists whose user
        # had seen every candidate must not add up to a burst of exploration in a later list).
        allowance = min(self._allowance.get(budget, 0.0) + share * k, max(1.0, share * k))
        slots = min(int(allowance), k)
        self._allowance[budget] = allowance
        if not slots:
            return set()
        listed = {v for v, _ in items}
        picked: list[str] = []
        for video in list(islice(self._pool, self.scan)):
            if len(picked) == slots:
                break
            if video in seen or video in exclude or video in listed:
                continue
            picked.append(video)
        if not picked:
            return set()
        self._allowance[budget] = allowance - len(picked)
        keep = max(0, min(len(items), k - len(picked)))
        del items[keep:]
        items.extend((video, 0.0) for video in picked)
        for video in picked:
            shown = self._pool.pop(video) + 1
            if shown < self.max_impressions:
                self._pool[video] = shown  # to the back of the queue
        return set(picked)

    def pool(self) -> Iterable[str]:
        """The videos waiting, least shown first."""
        return iter(self._pool)
