"""Streaming ALS: item factors from a batch fit (implicit), refreshed on a cadence by the item side; user
factors recomputed from the user's full history against the current item factors on every micro-batch.

The agent holds one `StreamingALS` per worker. User side, per micro-batch and user: `serve(history, k,
exclude)` solves the user's factor (closed form, Gram Y^T Y cached) and searches; the factor goes to the
users' partial Gram and the item-side messages (models.recs.item_side). Item side, per cadence: the item
trainer's new vectors go to `upsert_items` on every worker; removed or blocked videos to `remove_videos`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from models.recs.base import Scored
from models.recs.config import RecsSettings
from models.recs.diversity import rerank
from models.recs.popularity import PopularityRecommender
from models.recs.solve import (
    BLOCK,
    gather,
    gram,
    low_rank_blocks,
    padded,
    regularized,
    scale_confidence,
    solve_many,
    stacked_systems,
)

if TYPE_CHECKING:
    from indexer.base import VectorIndex

FORMAT_VERSION = 1
_SEARCH_BLOCK = 1024  # users per matrix product in an exact search without an index (bounds its memory)
# Hyperparameters a saved model carries; on load they override the configured ones.
SAVED_SETTINGS = (
    "factors",
    "regularization",
    "alpha",
    "confidence_offset",
    "iterations",
    "history_half_life_s",
    "history_long_term_weight",
    "history_session_gap_s",
    "popularity_half_life_s",
)


class _Systems(NamedTuple):
    """A micro-batch's user solves, kept to explain them: per placed user (`at`: request index -> i) their
    known videos' rows[bounds[i]:bounds[i+1]] and, aligned with them, `explained`: A^-1 v_j max(c_j, 0) (a
    score t.x splits into their dot products with t), except for the users solved directly (`direct`: i -> their
    A), whose rows are v_j max(c_j, 0) and whose targets still need A^-1. `v`, `scaled` and `base` are the
    solve's inputs (tests/explain_checks.py rebuilds every user's system from them)."""

    explained: np.ndarray
    direct: dict[int, np.ndarray]
    rows: np.ndarray
    bounds: list[int]
    at: dict[int, int]
    v: np.ndarray
    scaled: np.ndarray
    base: np.ndarray


def placed_by(factor: np.ndarray | None) -> bool:
    """Whether a user's factor ranks videos: None (no known video) or all zeros (no positive evidence) does
    not, and popularity answers instead."""
    return factor is not None and bool(factor.any())


class StreamingALS:
    """Implements models.recs.base.Ranker; users it cannot place (no known video) get popularity."""

    def __init__(
        self,
        settings: RecsSettings,
        popularity: PopularityRecommender | None = None,
        *,
        model_version: str = "als-cold",
        index: VectorIndex | None = None,
    ) -> None:
        self.settings = settings
        self.index = index  # None: exact numpy search over our own item matrix
        self.model_version = model_version
        self.popularity = popularity or PopularityRecommender(settings.popularity_half_life_s)
        self.item_ids: list[str] = []
        self._row: dict[str, int] = {}
        self._items = np.zeros((0, settings.factors), dtype=np.float32)
        self._item_gram: np.ndarray | None = None
        self._gram_rows = 0  # rows updated into the item Gram since it was last computed in full
        self._base: tuple[np.ndarray, np.ndarray] | None = None  # item Gram + reg I (the user systems' shared
        # part) and its inverse (their low-rank solves)
        self._removed: set[str] = set()
        self._ids: np.ndarray | None = None  # item_ids as an object array (`_id_array`)
        # User factors of the batch fit: bootstrap for the agents' user-factor table and the users' Gram.
        self.user_ids: list[str] = []
        self.user_factors = np.zeros((0, settings.factors), dtype=np.float32)

    # ---- items -------------------------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_vectors(self) -> np.ndarray:
        return self._items[: self.n_items]

    def item_vector(self, video_id: str) -> np.ndarray | None:
        row = self._row.get(video_id)
        return None if row is None else self._items[row]

    def upsert_items(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace item vectors (the item side's cadence output). Removed videos stay out."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.settings.factors)
        kept = [n for n, vid in enumerate(ids) if vid not in self._removed]
        ids, vectors = [ids[n] for n in kept], vectors[kept]
        # The rows replaced, and what they added to the cached item Gram (nothing to keep when there is none).
        known = [] if self._item_gram is None else sorted({self._row[vid] for vid in ids if vid in self._row})
        before = self._items[known]
        first_new = len(self.item_ids)
        for vid, vec in zip(ids, vectors):
            row = self._row.get(vid)
            if row is None:
                row = self._row[vid] = len(self.item_ids)
                self.item_ids.append(vid)
                if row >= len(self._items):
                    grown = np.zeros((max(1024, 2 * len(self._items)), self.settings.factors), np.float32)
                    grown[: len(self._items)] = self._items
                    self._items = grown
            self._items[row] = vec
        self._update_gram(known, before, first_new)
        self._base = None
        if len(self.item_ids) > first_new:
            self._ids = None
        if self.index is not None and ids:
            self.index.upsert(ids, vectors)

    def remove_videos(self, video_ids: Iterable[str]) -> None:
        """Removed/blocked videos leave the model (swap-with-last keeps the matrix dense) and never return."""
        video_ids = list(video_ids)
        # Their rows' outer products leave the cached item Gram. Dropping it cost a full product (`item_gram`) per
        # removal on the event loop: 29 of them in one `bench pipeline` run on a 98k-video model.
        before = self._items[sorted({self._row[vid] for vid in video_ids if vid in self._row})]
        for vid in video_ids:
            self._removed.add(vid)
            row = self._row.pop(vid, None)
            if row is None:
                continue
            last = self.n_items - 1
            if row != last:
                moved = self.item_ids[last]
                self.item_ids[row] = moved
                self._items[row] = self._items[last]
                self._row[moved] = row
            self.item_ids.pop()
            self._items[last] = 0.0
        self.popularity.remove_videos(video_ids)
        self._update_gram([], before, self.n_items)
        self._base = self._ids = None
        if self.index is not None:
            self.index.remove(video_ids)

    def removed_videos(self) -> set[str]:
        return set(self._removed)

    def item_gram(self) -> np.ndarray:
        """Y^T Y: computed in full (O(n f^2): ~20 ms at 100k videos and 64 factors) only when there is none,
        else kept current by `upsert_items` and `remove_videos` (O(f^2) a changed row)."""
        if self._item_gram is None:
            self._item_gram = gram(self.item_vectors())
            self._gram_rows = 0
        return self._item_gram

    def _update_gram(self, known: list[int], before: np.ndarray, first_new: int) -> None:
        """The item Gram after `upsert_items` changed rows `known` (from `before`) and appended rows from
        `first_new` on, or after `remove_videos` took rows `before` out (nothing known, nothing appended): their
        outer products swapped, in float64. Rounding then depends on the order of
        updates, so once as many rows as the catalog holds were updated, the next Gram is computed in full
        (the full product's own rounding again, at O(f^2) a row amortized)."""
        if self._item_gram is None:
            return
        self._gram_rows += len(before) + self.n_items - first_new
        if self._gram_rows > self.n_items:
            self._item_gram = None
            return
        self._item_gram += gram(np.vstack([self._items[known], self._items[first_new : self.n_items]])) - gram(before)

    # ---- users -------------------------------------------------------------------------------------------

    def user_factor(self, history: Mapping[str, float]) -> np.ndarray | None:
        """The user's ALS factor from their FULL history against the current items; None if no known video."""
        return self.solve_users([history])[0]

    def solve_users(self, histories: Sequence[Mapping[str, float]]) -> list[np.ndarray | None]:
        """`user_factor` for a micro-batch of users, solved in one stacked call."""
        return self._solve_users(histories)[0]

    def _solve_users(
        self, histories: Sequence[Mapping[str, float]], keep: bool = False
    ) -> tuple[list[np.ndarray | None], _Systems | None]:
        """Factors, and with `keep` the systems solved (what `_explain_many` splits scores with). Users with at
        most f/2 known videos (nearly all) are solved by `low_rank_solve`, in buckets of similar history length
        (powers of two, each padded to its own longest); heavier ones directly (one f x f solve each), where an
        m x m inverse would cost more (measured crossover at f = 64: m ~ 40)."""
        if self._base is None:
            base = regularized(self.item_gram(), self.settings.regularization)
            self._base = base, np.linalg.inv(base)
        base, base_inv = self._base
        placed, rows, conf, bounds = gather(histories, self._row.get)
        out: list[np.ndarray | None] = [None] * len(histories)
        if not placed:
            return out, None
        scaled = scale_confidence(conf, self.settings.alpha, self.settings.confidence_offset)
        v = self._items[rows].astype(np.float64)
        # Only with `keep`; float32: shares rank, float32 is enough. Each light block's rows go in while cached.
        explained = np.empty((len(rows), v.shape[1]), dtype=np.float32) if keep else None
        starts, lengths = np.asarray(bounds[:-1]), np.diff(bounds)
        factors = np.empty((len(placed), v.shape[1]), dtype=np.float32)
        light = lengths <= self.settings.factors // 2
        for at in _buckets(np.flatnonzero(light), lengths[light]):
            flat, valid = padded(starts[at], lengths[at])
            for part, solved in low_rank_blocks(v, scaled, flat, valid, base_inv):
                factors[at[part]] = solved.sum(axis=1)
                if explained is not None:
                    explained[flat[part][valid[part]]] = solved[valid[part]]
        direct: dict[int, np.ndarray] = {}
        if not light.all():
            heavy = np.flatnonzero(~light)
            flat, valid = padded(starts[heavy], lengths[heavy])
            own = flat[valid]
            a, b = stacked_systems(v[own], scaled[own], [0, *np.cumsum(lengths[heavy]).tolist()], base)
            factors[heavy] = solve_many(a, b)
            direct = dict(zip(heavy.tolist(), a))
            if explained is not None:  # direct users' rows are v_j max(c_j, 0)
                explained[own] = v[own] * np.maximum(scaled[own], 0.0)[:, None]
        for n, x in zip(placed, factors):
            out[n] = x
        if explained is None:
            return out, None
        at = {n: i for i, n in enumerate(placed)}
        return out, _Systems(explained, direct, np.asarray(rows), bounds, at, v, scaled, base)

    def recommend(self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()) -> list[Scored]:
        return self.recommend_many([history], k, [exclude])[0]

    def recommend_many(
        self,
        histories: Sequence[Mapping[str, float]],
        k: int,
        excludes: Sequence[Collection[str]] | None = None,
    ) -> list[list[Scored]]:
        """Top-k for a micro-batch of users; histories are video_id -> confidence, seen videos excluded."""
        return [items for _, items, _ in self.serve_many(histories, k, excludes)]

    def serve(
        self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()
    ) -> tuple[np.ndarray | None, list[Scored]]:
        """The user's new factor (None: no known video, popularity answered) and their top-k; the agent
        keeps the factor for the users' Gram and the item-side messages."""
        factor, items, _ = self.serve_many([history], k, [exclude])[0]
        return factor, items

    def serve_many(
        self,
        histories: Sequence[Mapping[str, float]],
        k: int,
        excludes: Sequence[Collection[str]] | None = None,
        exclude_all: Collection[str] = (),
        explain: int = 0,
        diversity: float | None = None,
        fresh: tuple[Sequence[str], np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray | None, list[Scored], list[list[str]]]]:
        """`serve` for a micro-batch: one stacked solve and one index search for every placed user.
        `excludes`: per user (with their seen videos, as the agent passes them, no copy is made);
        `exclude_all`: for everyone (unavailable videos), never copied per user on the index path.
        Per user: (factor, top-k, per item the `explain` videos of the history that added most to its
        score; empty lists when not asked, and for popularity, which no history explains); popularity
        answers when the factor does not place the user (`placed_by`). `diversity`
        (default: settings.diversity): MMR strength over a pool of settings.diversity_pool x k candidates.
        `fresh`: (video ids, score multipliers >= 1): recent uploads scored for every placed user with their
        multiplier and merged into the candidates (`_with_fresh`): a new video's vector, solved from its
        first few interactions, is short and would rarely reach the index's top-k by itself."""
        strength = self.settings.diversity if diversity is None else diversity
        fetch = k * self.settings.diversity_pool if strength > 0 else k
        excludes = excludes or [()] * len(histories)
        factors, systems = self._solve_users(histories, keep=explain > 0)
        # A zero factor (only skips or dislikes of known videos: no positive evidence) scores every video 0,
        # so its "ranking" would be index order: popularity answers, and the factor is still returned.
        placed = [n for n, x in enumerate(factors) if placed_by(x)]
        out: list[tuple[np.ndarray | None, list[Scored], list[list[str]]]] = []
        for h, ex, x in zip(histories, excludes, factors):
            popular = []
            if not placed_by(x):
                popular = self.popularity.recommend(h, k, {*ex, *exclude_all} if exclude_all else ex)
            out.append((x, popular, [[] for _ in popular]))
        found: dict[int, list[Scored]] = {}
        if placed:
            boost = self._boost(fresh, exclude_all) if fresh is not None else None
            skips = [_with_history(excludes[n], histories[n]) for n in placed]
            queries = np.stack([factors[n] for n in placed])
            if self.index is not None and not (boost is not None and self.index.kind == "exact"):
                found = dict(zip(placed, self.index.search(queries, fetch, exclude_all or None, skips)))
                if boost is not None:
                    found = self._with_fresh(found, factors, histories, excludes, boost, fetch)
            else:
                # No index, or an exact one with fresh videos to boost: one exact pass over every video, boosts
                # included, gives what the index's top-k merged with the boosted fresh top-k would (a boost
                # only raises a positive score), without scoring the fresh videos twice.
                found = dict(zip(placed, self._search_exact(queries, skips, fetch, exclude_all, boost)))
        if strength > 0 and found:
            lists = rerank(list(found.values()), lambda ids: self._items[[self._row[v] for v in ids]], k, strength)
            found = dict(zip(found, lists))
        explained = self._explain_many(systems, found, explain) if explain and systems is not None else {}
        for n, items in found.items():
            out[n] = (factors[n], items, explained.get(n) or [[] for _ in items])
        return out

    def _boost(
        self, fresh: tuple[Sequence[str], np.ndarray], exclude_all: Collection[str]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The fresh videos this model has a vector for and may serve: (their rows, their multipliers)."""
        ids, multipliers = fresh
        pairs = [(self._row[v], m) for v, m in zip(ids, multipliers) if v in self._row and v not in exclude_all]
        if not pairs:
            return None
        rows, mult = zip(*pairs)
        return np.asarray(rows, dtype=np.int64), np.asarray(mult, dtype=np.float32)

    def _with_fresh(
        self,
        found: dict[int, list[Scored]],
        factors: Sequence[np.ndarray | None],
        histories: Sequence[Mapping[str, float]],
        excludes: Sequence[Collection[str]],
        boost: tuple[np.ndarray, np.ndarray],
        fetch: int,
    ) -> dict[int, list[Scored]]:
        """Each placed user's candidates with the fresh videos' boosted scores (an approximate index): per
        user, the `fetch` best fresh ones (one matrix product for the batch) merged with the index's, a video
        kept once at its higher score, best first."""
        rows, mult = boost
        fresh_ids = [self.item_ids[r] for r in rows.tolist()]
        users = list(found)
        scores = np.stack([factors[n] for n in users]) @ self._items[rows].T
        scores = np.where(scores > 0, scores * mult, scores)
        column = {v: i for i, v in enumerate(fresh_ids)}
        for u, n in enumerate(users):
            scores[u, [column[v] for v in _with_history(excludes[n], histories[n]) if v in column]] = -np.inf
        take = min(fetch, len(fresh_ids))
        best = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.take_along_axis(scores, best, axis=1).tolist()
        out = {}
        for u, n in enumerate(users):
            # Only a fresh video above the index's fetch-th candidate can change the list.
            floor = found[n][fetch - 1][1] if len(found[n]) >= fetch else -np.inf
            better = [(fresh_ids[i], s) for i, s in zip(best[u].tolist(), best_scores[u]) if s > floor]
            if not better:
                out[n] = found[n]
                continue
            merged = dict(found[n])
            for video, score in better:
                merged[video] = max(merged.get(video, -np.inf), score)
            out[n] = sorted(merged.items(), key=lambda vs: -vs[1])[:fetch]
        return out

    def _explain_many(
        self, systems: _Systems, found: Mapping[int, list[Scored]], top: int
    ) -> dict[int, list[list[str]]]:
        """Per user (request index) and recommended item, the (at most `top`) videos of the history that
        added most to its score, largest first, only those that added: a score splits exactly over the
        history (solve.contributions). For the whole micro-batch at once: the shares are the user solve's
        `explained` rows times the recommended items' vectors (no second solve; it was ~30% of serving at 64
        factors), except for users solved directly: one stacked solve of their A against those vectors (k
        right-hand sides, not one per history video)."""
        users = [n for n, items in found.items() if items]
        if not users:
            return {n: [] for n in found}
        idx = np.array([systems.at[n] for n in users])
        counts = np.array([len(found[n]) for n in users])
        k = int(counts.max())
        item_rows = np.full((len(users), k), -1)
        # One flat lookup for the batch, not a numpy row assignment per user.
        item_rows[np.arange(k)[None, :] < counts[:, None]] = [self._row.get(v, -1) for n in users for v, _ in found[n]]
        targets = self._items[item_rows] * (item_rows >= 0)[..., None]  # (users, k, f)
        z = np.ascontiguousarray(targets.transpose(0, 2, 1))  # (users, f, k): shares are `explained` rows . z
        direct = [u for u, i in enumerate(idx.tolist()) if i in systems.direct]
        if direct:  # their rows are v_j max(c_j, 0): z = A^-1 y_i instead (k right-hand sides)
            a = np.stack([systems.direct[i] for i in idx[direct].tolist()])
            z[direct] = np.linalg.solve(a, targets[direct].astype(np.float64).transpose(0, 2, 1))
        starts = np.asarray(systems.bounds)[idx]
        lengths = np.asarray(systems.bounds)[idx + 1] - starts
        listed = counts.tolist()
        ids = self._id_array()
        out: dict[int, list[list[str]]] = {n: [] for n in found}
        for bucket in _buckets(np.arange(len(users)), lengths):
            flat, valid = padded(starts[bucket], lengths[bucket])
            for block in range(0, len(bucket), BLOCK):  # each block's operands stay in the cache
                at, part = bucket[block : block + BLOCK], slice(block, block + BLOCK)
                rows, positive = self._top_shares(systems, z[at], flat[part], valid[part], top)
                for u, names, kept in zip(at.tolist(), ids[rows].tolist(), positive.tolist()):
                    out[users[u]] = [vs[:p] for vs, p in zip(names, kept[: listed[u]])]
        return out

    def _id_array(self) -> np.ndarray:
        """`item_ids` as an object array (ids of many rows in one indexing), rebuilt once videos are added or
        removed."""
        if self._ids is None:
            self._ids = np.array(self.item_ids, dtype=object)
        return self._ids

    @staticmethod
    def _top_shares(
        systems: _Systems, z: np.ndarray, flat: np.ndarray, valid: np.ndarray, top: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per user and recommended item: the item rows of the (at most `top`) history videos with the largest
        shares of its score, largest first ((users, k, top)), and how many of them have a positive share
        ((users, k): they come first). `flat`, `valid`: the users' history rows, from `padded`."""
        explained = systems.explained[flat] * valid[..., None]  # (users, m, f), padded with 0
        shares = explained @ z  # each history video's share in each item's score: (users, m, k)
        if flat.shape[1] > top:  # the `top` largest (a partition, O(m)), then in order
            part = np.argpartition(-shares, top - 1, axis=1)[:, :top]
            order = np.argsort(-np.take_along_axis(shares, part, axis=1), axis=1, kind="stable")
            best = np.take_along_axis(part, order, axis=1)
        else:
            best = np.argsort(-shares, axis=1, kind="stable")
        positive = (np.take_along_axis(shares, best, axis=1) > 0).sum(axis=1)
        videos = systems.rows[np.take_along_axis(flat, best.reshape(len(z), -1), axis=1)]
        return videos.reshape(best.shape).transpose(0, 2, 1), positive

    def search(
        self, factor: np.ndarray, history: Mapping[str, float], k: int, exclude: Collection[str] = ()
    ) -> list[Scored]:
        """Inner-product top-k over the current items, never a seen or excluded video."""
        if self.index is not None:
            return self.index.search(factor[None, :], k, exclude={*history, *exclude})[0]
        return self._search_exact(factor[None, :], [{*history, *exclude}], k)[0]

    def _search_exact(
        self,
        queries: np.ndarray,
        skips: Sequence[Collection[str]],
        k: int,
        exclude_all: Collection[str] = (),
        boost: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[list[Scored]]:
        """Exact inner-product top-k for a batch of users, never a video in their `skips` or in `exclude_all`;
        `boost` (rows, multipliers) raises those videos' positive scores. One matrix product per block of users
        (a product per user dominated the in-process replay's profile once every user is served again after a
        refit)."""
        items, out = self.item_vectors(), []
        multiplier = None
        if boost is not None:
            multiplier = np.ones(len(items), dtype=np.float32)
            multiplier[boost[0]] = boost[1]
        hidden = [self._row[v] for v in exclude_all if v in self._row]
        ids = self.item_ids
        take = min(k, len(items))
        if take <= 0:
            return [[] for _ in queries]
        for start in range(0, len(queries), _SEARCH_BLOCK):
            block = skips[start : start + _SEARCH_BLOCK]
            scores = queries[start : start + _SEARCH_BLOCK] @ items.T
            if multiplier is not None:
                scores = np.where(scores > 0, scores * multiplier, scores)
            scores[:, hidden] = -np.inf
            # Every user's seen videos masked in one fancy-index assignment, then one partition of the block.
            cells = [(u, self._row[v]) for u, skip in enumerate(block) for v in skip if v in self._row]
            if cells:
                at = np.asarray(cells, dtype=np.int64)
                scores[at[:, 0], at[:, 1]] = -np.inf
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            vals = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            best, vals = np.take_along_axis(part, order, axis=1).tolist(), np.take_along_axis(vals, order, axis=1).tolist()
            for rows, row_scores in zip(best, vals):
                out.append([(ids[r], v) for r, v in zip(rows, row_scores) if math.isfinite(v)])
        return out

    def observe(self, video_id: str, weight: float, ts: float, partition: int = 0) -> None:
        """Learning hook per interaction: only popularity (the cold-start answer) keeps counts."""
        self.popularity.observe(video_id, weight, ts, partition)

    # ---- batch fit and persistence -----------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        histories: Mapping[str, Mapping[str, float]],
        settings: RecsSettings,
        popularity: PopularityRecommender | None = None,
        *,
        iterations: int | None = None,
        random_state: int = 0,
        warm_start: StreamingALS | None = None,
    ) -> StreamingALS:
        """A full batch fit with implicit (a NEW implicit model every time: refitting one whose matrix
        changed shape crashes). histories: user_id -> video_id -> confidence. `warm_start` seeds the
        factors of known users and videos from a previous fit, so a daily refit converges in few iterations."""
        import implicit.gpu
        from implicit.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits

        user_ids = list(histories)
        item_row: dict[str, int] = {}
        indptr, indices, data = [0], [], []
        for u in user_ids:
            for vid, c in histories[u].items():
                indices.append(item_row.setdefault(vid, len(item_row)))
                data.append(c)
            indptr.append(len(indices))
        data = scale_confidence(data, settings.alpha, settings.confidence_offset)
        matrix = csr_matrix(
            (data.astype(np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64)),
            shape=(len(user_ids), len(item_row)),
        )
        # implicit's factory: its CUDA implementation when a GPU is there (HAS_CUDA), except for a warm
        # start, whose seeded factors are CPU arrays.
        use_gpu = implicit.gpu.HAS_CUDA and warm_start is None
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads on top only contend
            model = AlternatingLeastSquares(
                factors=settings.factors,
                regularization=settings.regularization,
                alpha=1.0,  # the data is already scaled
                iterations=iterations or settings.iterations,
                use_cg=True,
                use_gpu=use_gpu,
                random_state=random_state,
            )
            if warm_start is not None:
                rng = np.random.default_rng(random_state)
                model.user_factors = _seeded(user_ids, warm_start.user_ids, warm_start.user_factors, rng)
                model.item_factors = _seeded(list(item_row), warm_start.item_ids, warm_start.item_vectors(), rng)
            model.fit(matrix, show_progress=False)
        if use_gpu:
            model = model.to_cpu()
        out = cls(settings, popularity)
        out.upsert_items(list(item_row), np.asarray(model.item_factors))
        out.user_ids = user_ids
        out.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        out.model_version = version_string(out.item_vectors())
        return out

    def save(self, directory: str | Path) -> Path:
        """model.npz (factors, ids, popularity) + meta.json (version, hyperparameters)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(
            d / "model.npz",
            item_ids=np.array(self.item_ids, dtype=np.str_),
            item_factors=self.item_vectors(),
            user_ids=np.array(self.user_ids, dtype=np.str_),
            user_factors=self.user_factors,
            removed=np.array(sorted(self._removed), dtype=np.str_),
            **self.popularity.state(),
        )
        meta = {
            "format": FORMAT_VERSION,
            "model_version": self.model_version,
            **{k: getattr(self.settings, k) for k in SAVED_SETTINGS},
            "n_items": self.n_items,
            "n_users": len(self.user_ids),
            "saved_at": time.time(),
        }
        (d / "meta.json").write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, settings: RecsSettings) -> StreamingALS:
        """A saved model; its own hyperparameters (meta.json) override those in `settings`."""
        d = Path(directory)
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format')!r} in {d}")
        settings = settings.model_copy(update={k: meta[k] for k in SAVED_SETTINGS if k in meta})
        with np.load(d / "model.npz") as z:
            arrays = {k: z[k] for k in z.files}
        out = cls(settings, PopularityRecommender.from_state(settings.popularity_half_life_s, arrays))
        out.upsert_items([str(v) for v in arrays["item_ids"]], arrays["item_factors"])
        out._removed = {str(v) for v in arrays["removed"]}
        out.user_ids = [str(v) for v in arrays["user_ids"]]
        out.user_factors = arrays["user_factors"].astype(np.float32)
        out.model_version = meta["model_version"]
        return out


def _buckets(at: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """`at` in buckets of similar history length (`lengths`, powers of two), each to be padded to its own
    longest only: one heavy history must not pad the whole micro-batch (a refresh serves every user, heavy ones
    included)."""
    bucket = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    return [at[bucket == b] for b in np.unique(bucket)]


def _with_history(exclude: Collection[str], history: Mapping[str, float]) -> Collection[str]:
    """Exclusions plus the seen videos; the agent's exclusion set usually holds them already (no copy)."""
    if isinstance(exclude, (set, frozenset)) and exclude.issuperset(history):
        return exclude
    return {*history, *exclude}


def _seeded(ids: Sequence[str], known_ids: Sequence[str], known: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Initial factors: the known row where there is one, implicit's small random init elsewhere."""
    out = rng.random((len(ids), known.shape[1]), dtype=np.float32) * 0.01
    row = {v: i for i, v in enumerate(known_ids)}
    pairs = [(n, row[v]) for n, v in enumerate(ids) if v in row]
    if pairs:
        dst, src = map(list, zip(*pairs))
        out[dst] = known[src]
    return out


def version_string(item_factors: np.ndarray) -> str:
    """als-YYYYmmddHHMMSS-<hash of the factors>: sortable by time, distinct per content."""
    digest = hashlib.sha256(np.ascontiguousarray(item_factors).tobytes()).hexdigest()[:8]
    return f"als-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{digest}"
