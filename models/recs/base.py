"""The recommender contracts: `Recommender`, everything the worker's app and pipeline call (implemented by
models.recs.serving.StreamingRecommender), and `Ranker`, the per-request model underneath it (StreamingALS,
PopularityRecommender; the in-process evaluation, models/recs/evaluate.py, drives these directly). One
contract suite runs over the implementations of each (tests/contract_suites/)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from contracts.history import Row
from models.recs.item_side import ItemMessage

Scored = tuple[str, float]  # (video_id, score)


class Served(NamedTuple):
    """One user's list: top-k (video_id, score) best first, the model version that produced them, and per
    item the videos of the user's history that added most to its score (empty: not explained, e.g.
    popularity, which no history explains, or an exploration slot)."""

    items: list[Scored]
    model_version: str
    because: list[list[str]]
    reason: str = "als"  # what produced the list: "als", or "popular" for a user no model can place yet
    explored: frozenset[str] = frozenset()  # items in exploration slots (models/recs/exploration.py), last
    arm: str | None = None  # the user's A/B arm (models/recs/arms.py); None: no experiment
    displaced: tuple[Scored, ...] = ()  # the ranked items the exploration slots pushed out, best first

    def unexplored(self) -> list[Scored]:
        """The list as ranked, before exploration slots replaced its tail (`eval recs` scores both)."""
        if not self.explored:
            return self.items
        return [i for i in self.items if i[0] not in self.explored] + list(self.displaced)


class ServeRequest(NamedTuple):
    """One user to serve in a micro-batch: their stored history and `events` partition (their state lives
    with it)."""

    user_id: str
    history: list[Row]
    partition: int


@runtime_checkable
class Recommender(Protocol):
    """What the worker calls: learning and serving per micro-batch on the user side, the item side's inputs
    and outputs, the per-partition Gram sums, rebalances, erasure, and a newer saved model swapped in.

    Histories are the users table's stored rows (contracts.history), each event_id once and in time order.
    """

    @property
    def model_version(self) -> str: ...

    def learn(
        self, user_id: str, history: list[Row], new: list[Row], changed: Collection[str] = (), partition: int = 0
    ) -> None:
        """The user's full stored history after this batch, the rows this batch added, the videos whose
        rows changed without a new one (a comment's sentiment arrived), and the user's `events` partition."""

    def recommend_many(
        self, requests: Sequence[ServeRequest], k: int, exclude: Collection[str] = ()
    ) -> list[Served]:
        """Per request, top-k (video_id, score), best first, the model_version that produced them and why
        (`Served`); never a video of the user's history nor one in `exclude`. One call per micro-batch, so a
        model can solve and search for all its users at once."""

    def forget_user(self, user_id: str, history: list[Row]) -> None:
        """Erasure: the user's factor leaves the model, and every video they touched is told to drop them."""

    def remove_video(self, video_id: str) -> None:
        """A removed or blocked video is never recommended again."""

    def add_video(self, video_id: str, ts: float | None = None) -> None:
        """A video is available (an upload, seen live or in the catalog's recovery), uploaded at `ts` when
        known: a new one may be shown in exploration slots until it has interactions of its own, and a recent
        one's score gets the freshness prior."""

    def index_size(self) -> int: ...

    def take_item_messages(self) -> list[ItemMessage]:
        """Messages for the item side (interactions-by-video), queued since the last call."""

    def upsert_items(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """New item vectors (from the item-vectors topic) are served from the next micro-batch on."""

    def partials(self) -> Mapping[int, np.ndarray]:
        """Per owned `events` partition, X^T X of its users' current factors: published to user-gram."""

    def set_partial(self, partition: int, partial: np.ndarray | None) -> None:
        """Another owner's published partial Gram of `partition` (None: withdrawn)."""

    def gram(self) -> np.ndarray:
        """The item solve's Gram X^T X of all users: the latest batch model's (`use_model`), or before the
        first one, own partials plus the others' published ones."""

    def use_model(self, model_version: str, gram: np.ndarray) -> None:
        """A batch model version published by the trainer (its item vectors come through `upsert_items`): its
        version is stamped on outputs from now on, and its users' Gram is the item solve's."""

    def drop_partitions(self, partitions: set[int]) -> None:
        """Partitions revoked in a rebalance: their users now live on another worker."""

    def restore_users(self, requests: Sequence[ServeRequest]) -> None:
        """Users of partitions this worker just took on (a restart, a rebalance), with their stored
        histories: their factors join the partial Grams without serving them, and their rows the
        popularity counts; a user already served (or learned) since is left as is."""

    def newer_model(self) -> object | None:
        """A newer saved model, loaded and ready for `swap`, or None (slow: call it off the event loop)."""

    def swap(self, model: object) -> None:
        """Serve `model` (from `newer_model`) from the next micro-batch on, without stopping."""

    def saved_videos(self) -> Sequence[str]:
        """The videos of the batch model loaded from model_dir at start or at the last `swap` (none for a cold
        start): a batch fit's, which the item side leaves alone."""


class Ranker(Protocol):
    """One user's top-k from their video_id -> confidence map (models.recs.confidence); seen videos are never
    recommended, nor those in `exclude` (removed, blocked)."""

    model_version: str

    def recommend(self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()) -> list[Scored]: ...

    def observe(self, video_id: str, weight: float, ts: float, partition: int = 0) -> None:
        """Learning hook for one interaction with its confidence weight at event time, from an `events`
        partition (counts a worker keeps per partition leave with it in a rebalance)."""

    def remove_videos(self, video_ids: Sequence[str]) -> None:
        """Removed or blocked videos leave the model for good."""


def top_k(ids: Sequence[str], scores: np.ndarray, k: int) -> list[Scored]:
    """The k best (id, score) pairs, best first, skipping -inf (excluded) entries."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k]
    best = part[np.argsort(-scores[part], kind="stable")]
    return [(ids[i], s) for i, s in zip(best.tolist(), scores[best].tolist()) if math.isfinite(s)]
