"""Prequential (test-then-train) evaluation, in process: a time-ordered replay through the code a worker and
the trainer run. Before an interaction is learned: was its video in the user's latest recommendation? A user
with no event yet has none: every model is then scored on decayed popularity (what a product shows a user
without a list of their own), counted as `unknown_user_events`.

The same code and policies as the deployment, called directly instead of through Kafka:
- streaming: `StreamingRecommender` (the worker's recommender): per micro-batch, learn and serve every
  touched user (their latest recommendation is what is scored, as a worker would have emitted it); the item
  side (`ItemTrainer`) fed the recommender's own item messages and solved every `item_every` events; and the
  trainer's refit (`Refitter`, models/recs/refit.py, on the stored histories) whose vectors, version and Gram
  the recommender and item side receive as a worker receives them from item-vectors and models, after
  which every user is served again (as a worker does when a version arrives).
- batch_periodic: a batch ALS refit once per day of event time (the same Refitter, growth off), serving its
  own user and item factors until the next; users it has not seen get decayed popularity.
- popularity: all-time interaction counts; popularity_decayed: popularity-v1 (confidence-weighted, with the
  configured half-life), the worker's answer for users it cannot place yet.
The first `warmup` fraction of events is learned but not evaluated. `reelstream eval recs --via-kafka`
(lab/recs_replay.py) runs the same replay through the embedded broker, real workers and the trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from contracts.history import TIME_ORDER, HistoryRow
from indexer.config import IndexSettings
from models.recs.als import StreamingALS
from models.recs.base import Scored, ServeRequest
from models.recs.config import RecsSettings
from models.recs.item_side import ItemTrainer
from models.recs.popularity import PopularityRecommender
from models.recs.refit import Refitter
from models.recs.serving import StreamingRecommender
from models.recs.solve import gram

DAY_S = 86_400.0
K = 10
REFRESH_BATCH = 1000  # users served together when a new version arrives (a worker: its micro-batch size)


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
    information: Callable[[str], float] | None = None  # a video's self-information now (novelty)
    recommended: set[str] = field(default_factory=set)  # every video in a scored list (coverage)
    novelty_sum: float = 0.0
    ild_sum: float = 0.0  # intra-list diversity, summed over the lists it was measured on
    ild_n: int = 0

    def add(self, recs: Sequence[Scored], target: str, unknown: bool) -> bool:
        """Score one list against the interaction that followed it; whether it held the target."""
        self.n += 1
        self.unknown += unknown
        self.recommended.update(vid for vid, _ in recs[:K])
        if self.information is not None and recs:
            self.novelty_sum += sum(self.information(vid) for vid, _ in recs[:K]) / len(recs[:K])
        for rank, (vid, _) in enumerate(recs[:K]):
            if vid == target:
                self.hits += 1
                self.ndcg += 1.0 / math.log2(rank + 2)
                return True
        return False

    def as_dict(self, catalog: int = 0) -> dict[str, float | int]:
        """HR@10, NDCG@10, and coverage@10: the share of the `catalog` (videos in the replay) that some
        scored list held."""
        n = max(self.n, 1)
        hr, ndcg = round(self.hits / n, 4), round(self.ndcg / n, 4)
        coverage = round(len(self.recommended) / catalog, 4) if catalog else 0.0
        out = {"hr@10": hr, "ndcg@10": ndcg, "coverage@10": coverage, "unknown_user_events": self.unknown}
        if self.information is not None:
            out["novelty@10"] = round(self.novelty_sum / n, 4)
        if self.ild_n:
            out["ild@10"] = round(self.ild_sum / self.ild_n, 4)
        return out

    def add_ild(self, vectors: np.ndarray) -> None:
        """Intra-list diversity of one list: mean 1 - cosine over its pairs of item vectors."""
        if len(vectors) < 2:
            return
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        n = len(vectors)
        self.ild_sum += float((n * n - sim.sum()) / (n * (n - 1)))
        self.ild_n += 1


# Evaluated events by what the daily batch knew of them (`segments` in the result): where a model that is
# refitted once a day can and cannot follow, and so where the streaming system's margin comes from.
SEGMENTS = ("first_event", "user_new_since_batch", "video_new_since_batch", "known_to_batch")


def _segment(first: bool, user_in_batch: bool, video_in_batch: bool) -> str:
    if first:
        return "first_event"  # no list yet for any model: all answer with popularity
    if not user_in_batch:
        return "user_new_since_batch"
    return "known_to_batch" if video_in_batch else "video_new_since_batch"


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


# The synthetic stream's content lifecycle (`synthetic_events`' video_half_life_s): a short video's appeal
# halves every two days. An assumption, not a measurement; `--video-half-life-s 0` replays the stationary
# stream (appeal never fades) that earlier evaluations used.
SYNTHETIC_VIDEO_HALF_LIFE_S = 2 * DAY_S


def synthetic_events(
    users: int,
    videos: int,
    events: int,
    seed: int,
    days: float = 14.0,
    video_half_life_s: float = SYNTHETIC_VIDEO_HALF_LIFE_S,
) -> list[Group]:
    """Known latent structure: videos belong to clusters, each user's taste is a sparse mixture of clusters;
    videos upload over time (a third exist at the start). In-taste picks are watched longer and liked;
    exploration picks are skipped more often. `video_half_life_s` > 0: a video's appeal halves with every
    that much age (short videos draw most of their views in their first days); 0: appeal never fades, the
    stream of earlier sessions, draw for draw."""
    rng = np.random.default_rng(seed)
    span = days * DAY_S
    n_clusters, cluster, quality, upload = _synthetic_videos(rng, videos, span)
    if video_half_life_s > 0:
        # quality x 2^(-(ts - upload) / h): the factor 2^(-ts / h) is common to every video drawn at ts, so the
        # draw weighs quality x 2^(upload / h), taken relative to the last upload to stay within float range.
        quality = quality * np.exp2((upload - span) / video_half_life_s)
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


def _synthetic_videos(
    rng: np.random.Generator, videos: int, span: float
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic catalog, drawn first from the stream's generator: clusters, per video its cluster,
    quality and upload time (0: there from the start)."""
    n_clusters = max(4, round(math.sqrt(videos) / 2))
    cluster = rng.integers(0, n_clusters, videos)
    quality = rng.lognormal(0.0, 1.0, videos)
    upload = np.where(rng.random(videos) < 1 / 3, 0.0, rng.uniform(0, span, videos))
    return n_clusters, cluster, quality, upload


