"""Prequential (test-then-train) evaluation: a time-ordered replay through the same model code the agent
runs. Before an interaction is learned: is its video in the user's current top-10 (seen videos excluded)?

Three contenders in one run, over the same events:
- streaming: StreamingALS items from the latest daily refit, re-solved by the item side (ItemTrainer, fed
  the same messages the agent sends) every `item_every` events; user factors recomputed from the full
  history on every event; users with no known video get decayed popularity.
- batch_periodic: the daily implicit refit serving its own user and item factors until the next refit;
  users the refit has not seen get decayed popularity.
- popularity: all-time interaction counts; popularity_decayed: popularity-v1 (confidence-weighted, with
  the configured half-life), the cold-start answer of the other two.
The first `warmup` fraction of events is learned but not evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from contracts.history import HistoryRow
from models.recs.als import StreamingALS
from models.recs.base import Scored
from models.recs.confidence import append, event_weight, user_confidences
from models.recs.config import RecsSettings
from models.recs.item_side import ItemMessage, ItemTrainer
from models.recs.popularity import PopularityRecommender
from models.recs.solve import gram, gram_update

DAY_S = 86_400.0
K = 10


class Group(NamedTuple):
    """The interactions one user had with one video at one time (e.g. a rating = watch + maybe like)."""

    user_id: str
    video_id: str
    ts: float
    interactions: tuple[HistoryRow, ...]


@dataclass
class Tally:
    n: int = 0
    hits: int = 0
    ndcg: float = 0.0
    unknown: int = 0

    def add(self, recs: Sequence[Scored], target: str, unknown: bool) -> None:
        self.n += 1
        self.unknown += unknown
        for rank, (vid, _) in enumerate(recs[:K]):
            if vid == target:
                self.hits += 1
                self.ndcg += 1.0 / math.log2(rank + 2)
                break

    def as_dict(self) -> dict[str, float | int]:
        n = max(self.n, 1)
        hr, ndcg = round(self.hits / n, 4), round(self.ndcg / n, 4)
        return {"hr@10": hr, "ndcg@10": ndcg, "unknown_user_events": self.unknown}


def ml100k_path() -> Path:
    import recbole

    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"


def ml100k_events(path: Path | None = None) -> list[Group]:
    """MovieLens-100K as interactions: every rating is a full watch, rating >= 4 also a like."""
    rows = []
    with open(path or ml100k_path(), encoding="utf-8") as fh:
        next(fh)
        for n, line in enumerate(fh):
            user, item, rating, ts = line.rstrip("\n").split("\t")
            rows.append((float(ts), n, user, item, float(rating)))
    rows.sort()
    out = []
    for ts, n, user, item, rating in rows:
        acts = [HistoryRow(f"{n}w", item, "watch", ts, 1.0)]
        if rating >= 4:
            acts.append(HistoryRow(f"{n}l", item, "like", ts))
        out.append(Group(user, item, ts, tuple(acts)))
    return out


def synthetic_events(users: int, videos: int, events: int, seed: int, days: float = 14.0) -> list[Group]:
    """Known latent structure: videos belong to clusters, each user's taste is a sparse mixture of clusters;
    videos upload over time (a third exist at the start). In-taste picks are watched longer and liked;
    exploration picks are skipped more often."""
    rng = np.random.default_rng(seed)
    n_clusters = max(4, int(round(math.sqrt(videos) / 2)))
    span = days * DAY_S
    cluster = rng.integers(0, n_clusters, videos)
    quality = rng.lognormal(0.0, 1.0, videos)
    upload = np.where(rng.random(videos) < 1 / 3, 0.0, rng.uniform(0, span, videos))
    taste = rng.dirichlet(np.full(n_clusters, 0.05), users)
    taste_cdf = np.cumsum(taste, axis=1)
    activity = rng.lognormal(0.0, 1.0, users)
    ts = np.sort(rng.uniform(0, span, events))
    who = rng.choice(users, events, p=activity / activity.sum())
    explore = rng.random(events) < 0.1
    picked = (taste_cdf[who] < rng.random(events)[:, None]).sum(axis=1).clip(0, n_clusters - 1)
    picked = np.where(explore, rng.integers(0, n_clusters, events), picked)
    # Per cluster: videos by upload time with cumulative quality, so "uploaded by ts" is a prefix.
    order = np.lexsort((upload, cluster))
    starts = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    cum = np.zeros(videos)
    for c in range(n_clusters):
        seg = order[starts[c] : starts[c + 1]]
        cum[starts[c] : starts[c + 1]] = np.cumsum(quality[seg])
    vid = np.empty(events, dtype=np.int64)
    for c in range(n_clusters):
        sel = np.flatnonzero(picked == c)
        seg = order[starts[c] : starts[c + 1]]
        avail = np.searchsorted(upload[seg], ts[sel], side="right").clip(1, None)
        total = cum[starts[c] + avail - 1]
        drawn = np.searchsorted(cum[starts[c] : starts[c + 1]], rng.random(len(sel)) * total)
        vid[sel] = seg[np.minimum(drawn, avail - 1)]
    ratio = np.where(explore, rng.beta(1, 4, events), rng.beta(5, 2, events))
    like = (ratio > 0.8) & (rng.random(events) < 0.5)
    out = []
    for n in range(events):
        u, v, t = f"u{who[n]}", f"v{vid[n]}", float(ts[n])
        kind = "skip" if ratio[n] < 0.15 else "watch"
        acts = [HistoryRow(f"{n}w", v, kind, t, float(ratio[n]))]
        if like[n]:
            acts.append(HistoryRow(f"{n}l", v, "like", t))
        out.append(Group(u, v, t, tuple(acts)))
    return out


@dataclass
class _State:
    """Everything the replay has learned so far (what the agents' tables would hold)."""

    histories: dict[str, list[HistoryRow]] = field(default_factory=dict)
    conf: dict[str, dict[str, float]] = field(default_factory=dict)
    user_factors: dict[str, np.ndarray] = field(default_factory=dict)
    user_gram: np.ndarray | None = None


def _micro_batches(groups: Sequence[Group], size: int) -> Iterator[Sequence[Group]]:
    for i in range(0, len(groups), size):
        yield groups[i : i + size]


def prequential(
    groups: Sequence[Group],
    settings: RecsSettings,
    *,
    warmup: float = 0.2,
    refit_every_s: float = DAY_S,
    item_every: int = 200,
    batch_size: int = 1,
    eval_fraction: float = 1.0,
    refit_iterations: int | None = None,
    seed: int = 0,
    curve_every: int = 0,
) -> dict:
    """Replay `groups` (time-ordered) in micro-batches; returns the JSON-ready result. With `curve_every`,
    "curves" also holds each model's cumulative [evaluated events, hits@10] every that many evaluated events."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    warm_n = int(len(groups) * warmup)
    tallies = {name: Tally() for name in ("streaming", "batch_periodic", "popularity", "popularity_decayed")}
    curves: dict[str, list[list[float]]] = {name: [] for name in tallies}
    state = _State()
    pop_all = PopularityRecommender(math.inf)
    pop_decayed = PopularityRecommender(settings.popularity_half_life_s)
    streaming = StreamingALS(settings, pop_decayed)
    batch: StreamingALS | None = None
    batch_rows: dict[str, int] = {}
    trainer = ItemTrainer(settings)
    next_refit = math.inf
    since_items = 0
    refits = 0

    def refit(now: float) -> None:
        nonlocal batch, batch_rows, streaming, next_refit, refits
        iterations = None if batch is None else refit_iterations
        batch = StreamingALS.fit(
            state.conf, settings, pop_decayed, iterations=iterations, random_state=seed, warm_start=batch
        )
        batch_rows = {u: i for i, u in enumerate(batch.user_ids)}
        streaming = StreamingALS(settings, pop_decayed, model_version=batch.model_version)
        streaming.upsert_items(batch.item_ids, batch.item_vectors())
        state.user_factors = dict(zip(batch.user_ids, batch.user_factors))
        state.user_gram = gram(batch.user_factors)
        trainer.load(state.conf, state.user_factors)
        next_refit = now + refit_every_s
        refits += 1

    with threadpool_limits(1, "blas"):
        for n0, mb in zip(range(0, len(groups), batch_size), _micro_batches(groups, batch_size)):
            if n0 >= warm_n:
                if next_refit == math.inf or mb[0].ts >= next_refit:
                    refit(mb[0].ts)
                for g in mb:
                    seen = state.conf.get(g.user_id, {})
                    if g.video_id in seen or rng.random() >= eval_fraction:
                        continue
                    x, recs = streaming.serve(seen, K)
                    tallies["streaming"].add(recs, g.video_id, x is None)
                    row = batch_rows.get(g.user_id)
                    if row is None:
                        recs = pop_decayed.recommend(seen, K)
                    else:
                        recs = batch.search(batch.user_factors[row], seen, K, ())
                    tallies["batch_periodic"].add(recs, g.video_id, row is None)
                    tallies["popularity"].add(pop_all.recommend(seen, K), g.video_id, False)
                    tallies["popularity_decayed"].add(pop_decayed.recommend(seen, K), g.video_id, False)
                    if curve_every and tallies["streaming"].n % curve_every == 0:
                        for name, t in tallies.items():
                            curves[name].append([t.n, t.hits])
            _learn(mb, state, streaming, trainer, settings, pop_all)
            if streaming.n_items:
                since_items += len(mb)
                if since_items >= item_every:
                    ids, vecs = trainer.solve_dirty(state.user_gram)
                    streaming.upsert_items(ids, vecs)
                    since_items = 0
    result = {name: t.as_dict() for name, t in tallies.items()}
    result.update(
        events=tallies["streaming"].n,
        replayed=len(groups),
        refits=refits,
        seconds=round(time.perf_counter() - started, 1),
    )
    if curve_every:
        result["curves"] = curves
    return result


def _learn(
    mb: Sequence[Group],
    state: _State,
    streaming: StreamingALS,
    trainer: ItemTrainer,
    settings: RecsSettings,
    pop_all: PopularityRecommender,
) -> None:
    """What the agent does per micro-batch: append to histories, recompute confidences and (once items
    exist) user factors, keep the users' Gram current, and send the item side its messages."""
    touched: dict[str, list[str]] = {}
    for g in mb:
        h = state.histories.get(g.user_id, [])
        state.histories[g.user_id] = append(h, g.interactions, settings.history_max_events)
        touched.setdefault(g.user_id, []).append(g.video_id)
        for i in g.interactions:
            streaming.observe(i.video_id, max(0.0, event_weight(i, settings.weights)), i.ts)
        pop_all.observe(g.video_id, 1.0, g.ts)
    for user, videos in touched.items():
        conf = state.conf[user] = user_confidences(state.histories[user], settings)
        if not streaming.n_items:
            continue
        x = streaming.user_factor(conf)
        if x is None:
            continue
        state.user_gram = gram_update(state.user_gram, state.user_factors.get(user), x)
        state.user_factors[user] = x
        for vid in videos:
            trainer.apply(ItemMessage(vid, user, x, conf.get(vid, 0.0)))


# Time scales differ from a live short-video platform (MovieLens spans 7 months), so each dataset replays
# with these settings on top of the configured ones; the JSON reports the effective values.
DATASET_OVERRIDES: dict[str, dict] = {
    "ml100k": {"popularity_half_life_s": 30 * DAY_S},
    "synthetic": {"popularity_half_life_s": 3 * DAY_S},
}
# Replay knobs per dataset: the synthetic run evaluates a sample so it stays within a few minutes.
DATASET_REPLAY: dict[str, dict] = {
    "ml100k": {"batch_size": 1, "eval_fraction": 1.0, "item_every": 200},
    "synthetic": {"batch_size": 200, "eval_fraction": 0.05, "item_every": 2000, "refit_iterations": 5},
}


def run(
    dataset: str,
    settings: RecsSettings,
    *,
    users: int = 100_000,
    videos: int = 10_000,
    events: int = 400_000,
    seed: int = 0,
    warmup: float = 0.2,
    eval_fraction: float | None = None,
    curve_every: int = 0,
) -> dict:
    """The `reelstream eval recs` entry point (`curve_every`: see `prequential`)."""
    if dataset == "ml100k":
        groups = ml100k_events()
    elif dataset == "synthetic":
        groups = synthetic_events(users, videos, events, seed)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    settings = settings.model_copy(update=DATASET_OVERRIDES[dataset])
    replay = dict(DATASET_REPLAY[dataset])
    if eval_fraction is not None:
        replay["eval_fraction"] = eval_fraction
    result = prequential(groups, settings, warmup=warmup, seed=seed, curve_every=curve_every, **replay)
    result["dataset"] = dataset
    tuned = ("factors", "regularization", "alpha", "confidence_offset", "history_half_life_s", "popularity_half_life_s")
    result["settings"] = {k: getattr(settings, k) for k in tuned} | {
        "weights": settings.weights.model_dump(),
        **replay,
        "warmup": warmup,
    }
    return result
