"""The recommender a worker serves (models.recs.base.Recommender).

Recommendations: streaming ALS (models/recs) with popularity for users it cannot place yet. The user side
runs here, per micro-batch: a touched user's factor is recomputed from their full stored history against
the current item factors, then the index is searched. Each new (user, video) confidence is queued, with the
user's new factor, for the `interactions-by-video` stream where the item side re-solves videos on a cadence.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from contracts.history import EVENT_ID, TS, VIDEO_ID, Row
from indexer.config import IndexSettings
from models.recs.als import StreamingALS, placed_by
from models.recs.arms import Arm, assign
from models.recs.base import Scored, Served, ServeRequest
from models.recs.confidence import FlooredPrefixCache, event_weight, long_term_of, user_confidences, video_confidences
from models.recs.config import RecsSettings
from models.recs.exploration import Exploration
from models.recs.item_side import ItemMessage
from models.recs.popularity import PopularityRecommender
from monitoring.metrics import ALS_UPDATE


def initial_factor(user_id: str, factors: int) -> np.ndarray:
    """A cold user's first factor (no known video yet): small, deterministic per user, so that a restart
    or another worker starts the same user from the same point. Uniform in [0, 0.01) as implicit's init,
    drawn from a hash of the user id (a seeded numpy Generator per user cost ~20 us, ~2% of a worker)."""
    raw = hashlib.shake_256(user_id.encode()).digest(4 * factors)
    return (np.frombuffer(raw, dtype="<u4") * (0.01 / 2**32)).astype(np.float32)


class StreamingRecommender:
    """Implements models.recs.base.Recommender with models.recs.StreamingALS."""

    def __init__(self, settings: RecsSettings, index: IndexSettings, als: StreamingALS) -> None:
        self.s = settings
        self.index_settings = index
        self.als = als
        self._saved_videos = tuple(als.item_ids)  # a model loaded from model_dir: a batch fit's videos
        self.popularity_version = PopularityRecommender.model_version
        # The item solve needs X^T X over ALL users. Each worker keeps one partial sum per `events` partition
        # it owns (users are co-partitioned with their events) and publishes them; `_remote` holds the latest
        # partials of every partition as read back from the user-gram topic (DESIGN.md).
        self.user_factors: dict[str, tuple[int, np.ndarray]] = {}
        self._partials: dict[int, np.ndarray] = {}
        self._gram_changes: dict[int, list[tuple[np.ndarray, float]]] = {}
        self._remote: dict[int, np.ndarray] = {}
        self._batch_gram: np.ndarray | None = None
        self._new_videos: dict[str, set[str]] = {}
        self.item_messages: list[ItemMessage] = []
        self._confidences = FlooredPrefixCache(
            self.s.weights, self.s.history_half_life_s, long_term_of(self.s), settings.prefix_cache_users
        )
        self._counted: dict[str, int] = {}  # user -> partition: their stored rows are in the popularity counts
        self.exploration = Exploration(
            settings.explore_share, settings.explore_until_interactions, settings.explore_max_impressions,
            pooled=settings.explore_share > 0 or any(a.explore_share for a in settings.arms),
        )  # fmt: skip
        # video -> upload time, while fresh; kept only when a freshness prior is on (the section's or an arm's)
        self._uploaded: dict[str, float] = {}
        self._keeps_uploads = settings.freshness > 0 or any(a.freshness for a in settings.arms)
        self._blas = threadpool_limits(1, "blas")  # latency path: one BLAS thread (DESIGN.md pitfalls)

    @property
    def model_version(self) -> str:
        return self.als.model_version

    def learn(
        self, user_id: str, history: list[Row], new: list[Row], changed: Collection[str] = (), partition: int = 0
    ) -> None:
        if user_id not in self._counted:
            # First seen since this worker took the partition on: their stored rows count once, here or in
            # restore_users, whichever comes first.
            new_ids = {r[EVENT_ID] for r in new}
            self._count(user_id, [r for r in history if r[EVENT_ID] not in new_ids], partition)
        self._observe(new, partition)
        self._new_videos.setdefault(user_id, set()).update(r[VIDEO_ID] for r in new)
        self._new_videos[user_id].update(changed)

    def recommend(
        self, user_id: str, history: list[Row], k: int, exclude: set[str], partition: int
    ) -> Served:
        return self.recommend_many([ServeRequest(user_id, history, partition)], k, exclude)[0]

    def recommend_many(
        self, requests: Sequence[ServeRequest], k: int, exclude: Collection[str] = ()
    ) -> list[Served]:
        """A micro-batch of users: confidences (and seen videos) per user, one stacked solve, one search (one
        per A/B arm with its own diversity, when arms are configured)."""
        confs, seen = self._confidences_of(requests)
        arms = [assign(r.user_id, self.s.arms, self.s.ab_salt) for r in requests]
        started = time.perf_counter()
        served: list = [None] * len(requests)
        for arm, at in _by_arm(arms):
            group_confs, group_seen = [confs[i] for i in at], [seen[i] for i in at]
            if _popular_arm(arm):  # the control arm: factors solved (they feed the Gram), never searched
                part = [
                    (x, self.als.popularity.recommend(c, k, {*s, *exclude}), [])
                    for x, c, s in zip(self.als.solve_users(group_confs), group_confs, group_seen)
                ]
            else:
                diversity = arm.diversity if arm is not None else None
                fresh = self._fresh(arm.freshness if arm is not None else None)
                part = self.als.serve_many(group_confs, k, group_seen, exclude, explain=self.s.explain_top,
                                           diversity=diversity, fresh=fresh)  # fmt: skip
            for i, one in zip(at, part):
                served[i] = one
        ALS_UPDATE.labels("user").observe(time.perf_counter() - started)
        out = []
        for r, conf, seen_r, arm, (factor, items, because) in zip(requests, confs, seen, arms, served):
            if placed_by(factor) and not _popular_arm(arm):
                version = self.als.model_version
            else:
                version, because = self.popularity_version, [[] for _ in items]
            share = arm.explore_share if arm is not None else None
            ranked = items[:]
            explored = self.exploration.fill(items, k, seen_r, exclude, share, arm.name if arm is not None else "")
            displaced = tuple(ranked[len(items) - len(explored) :]) if explored else ()
            if explored:
                because = [*because[: len(items) - len(explored)], *([] for _ in explored)]
            if factor is None and conf:
                factor = initial_factor(r.user_id, self.s.factors)
            if factor is not None:
                self._forget_factor(r.user_id)
                self._gram_changes.setdefault(r.partition, []).append((factor, 1.0))
                self.user_factors[r.user_id] = (r.partition, factor)
                new_videos = self._new_videos.pop(r.user_id, ())
                if new_videos:
                    for video, c in sorted(video_confidences(r.history, new_videos, self.s, conf).items()):
                        self.item_messages.append(ItemMessage(video, r.user_id, factor, c))
            reason = "als" if version == self.als.model_version else "popular"
            out.append(Served(items, version, because, reason, frozenset(explored), arm.name if arm else None, displaced))
        return out

    def _confidences_of(self, requests: Sequence[ServeRequest]) -> tuple[list[dict[str, float]], list[set[str]]]:
        """Per request, the user's video -> confidence and the videos they have seen (never recommended)."""
        seen: list[set[str]] = [set() for _ in requests]
        # Histories are the users table's rows: each event_id once (streams.pipeline dedups on append).
        return [self._confidences.confidences(r.user_id, r.history, s) for r, s in zip(requests, seen)], seen

    def ranked(self, requests: Sequence[ServeRequest], k: int, diversity: float) -> list[list[Scored]]:
        """The lists these users would get with another diversity strength, nothing else changed (no factor
        kept, nothing sent to the item side): `eval recs` scores the re-ranking against none in one run."""
        confs, seen = self._confidences_of(requests)
        return [items for _, items, _ in self.als.serve_many(confs, k, seen, diversity=diversity, fresh=self._fresh())]

    def forget_user(self, user_id: str, history: list[Row]) -> None:
        """Erasure: the factor leaves the Gram, and every video the user touched is told to drop them."""
        self._forget_factor(user_id)
        self._confidences.forget(user_id)
        self._new_videos.pop(user_id, None)
        for video in sorted({r[VIDEO_ID] for r in history}):
            self.item_messages.append(ItemMessage(video, user_id, None, 0.0))

    def _count(self, user_id: str, rows: Sequence[Row], partition: int) -> None:
        """A user's stored rows into the popularity counts of their partition, once per ownership: the counts
        a restart or a rebalance lost, recomputed from the durable histories (the latest history_max_events
        rows of each user: older rows of a heavier user are not recounted)."""
        self._observe(rows, partition)
        self._counted[user_id] = partition

    def _observe(self, rows: Sequence[Row], partition: int) -> None:
        for row in rows:
            self.als.observe(row[VIDEO_ID], max(0.0, event_weight(row, self.s.weights)), row[TS], partition)
            self.exploration.observe(row[VIDEO_ID])

    def partials(self) -> dict[int, np.ndarray]:
        """Per `events` partition, X^T X of its users' current factors. Factor changes are queued per served
        user and applied here, one product per partition (an outer product per user showed in profiles)."""
        for partition, changes in self._gram_changes.items():
            factors = np.array([f for f, _ in changes], dtype=np.float64)
            signs = np.array([s for _, s in changes])
            partial = self._partials.setdefault(partition, np.zeros((self.s.factors, self.s.factors)))
            partial += (factors.T * signs) @ factors
        self._gram_changes.clear()
        return self._partials

    def _forget_factor(self, user_id: str) -> None:
        old = self.user_factors.pop(user_id, None)
        if old is not None:
            self._gram_changes.setdefault(old[0], []).append((old[1], -1.0))

    def drop_partitions(self, partitions: set[int]) -> None:
        """Partitions revoked in a rebalance: their users (partial Grams, popularity counts) now live on
        another worker."""
        for user_id in [u for u, (p, _) in self.user_factors.items() if p in partitions]:
            del self.user_factors[user_id]
        for user_id in [u for u, p in self._counted.items() if p in partitions]:
            del self._counted[user_id]
        self.als.popularity.drop_partitions(partitions)
        self._confidences.clear()  # a rebalance is rare; each user's first serve rebuilds theirs
        for p in partitions:
            self._partials.pop(p, None)
            self._gram_changes.pop(p, None)

    def restore_users(self, requests: Sequence[ServeRequest]) -> None:
        """The factor each user of a partition new to this worker would be served with now (solved against
        the current items, as at a serve), so that this worker's partial Grams cover every user of its
        partitions: a Gram of only the users who acted since a restart would be published over the full one
        and steer every item solve. Not through the per-user confidence cache: these users may not return."""
        for r in requests:
            if r.user_id not in self._counted:
                self._count(r.user_id, r.history, r.partition)
        todo = [r for r in requests if r.user_id not in self.user_factors]
        confs = [user_confidences(r.history, self.s, unique=True) for r in todo]
        for r, conf, factor in zip(todo, confs, self.als.solve_users(confs)):
            if factor is None and conf:
                factor = initial_factor(r.user_id, self.s.factors)
            if factor is not None:
                self._gram_changes.setdefault(r.partition, []).append((factor, 1.0))
                self.user_factors[r.user_id] = (r.partition, factor)

    def gram(self) -> np.ndarray:
        """X^T X of all users: the latest batch model's once there is one (its users' factors are in the same
        space as its item vectors, which the served factors of a mixed population are not right after a
        refit); before that, own partials (freshest) plus the latest published partials of the others."""
        partials = self.partials()
        if self._batch_gram is not None:
            return self._batch_gram
        total = np.zeros((self.s.factors, self.s.factors))
        for p in set(partials) | set(self._remote):
            total += partials[p] if p in partials else self._remote[p]
        return total

    def remove_video(self, video_id: str) -> None:
        self.als.remove_videos([video_id])
        self.exploration.remove(video_id)
        self._uploaded.pop(video_id, None)

    def add_video(self, video_id: str, ts: float | None = None) -> None:
        self.exploration.upload(video_id)
        if ts is not None and self._keeps_uploads:
            self._uploaded.setdefault(video_id, ts)

    def _fresh(self, freshness: float | None = None) -> tuple[list[str], np.ndarray] | None:
        """Videos uploaded within 4 freshness half-lives of the latest event seen, with their multipliers
        (`freshness`: an A/B arm's; default the section's)."""
        strength = self.s.freshness if freshness is None else freshness
        now = self.als.popularity.t_last
        if not strength or not self._uploaded or now is None:
            return None
        half_life = self.s.freshness_half_life_s
        for video in [v for v, ts in self._uploaded.items() if now - ts > 4 * half_life]:
            del self._uploaded[video]
        if not self._uploaded:
            return None
        ids = list(self._uploaded)
        age = np.maximum(now - np.fromiter(self._uploaded.values(), dtype=np.float64, count=len(ids)), 0.0)
        return ids, (1.0 + strength * np.exp2(-age / half_life)).astype(np.float32)

    def use_model(self, model_version: str, gram: np.ndarray) -> None:
        self.als.model_version = model_version
        self._batch_gram = np.asarray(gram, dtype=np.float64)

    def set_partial(self, partition: int, partial: np.ndarray | None) -> None:
        if partial is None:
            self._remote.pop(partition, None)
        else:
            self._remote[partition] = partial

    def newer_model(self) -> StreamingALS | None:
        """A new version saved in model_dir, loaded and indexed (slow: call it off the event loop)."""
        version = saved_version(self.s)
        if version is None or version == self.als.model_version:
            return None
        return _load_als(self.s, self.index_settings)

    def swap(self, als: StreamingALS) -> None:
        """Serve a new batch model from the next micro-batch on, without stopping. Live popularity and the
        videos removed since start carry over; user factors are re-solved as users come back."""
        als.popularity = self.als.popularity
        als.remove_videos(sorted(self.als.removed_videos()))
        self.als = als
        self._saved_videos = tuple(als.item_ids)

    def saved_videos(self) -> Sequence[str]:
        return self._saved_videos

    def index_size(self) -> int:
        return self.als.n_items

    def take_item_messages(self) -> list[ItemMessage]:
        out, self.item_messages = self.item_messages, []
        return out

    def upsert_items(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self.als.upsert_items(ids, vectors)


def _popular_arm(arm: Arm | None) -> bool:
    return arm is not None and arm.ranker == "popularity"


def _by_arm(arms: Sequence[Arm | None]) -> list[tuple[Arm | None, list[int]]]:
    """Request positions grouped by arm, in first-seen order (one group of all without arms)."""
    groups: dict[str | None, tuple[Arm | None, list[int]]] = {}
    for i, arm in enumerate(arms):
        groups.setdefault(arm.name if arm is not None else None, (arm, []))[1].append(i)
    return list(groups.values())


def _load_als(settings: RecsSettings, index_settings: IndexSettings) -> StreamingALS:
    """The saved model in settings.model_dir (with its own index), or a cold streaming model."""
    from indexer.factory import make_index
    from monitoring.metered import MeteredIndex

    index = MeteredIndex(make_index(index_settings, settings.factors))
    if not settings.model_dir:
        return StreamingALS(settings, model_version="als-streaming", index=index)
    als = StreamingALS.load(settings.model_dir, settings)
    als.index = index
    if als.n_items:
        index.upsert(als.item_ids, als.item_vectors())
    return als


def saved_version(settings: RecsSettings) -> str | None:
    """model_version of the model saved in settings.model_dir (meta.json is written last)."""
    if not settings.model_dir:
        return None
    try:
        return json.loads((Path(settings.model_dir) / "meta.json").read_text())["model_version"]
    except (OSError, ValueError, KeyError):
        return None


def load_recommender(settings: RecsSettings, index: IndexSettings) -> StreamingRecommender:
    return StreamingRecommender(settings, index, _load_als(settings, index))
