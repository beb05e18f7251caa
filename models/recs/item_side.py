"""The item side of streaming ALS, on the interactions-by-video stream (partitioned by video_id).

Each message carries the interacting user's current factor and their current (recomputed, not
incremental) confidence for the video, so an item solve needs nothing from other partitions except the
global Gram X^T X of user factors. That Gram is a sum of per-partition partial Grams which the user side
keeps current (subtract the user's old outer product, add the new one, applied per partition in one product:
models.recs.serving.StreamingRecommender.partials) and publishes; `StreamingRecommender.gram` adds them up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from models.recs.config import RecsSettings
from models.recs.solve import gather, regularized, scale_confidence, solve_factor, solve_stacked


class ItemMessage(NamedTuple):
    """One record of interactions-by-video (key video_id). confidence == 0 withdraws the user from the
    video (a like taken back, user_delete); factor None keeps the user's last known factor."""

    video_id: str
    user_id: str
    factor: np.ndarray | list[float] | None  # float32 as solved; a list as older messages carried it
    confidence: float


def solve_item(
    pairs: Iterable[tuple[np.ndarray, float]], gram_users: np.ndarray, settings: RecsSettings
) -> np.ndarray | None:
    """A video's ALS factor from its (user factor, confidence) pairs and the global user Gram; None if no
    user. For a new video this is also its initialisation: the exact ALS step given its users."""
    pairs = list(pairs)
    if not pairs:
        return None
    factors = np.stack([np.asarray(f, dtype=np.float32) for f, _ in pairs])
    conf = scale_confidence([c for _, c in pairs], settings.alpha, settings.confidence_offset)
    return solve_factor(factors, conf, gram_users, settings.regularization)


def own(batch_videos: set[str], video_id: str, batch: bool) -> None:
    """Record whether the vector served for `video_id` came from a batch fit (the item side leaves it alone
    until the next fit) or from the item side's own solve."""
    if batch:
        batch_videos.add(video_id)
    else:
        batch_videos.discard(video_id)


