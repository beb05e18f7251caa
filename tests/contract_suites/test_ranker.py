"""Contract checks over every models.recs.base.Ranker implementation (the per-request models the in-process
evaluation, models/recs/evaluate.py, drives), in the style of River's estimator checks: each check a plain
test function over an implementation built by a factory, run over every implementation by parametrization.

Implementations: StreamingALS cold with upserted item vectors, StreamingALS from a batch fit, and
PopularityRecommender. What each promises about `observe`: PopularityRecommender ranks by time-decayed
engagement; StreamingALS keeps counts only in its popularity, its answer for users it cannot place (no
known video). Both say removed videos leave for good.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pytest

from models.recs.als import StreamingALS
from models.recs.base import Ranker
from models.recs.config import RecsSettings
from models.recs.popularity import PopularityRecommender

F = 8
HALF_LIFE = 3600.0
RECS = RecsSettings(factors=F, regularization=0.1, alpha=2.0, iterations=5, popularity_half_life_s=HALF_LIFE)
CLUSTERS, PER_CLUSTER = 4, 10
CATALOGUE = [f"v{i}" for i in range(CLUSTERS * PER_CLUSTER)]
ALL = 10_000
T0 = 1_000_000.0


@dataclass
class Subject:
    ranker: Ranker
    rankable: set[str]  # what a placed user can be recommended (k large enough): the model's videos
    placed: Mapping[str, float]  # a history this model answers from what it learned
    readd: Callable[[str], None]  # how a video could come back into this model (besides observe)


def _seed_popularity(ranker: Ranker) -> None:
    """Some engagement on every catalogue video (weights 1..5), before any check observes its own."""
    for n, v in enumerate(CATALOGUE):
        ranker.observe(v, float(n % 5 + 1), T0)


@functools.cache
def _fitted() -> StreamingALS:
    histories = {
        f"fit-u{u}": {f"v{(u % CLUSTERS) * PER_CLUSTER + (u // CLUSTERS + j) % PER_CLUSTER}": 3.0 for j in range(5)}
        for u in range(30)
    }
    return StreamingALS.fit(histories, RECS, iterations=5, random_state=0)


def _upsert(als: StreamingALS) -> Callable[[str], None]:
    return lambda v: als.upsert_items([v], np.full((1, F), 10.0, dtype=np.float32))


def als_cold() -> Subject:
    als = StreamingALS(RECS)
    als.upsert_items(CATALOGUE, np.random.default_rng(0).normal(size=(len(CATALOGUE), F)).astype(np.float32))
    _seed_popularity(als)
    return Subject(als, set(CATALOGUE), {"v1": 4.0, "v2": 1.0, "v3": 6.0}, _upsert(als))


def als_fitted() -> Subject:
    als = copy.deepcopy(_fitted())  # checks mutate it
    _seed_popularity(als)
    return Subject(als, set(als.item_ids), {"v1": 4.0, "v2": 1.0, "v3": 6.0}, _upsert(als))


def popularity() -> Subject:
    pop = PopularityRecommender(HALF_LIFE)
    _seed_popularity(pop)
    return Subject(pop, set(CATALOGUE), {"v1": 4.0, "v2": 1.0}, lambda v: pop.observe(v, 1e6, T0 + 10))


IMPLEMENTATIONS = [
    pytest.param(als_cold, id="streaming-als-cold"),
    pytest.param(als_fitted, id="streaming-als-fitted"),
    pytest.param(popularity, id="popularity"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def subject(request: pytest.FixtureRequest) -> Subject:
    return request.param()


def _ids(items) -> list[str]:
    return [v for v, _ in items]


def _check_answer(items, k: int, history: Mapping[str, float], exclude) -> None:
    assert len(items) <= k
    ids = _ids(items)
    assert len(set(ids)) == len(ids)
    assert all(isinstance(v, str) and isinstance(s, float) and np.isfinite(s) for v, s in items)
    scores = [s for _, s in items]
    assert all(a >= b for a, b in itertools.pairwise(scores)), scores  # best first
    assert not set(ids) & set(history)
    assert not set(ids) & set(exclude)


# ---- checks ----------------------------------------------------------------------------------------------------


def test_is_a_ranker(subject: Subject) -> None:
    r = subject.ranker
    declared = {n for n in vars(Ranker) if not n.startswith("_")} | set(Ranker.__annotations__)
    assert {"model_version", "recommend", "observe", "remove_videos"} <= declared
    for name in declared - {"model_version"}:
        assert callable(getattr(r, name)), name
    assert isinstance(r.model_version, str) and r.model_version


@pytest.mark.parametrize("k", [1, 4, ALL])
def test_recommend_top_k_best_first_never_history_nor_excluded(subject: Subject, k: int) -> None:
    r = subject.ranker
    exclude = {"v4", "v5", "v17"}
    histories = {
        "placed": dict(subject.placed),
        "with-dislike": {**subject.placed, "v12": -0.5, "v13": 0.0},  # seen, disliked or taken back: still seen
        "unknown-videos": {"never-heard-of": 2.0},
        "empty": {},
    }
    for name, history in histories.items():
        items = r.recommend(history, k, exclude)
        _check_answer(items, k, history, exclude)
        servable = subject.rankable - set(history) - exclude
        assert set(_ids(items)) <= subject.rankable, name
        assert len(items) == min(k, len(servable)), name  # top-k of what there is
        assert r.recommend(history, k, frozenset(exclude)) == items, name  # any Collection; deterministic
    assert r.recommend(subject.placed, 3) == r.recommend(subject.placed, 3, ())  # exclude defaults to none


def test_remove_videos_is_final(subject: Subject) -> None:
    r = subject.ranker
    top_placed = _ids(r.recommend(subject.placed, 1))[0]
    top_cold = _ids(r.recommend({}, 1))[0]
    removed = {top_placed, top_cold, "blocked-before-any-engagement"}
    r.remove_videos(sorted(removed))
    r.remove_videos([top_placed])  # twice: no error
    histories = (subject.placed, {}, {"never-heard-of": 1.0})
    for history in histories:
        assert not set(_ids(r.recommend(history, ALL))) & removed
    for v in sorted(removed):  # later engagement, a late item update: they never come back
        r.observe(v, 1e9, T0 + 60)
        subject.readd(v)
    for history in histories:
        items = r.recommend(history, ALL)
        assert items and not set(_ids(items)) & removed


def test_observe_feeds_the_time_decayed_popularity_of_users_without_known_videos(subject: Subject) -> None:
    r = subject.ranker
    t = T0 + 100.0
    for _ in range(3):
        r.observe("old-hit", 100.0, t)
    for _ in range(2):
        r.observe("new-hit", 100.0, t + 2 * HALF_LIFE)  # 200 now beats 300 from two half-lives ago (75)
    for cold in ({}, {"never-heard-of": 1.0}):
        assert _ids(r.recommend(cold, 2)) == ["new-hit", "old-hit"]
        assert _ids(r.recommend({**cold, "new-hit": 1.0}, 1)) == ["old-hit"]  # seen: still never recommended
        assert _ids(r.recommend(cold, 1, exclude={"new-hit"})) == ["old-hit"]
    r.observe("later-hit", 1.0, t + 2 * HALF_LIFE + 10 * HALF_LIFE)  # ten half-lives on, 1 beats 200 / 1024
    assert _ids(r.recommend({}, 1)) == ["later-hit"]