def synthetic_uploads(videos: int, seed: int, days: float = 14.0) -> dict[str, float]:
    """Each video's upload time in `synthetic_events(..., videos, ..., seed, days)`: what a worker learns
    from the `videos` topic before anyone interacts with it."""
    upload = _synthetic_videos(np.random.default_rng(seed), videos, days * DAY_S)[3]
    return {f"v{v}": float(t) for v, t in enumerate(upload)}


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50 and p95 (None: beyond every finite value, i.e. never)."""
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95], method="higher")
    return {name: round(float(v), 1) if math.isfinite(v) else None for name, v in (("p50", p50), ("p95", p95))}


def _micro_batches(groups: Sequence[Group], size: int) -> Iterator[Sequence[Group]]:
    for i in range(0, len(groups), size):
        yield groups[i : i + size]


def serve_batch_model(recommender: StreamingRecommender, items: ItemTrainer, model: StreamingALS) -> None:
    """What a worker does with a published refit: its vectors (item-vectors), then its version and Gram
    (models); streams/app.py applies the same calls record by record."""
    recommender.upsert_items(model.item_ids, model.item_vectors())
    items.new_model(model.model_version, model.item_ids)
    recommender.use_model(model.model_version, gram(model.user_factors))


def prequential(
    groups: Sequence[Group],
    settings: RecsSettings,
    *,
    warmup: float = 0.2,
    item_every: int = 200,
    batch_size: int = 1,
    eval_fraction: float = 1.0,
    seed: int = 0,
    curve_every: int = 0,
    uploads: Mapping[str, float] | None = None,
) -> dict:
    """Replay `groups` (time-ordered) in micro-batches; returns the JSON-ready result. With `curve_every`,
    "curves" also holds each model's cumulative [evaluated events, hits@10] every that many evaluated events.
    `uploads` (video -> upload time): announced to the recommender as a worker's catalog does, and
    "new_videos" reports, for uploads after the warm-up began, how long until a served list first held
    them and until their first interaction and first like in the stream (a replay: not caused by the
    lists); percentiles count a video never reached as never (None when the percentile falls there)."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    warm_n = int(len(groups) * warmup)
    names = ("streaming", "batch_periodic", "popularity", "popularity_decayed")
    # Then the same lists without the re-ranking (MMR) and the exploration slots are scored too.
    diverse = settings.diversity > 0 or settings.explore_share > 0
    pop_all = PopularityRecommender(math.inf)
    observed = [0]  # interactions pop_all has counted (each weighs 1)

    def information(video: str) -> float:
        """Self-information of a video in bits, -log2 of its (add-one smoothed) share of the interactions
        so far: novelty@10 is its mean over a list (recommending what everyone watched is not novel)."""
        return -math.log2((pop_all.weight_of(video) + 1.0) / (observed[0] + len(pop_all.ids) + 1.0))

    tallies = {
        name: Tally(information=information) for name in (*names, *(("streaming_no_diversity",) if diverse else ()))
    }
    curves: dict[str, list[list[float]]] = {name: [] for name in tallies}
    recommender = StreamingRecommender(settings, IndexSettings(), StreamingALS(settings, model_version="als-streaming"))
    pop_decayed = recommender.als.popularity  # learns through recommender.learn, as in a worker
    items = ItemTrainer(settings)
    refitter = Refitter(settings, seed=seed)
    daily = Refitter(settings.model_copy(update={"refit_growth": math.inf, "refit_interval_s": DAY_S}), seed=seed)
    batch: StreamingALS | None = None
    batch_rows: dict[str, int] = {}
    histories: dict[str, list[list]] = {}
    seen: dict[str, dict[str, float]] = {}  # per user, their videos (values unused: the exclusion mapping)
    latest: dict[str, tuple[list[Scored] | None, bool]] = {}  # per user: their latest recommendation, from ALS?
    interactions = since_items = 0

    pending_uploads = sorted((t, v) for v, t in (uploads or {}).items())[::-1]  # popped from the end
    warm_ts = groups[warm_n].ts if warm_n < len(groups) else math.inf
    uploaded_at: dict[str, float] = {}  # uploads after the warm-up began: their time
    unshown: set[str] = set()
    first_shown: dict[str, float] = {}
    first_interaction: dict[str, float] = {}
    first_like: dict[str, float] = {}
    clock = [0.0]  # event time of the micro-batch being served

    explained = [0, 0]  # ALS recommendations served, and those that name videos of the history
    plain: dict[str, list[Scored]] = {}  # per user: their latest list without re-ranking and exploration
    segments: dict[str, dict[str, int]] = {}  # per segment of the evaluated events: events, and hits per model

    def serve(users: Iterable[str]) -> None:
        requests = [ServeRequest(user, histories[user], 0) for user in users]
        served = recommender.recommend_many(requests, K)
        for r, one in zip(requests, served):
            recs, version, because, explored = one.items, one.model_version, one.because, one.explored
            if unshown:
                for v in unshown.intersection(v for v, _ in recs):
                    first_shown[v] = clock[0]
                    unshown.discard(v)
            placed = version != recommender.popularity_version
            latest[r.user_id] = (recs, placed)
            if placed:
                explained[0] += len(recs) - len(explored)  # exploration slots are not ALS's
                explained[1] += sum(1 for (v, _), b in zip(recs, because) if b and v not in explored)
        if settings.diversity > 0:  # a re-ranked list: rank again without it
            plain.update(zip((r.user_id for r in requests), recommender.ranked(requests, K, 0.0)))
        elif diverse:  # exploration slots only: the list as ranked before them
            plain.update((r.user_id, one.unexplored()) for r, one in zip(requests, served))

    def ild(name: str, recs: Sequence[Scored]) -> None:
        """Intra-list diversity of a streaming list, over the vectors served now."""
        rows = [recommender.als._row.get(v) for v, _ in recs]
        tallies[name].add_ild(recommender.als._items[[r for r in rows if r is not None]])

    with threadpool_limits(1, "blas"):
        for n0, mb in zip(range(0, len(groups), batch_size), _micro_batches(groups, batch_size)):
            if n0 >= warm_n:
                for g in mb:
                    mine = seen.get(g.user_id, {})
                    if g.video_id in mine or rng.random() >= eval_fraction:
                        continue
                    recs, placed = latest.get(g.user_id, (None, False))
                    first = recs is None
                    if first:  # no event yet, so no list: what a product shows then, for every model
                        recs = pop_decayed.recommend(mine, K)
                    hits = {"streaming": tallies["streaming"].add(recs, g.video_id, not placed)}
                    if placed:
                        ild("streaming", recs)
                    if diverse:
                        other = recs if first else plain[g.user_id]
                        hits["streaming_no_diversity"] = tallies["streaming_no_diversity"].add(
                            other, g.video_id, not placed
                        )
                        if placed:
                            ild("streaming_no_diversity", other)
                    row = batch_rows.get(g.user_id)
                    if row is None or batch is None:
                        recs = pop_decayed.recommend(mine, K)
                    else:
                        recs = batch.search(batch.user_factors[row], mine, K, ())
                    hits["batch_periodic"] = tallies["batch_periodic"].add(recs, g.video_id, row is None)
                    hits["popularity"] = tallies["popularity"].add(pop_all.recommend(mine, K), g.video_id, False)
                    hits["popularity_decayed"] = tallies["popularity_decayed"].add(
                        pop_decayed.recommend(mine, K), g.video_id, False
                    )
                    segment = _segment(first, row is not None, batch is not None and batch.item_vector(g.video_id) is not None)
                    counts = segments.setdefault(segment, {"events": 0})
                    counts["events"] += 1
                    for name, hit in hits.items():
                        counts[name] = counts.get(name, 0) + hit
                    if curve_every and tallies["streaming"].n % curve_every == 0:
                        for name, t in tallies.items():
                            curves[name].append([t.n, t.hits])
            # Uploads up to this batch's time reach the catalog first (a video's first interaction is later).
            clock[0] = mb[-1].ts
            while pending_uploads and pending_uploads[-1][0] <= clock[0]:
                t, v = pending_uploads.pop()
                recommender.add_video(v, t)
                if t >= warm_ts:
                    uploaded_at[v] = t
                    unshown.add(v)
            # Learn, as the interactions agent does per micro-batch: store, learn, serve every touched user.
            touched: dict[str, list[list]] = {}
            for g in mb:
                if g.video_id in uploaded_at:
                    first_interaction.setdefault(g.video_id, g.ts)
                    if any(i.kind == "like" for i in g.interactions):
                        first_like.setdefault(g.video_id, g.ts)
                new = [i.stored() for i in g.interactions]
                rows = histories.setdefault(g.user_id, [])
                before = len(rows)
                rows.extend(new)
                rows.sort(key=TIME_ORDER)
                del rows[: -settings.history_max_events]
                touched.setdefault(g.user_id, []).extend(new)
                seen.setdefault(g.user_id, {})[g.video_id] = 1.0
                pop_all.observe(g.video_id, 1.0, g.ts)
                observed[0] += 1
                # Stored rows, as the trainer counts them: rows added, and rows the history cap dropped.
                interactions += len(rows) - before
                changed = 2 * len(new) - (len(rows) - before)
                refitter.note(changed, g.ts)
                daily.note(changed, g.ts)
            for user, new in touched.items():
                recommender.learn(user, histories[user], new)
            serve(touched)
            for msg in recommender.take_item_messages():
                items.apply(msg)
            since_items += len(mb)
            if since_items >= item_every:
                recommender.upsert_items(*items.solve_dirty(recommender.gram()))
                since_items = 0
            # The trainer, after the batch is stored (it reads the users changelog).
            if refitter.due(interactions):
                serve_batch_model(recommender, items, refitter.fit(histories))
                users = list(histories)  # a worker serves its users again
                for start in range(0, len(users), REFRESH_BATCH):
                    serve(users[start : start + REFRESH_BATCH])
            if daily.due(interactions):
                batch = daily.fit(histories, pop_decayed)
                batch_rows = {u: i for i, u in enumerate(batch.user_ids)}
    catalog = len({g.video_id for g in groups} | set(uploads or ()))  # every video a list could hold
    result = {name: t.as_dict(catalog) for name, t in tallies.items()}
    result["segments"] = {name: segments[name] for name in SEGMENTS if name in segments}
    result["streaming"]["explained_share"] = round(explained[1] / explained[0], 4) if explained[0] else 0.0
    result.update(
        events=tallies["streaming"].n,
        replayed=len(groups),
        refits=refitter.fits,
        batch_refits=daily.fits,
        seconds=round(time.perf_counter() - started, 1),
    )
    if uploaded_at:

        def waits(at: Mapping[str, float]) -> list[float]:
            return [at[v] - t if v in at else math.inf for v, t in uploaded_at.items()]

        result["new_videos"] = {
            "uploaded": len(uploaded_at),
            "shown": len(first_shown),
            "interacted": len(first_interaction),
            "first_impression_s": _percentiles(waits(first_shown)),
            "first_interaction_s": _percentiles(waits(first_interaction)),
            "liked": len(first_like),
            "first_like_s": _percentiles(waits(first_like)),
        }
    if curve_every:
        result["curves"] = curves
    return result