class ItemTrainer:
    """State of one video_id partition: who interacted with each video (confidence) and the latest factor
    received for each of those users; a user withdrawn from all of this partition's videos leaves with their
    factor (erasure). Applying a message twice changes nothing (at-least-once).

    Between two batch refits (models/recs/refit.py) it solves only the videos the latest batch model does not
    have (`batch_videos`): new uploads get vectors within seconds, and the batch's own vectors are never
    overwritten by a solve against user factors of another model version, nor by one that knows only the
    interactions seen since this worker started. Measured on MovieLens-100K (in-process `eval recs`, daily
    refits): streaming HR@10 0.1732 this way, 0.1726 re-solving every touched video between refits.

    So it holds the interactions of those videos only: a batch fit's videos are the trainer's (it keeps every
    history), and their state here leaves when a fit covers them. What a worker holds is then bounded by
    what is uploaded and watched between two refits, not by its users (issue #16: a million users' 20M
    interactions held here were gigabytes). A video a later record hands back to this side (`own(v, False)`)
    is solved from the interactions received since.
    """

    def __init__(self, settings: RecsSettings, version: str = "") -> None:
        self.settings = settings
        self.version = version  # the model version the factors received now belong to
        self.video_users: dict[str, dict[str, float]] = {}
        self.user_factors: dict[str, np.ndarray] = {}  # of `version` only
        self.user_videos: dict[str, set[str]] = {}
        self.dirty: set[str] = set()
        self.batch_videos: set[str] = set()
        self.touched: set[str] | None = None  # users whose state changed, when someone journals it (`take_touched`)
        self._restored: dict[str, tuple[str, np.ndarray]] = {}  # restored factors of another version than ours

    def new_model(self, version: str, batch_videos: Iterable[str] | None = None) -> None:
        """A new batch model version is served: the user factors received so far belong to the previous one
        (the next messages carry factors solved against the new item vectors). `batch_videos`: the new
        model's videos, when known at once (the worker learns them record by record: `own`). Restored
        factors received under `version` (state read back before the version was known) count again."""
        if batch_videos is not None:
            self.batch_videos = set(batch_videos)
            self.forget_covered()
        if version == self.version:
            return
        self.version = version
        self.user_factors = {u: f for u, (v, f) in self._restored.items() if v == version}
        self._restored.clear()

    def forget_covered(self) -> None:
        """The state of every video a batch fit covers (`batch_videos`) leaves."""
        for video_id in self.batch_videos & self.video_users.keys():
            self.forget_video(video_id)

    def own(self, video_id: str, batch: bool) -> None:
        """Whether the vector now served for `video_id` came from a batch fit (True: its state leaves) or from
        this side."""
        own(self.batch_videos, video_id, batch)
        if batch and video_id in self.video_users:
            self.forget_video(video_id)

    # --- the state, as stored per user (streams/items.py journals it) ------------------------------
    def user_state(self, user_id: str) -> tuple[str, np.ndarray | None, dict[str, float]] | None:
        """(version of the factor, the factor or None, {video: confidence}) of a user in this partition; None
        once they have no video here."""
        videos = self.user_videos.get(user_id)
        if not videos:
            return None
        factor = self.user_factors.get(user_id)
        version, factor = (self.version, factor) if factor is not None else self._restored.get(user_id, (self.version, None))
        return version, factor, {v: self.video_users[v][user_id] for v in videos}

    def restore(self, user_id: str, version: str, factor: np.ndarray | None, confidences: dict[str, float]) -> None:
        """A user's stored state (`user_state`) read back after a restart or a partition move; their videos
        are solved again at the next tick (whether a solve was owed when the state was stored is not kept).
        Videos a batch fit now covers are left out, and the user is journalled again without them."""
        if not self.batch_videos.isdisjoint(confidences):
            confidences = {v: c for v, c in confidences.items() if v not in self.batch_videos}
            if self.touched is not None:
                self.touched.add(user_id)
            if not confidences:
                return
        for video, confidence in confidences.items():
            self.video_users.setdefault(video, {})[user_id] = confidence
        self.user_videos[user_id] = set(confidences)
        self.dirty.update(confidences)
        if factor is None:
            return
        if version == self.version:
            self.user_factors[user_id] = factor
        else:
            self._restored[user_id] = (version, factor)

    def take_touched(self) -> set[str]:
        out, self.touched = self.touched or set(), set()
        return out

    def apply(self, msg: ItemMessage) -> None:
        if msg.video_id in self.batch_videos and msg.video_id not in self.video_users:
            # A batch fit's video, never solved here: only a newer factor of a user held for other videos counts.
            if msg.factor is not None and msg.user_id in self.user_videos:
                self.user_factors[msg.user_id] = np.asarray(msg.factor, dtype=np.float32)
                self._restored.pop(msg.user_id, None)
                if self.touched is not None:
                    self.touched.add(msg.user_id)
            return
        users = self.video_users.setdefault(msg.video_id, {})
        videos = self.user_videos.setdefault(msg.user_id, set())
        if msg.confidence == 0:
            users.pop(msg.user_id, None)
            videos.discard(msg.video_id)
        else:
            users[msg.user_id] = msg.confidence
            videos.add(msg.video_id)
            if msg.factor is not None:
                # An array now, once: a user's factor is read by every video they touched at each solve.
                self.user_factors[msg.user_id] = np.asarray(msg.factor, dtype=np.float32)
                self._restored.pop(msg.user_id, None)
        if not videos:
            del self.user_videos[msg.user_id]
            self.user_factors.pop(msg.user_id, None)
            self._restored.pop(msg.user_id, None)
        self.dirty.add(msg.video_id)
        if self.touched is not None:
            self.touched.add(msg.user_id)

    def forget_video(self, video_id: str) -> None:
        """A removed or blocked video, or one a batch fit now covers: its interactions leave this partition."""
        for user in list(self.video_users.get(video_id, {})):
            self.apply(ItemMessage(video_id, user, None, 0.0))
        self.video_users.pop(video_id, None)
        self.dirty.discard(video_id)

    def solve_dirty(self, gram_users: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Re-solve every video touched since the last call (the cadence step) that the latest batch model does
        not have: (ids, vectors) for upsert_items and the item-vectors topic. Videos left with no user are skipped. One
        stacked solve for all of them (`solve_item` per video, ~100 us each, showed in profiles), up to
        `item_solve_max_pairs` (video, user) pairs: the videos past it stay touched, for the next call."""
        dirty = sorted(self.dirty - self.batch_videos)
        taken = pairs = 0
        while taken < len(dirty) and pairs < self.settings.item_solve_max_pairs:
            pairs += len(self.video_users.get(dirty[taken], ()))
            taken += 1
        dirty, later = dirty[:taken], dirty[taken:]
        users = (self.video_users.get(v, {}) for v in dirty)
        placed, factors, confidences, bounds = gather(users, self.user_factors.get)
        ids = [dirty[n] for n in placed]
        self.dirty.clear()
        self.dirty.update(later)
        if not ids:
            return ids, np.zeros((0, self.settings.factors), np.float32)
        s = self.settings
        scaled = scale_confidence(confidences, s.alpha, s.confidence_offset)
        base = regularized(gram_users, s.regularization)
        return ids, solve_stacked(np.array(factors, dtype=np.float64), scaled, bounds, base)
