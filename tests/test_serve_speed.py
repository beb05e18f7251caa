"""The fast paths of StreamingALS.serve_many (low-rank user solves, explanations from the same solve, index
skips by id) give what the direct computations do."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.exact import ExactIndex
from indexer.ivf import IvfIndex
from models.recs.als import StreamingALS
from models.recs.config import RecsSettings
from models.recs.solve import low_rank_solve, padded, regularized, scale_confidence, solve_factor
from tests.explain_checks import shares_of


@pytest.mark.parametrize("offset", [1.0, 0.0])  # 0: |c| - 1 < 0 for small confidences (an indefinite update)
def test_low_rank_rows_are_a_inverse_times_weighted_rows_and_sum_to_the_factor(offset: float) -> None:
    rng = np.random.default_rng(0)
    f, items = 16, 200
    y = rng.normal(size=(items, f)) / 4
    base = regularized(y.T @ y, 2.0)
    lengths = np.array([1, 5, 8, 3])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = rng.integers(0, items, size=lengths.sum())
    scaled = scale_confidence(np.where(rng.random(len(rows)) < 0.2, -0.5, rng.uniform(0.1, 4, len(rows))), 2.0, offset)
    flat, valid = padded(starts, lengths)
    solved = low_rank_solve(y[rows], scaled, flat, valid, np.linalg.inv(base))
    for u, (s, m) in enumerate(zip(starts, lengths)):
        v, c = y[rows[s : s + m]], scaled[s : s + m]
        a = base + (v.T * (np.abs(c) - 1.0)) @ v
        np.testing.assert_allclose(solved[u, :m], np.linalg.solve(a, (v * np.maximum(c, 0.0)[:, None]).T).T, atol=1e-10)
        assert not solved[u, m:].any()
        np.testing.assert_allclose(solved[u].sum(0), solve_factor(v, c, y.T @ y, 2.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("lengths", [(1, 3, 4, 5, 9, 40, 2), tuple(np.random.default_rng(2).choice([1, 2, 3, 4, 4, 7], 300))])
def test_light_and_heavy_users_in_one_batch_get_their_factors_and_explanations(lengths: tuple[int, ...]) -> None:
    """factors=8: users with at most 4 known videos take the low-rank solve, longer ones the direct one; 300
    users: the light buckets go through in several blocks (solve.BLOCK), each user's rows where they belong."""
    settings = RecsSettings(factors=8, regularization=0.5, alpha=2.0)
    rng = np.random.default_rng(1)
    als = StreamingALS(settings)
    ids = [f"v{i}" for i in range(300)]
    als.upsert_items(ids, rng.normal(size=(300, 8)).astype(np.float32) / 3)
    histories = [{ids[j]: float(rng.uniform(0.5, 4)) for j in rng.choice(300, size=m, replace=False)}
                 for m in lengths]  # fmt: skip
    histories[1][ids[299]] = -1.0  # a skip never explains
    served = als.serve_many(histories, 5, explain=3)
    systems = als._solve_users(histories, keep=True)[1]
    for n, (history, (factor, items, because)) in enumerate(zip(histories, served)):
        rows = [als._row[v] for v in history]
        scaled = scale_confidence(list(history.values()), settings.alpha, settings.confidence_offset)
        expected = solve_factor(als._items[rows], scaled, als.item_gram(), settings.regularization)
        np.testing.assert_allclose(factor, expected, rtol=1e-5, atol=1e-7)
        shares = shares_of(systems, n, als._items[[als._row[v] for v, _ in items]])
        np.testing.assert_allclose(shares.sum(1), [s for _, s in items], rtol=1e-4, atol=1e-6)
        for row, why in zip(shares, because):
            assert why == [list(history)[j] for j in np.argsort(-row) if row[j] > 0][:3]


@pytest.mark.parametrize("make", [lambda: ExactIndex(4), lambda: IvfIndex(4, nlist=4, nprobe=4, train_per_list=10)])
def test_skips_are_matched_by_id_unknown_ones_included(make) -> None:
    index = make()
    rng = np.random.default_rng(2)
    ids = [f"v{i}" for i in range(60)]
    index.upsert(ids, rng.normal(size=(60, 4)).astype(np.float32))
    q = rng.normal(size=(3, 4)).astype(np.float32)
    full = index.search(q, 60)
    own = [{full[0][0][0], "gone", "never"}, set(), [full[2][1][0]]]  # a list works too
    out = index.search(q, 5, exclude={full[1][0][0], "gone"}, excludes=own)
    for hits, whole, skip in zip(out, full, own):
        kept = [v for v, _ in whole if v not in skip and v != full[1][0][0]]
        assert [v for v, _ in hits] == kept[:5]


def test_the_item_gram_kept_through_upserts_is_the_full_product() -> None:
    """`upsert_items` and `remove_videos` update the cached Y^T Y by the rows they change (repeated ids, new ones,
    removals between) instead of recomputing it: after each call it equals the full product, and it is recomputed
    in full only once as many rows as the catalog holds were updated (rounding stays that of one product)."""
    rng = np.random.default_rng(2)
    als = StreamingALS(RecsSettings(factors=8))
    als.upsert_items([f"v{i}" for i in range(100)], rng.normal(size=(100, 8)))
    kept = als.item_gram()
    full_recomputes = removals_recomputed = 0
    for step in range(60):
        ids = [f"v{i}" for i in rng.integers(0, 110 + step, size=int(rng.integers(1, 8)))]
        als.upsert_items(ids, rng.normal(size=(len(ids), 8)))
        if step % 10 == 5:  # a held video (listed twice: removed once) and one the model never had
            held = als.item_gram()
            als.remove_videos([ids[0], "never", ids[0]])
            assert ids[0] not in als.item_ids
            removals_recomputed += als.item_gram() is not held
        vectors = als.item_vectors().astype(np.float64)
        np.testing.assert_allclose(als.item_gram(), vectors.T @ vectors, rtol=1e-12, atol=1e-12)
        full_recomputes += als.item_gram() is not kept
        kept = als.item_gram()
    assert 1 <= full_recomputes < 10  # each time ~n rows were updated: not every call
    assert removals_recomputed <= 1  # of 6 removals: only one that reached that count could


def test_low_rank_rows_in_blocks_are_those_of_one_pass() -> None:
    """Blocks only bound the operands' size: every row's result is the same, bit for bit."""
    rng = np.random.default_rng(3)
    f, items = 16, 300
    y = rng.normal(size=(items, f)) / 4
    lengths = rng.integers(1, 9, size=50)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = rng.integers(0, items, size=lengths.sum())
    scaled = scale_confidence(rng.uniform(-1, 4, len(rows)), 2.0, 1.0)
    flat, valid = padded(starts, lengths)
    base_inv = np.linalg.inv(regularized(y.T @ y, 2.0))
    whole = low_rank_solve(y[rows], scaled, flat, valid, base_inv, block=len(flat))
    for block in (1, 7, 64):
        assert np.array_equal(low_rank_solve(y[rows], scaled, flat, valid, base_inv, block=block), whole), block