# Time scales differ from a live short-video platform (MovieLens spans 7 months), so each dataset replays
# with these settings on top of the configured ones; the JSON reports the effective values.
DATASET_OVERRIDES: dict[str, dict] = {
    "ml100k": {"popularity_half_life_s": 30 * DAY_S, "refit_interval_s": DAY_S},
    "synthetic": {},  # a stream on a live platform's time scales: the deployed settings as they are
}
# The settings a result reports (with the weights).
TUNED = (
    "factors", "regularization", "alpha", "confidence_offset", "history_half_life_s", "history_long_term_weight",
    "history_session_gap_s", "popularity_half_life_s", "refit_min_interactions", "refit_growth",
    "refit_interval_s", "refit_iterations", "diversity", "diversity_pool", "freshness", "freshness_half_life_s",
    "explore_share",
    "explore_until_interactions", "explore_max_impressions",
)  # fmt: skip
# Replay knobs per dataset: the synthetic run evaluates a sample. Its default size (`run`: 20k users, 2k
# videos, 80k events over 14 days) keeps it near ten minutes: the deployed trainer refits hourly, and after
# every refit each user is served again, as a worker does.
DATASET_REPLAY: dict[str, dict] = {
    "ml100k": {"batch_size": 1, "eval_fraction": 1.0, "item_every": 200},
    "synthetic": {"batch_size": 200, "eval_fraction": 0.3, "item_every": 2000},
}


def load_groups(
    dataset: str, users: int, videos: int, events: int, seed: int, video_half_life_s: float = SYNTHETIC_VIDEO_HALF_LIFE_S
) -> list[Group]:
    """A dataset's interactions in time order (`users`, `videos`, `events`, `seed`, `video_half_life_s`: the
    synthetic one's)."""
    if dataset == "ml100k":
        return ml100k_events()
    if dataset == "synthetic":
        return synthetic_events(users, videos, events, seed, video_half_life_s=video_half_life_s)
    raise ValueError(f"unknown dataset {dataset!r}")


def run(
    dataset: str,
    settings: RecsSettings,
    *,
    users: int = 20_000,
    videos: int = 2_000,
    events: int = 80_000,
    seed: int = 0,
    warmup: float = 0.2,
    eval_fraction: float | None = None,
    curve_every: int = 0,
    video_half_life_s: float = SYNTHETIC_VIDEO_HALF_LIFE_S,
) -> dict:
    """The `reelstream eval recs` entry point (`curve_every`: see `prequential`; `video_half_life_s`: the
    synthetic stream's, see `synthetic_events`)."""
    groups = load_groups(dataset, users, videos, events, seed, video_half_life_s)
    uploads = synthetic_uploads(videos, seed) if dataset == "synthetic" else None
    settings = settings.model_copy(update=DATASET_OVERRIDES[dataset])
    replay = dict(DATASET_REPLAY[dataset])
    if eval_fraction is not None:
        replay["eval_fraction"] = eval_fraction
    result = prequential(groups, settings, warmup=warmup, seed=seed, curve_every=curve_every, uploads=uploads, **replay)
    result["dataset"] = dataset
    result["settings"] = {k: getattr(settings, k) for k in TUNED} | {
        "weights": settings.weights.model_dump(),
        **replay,
        "warmup": warmup,
    }
    if dataset == "synthetic":
        result["settings"]["video_half_life_s"] = video_half_life_s
    return result
