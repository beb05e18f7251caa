"""MMR re-ranking (models/recs/diversity.py) and its place in the served lists."""

from __future__ import annotations

import numpy as np

from models.recs.diversity import rerank

# two niches: a* along x, b* along y; within a niche the vectors are nearly the same
VEC = {f"a{i}": np.array([1.0, 0.01 * i, 0.0]) for i in range(6)} | {f"b{i}": np.array([0.0, 1.0, 0.01 * i]) for i in range(6)}
POOL = [(f"a{i}", 1.0 - 0.01 * i) for i in range(6)] + [(f"b{i}", 0.9 - 0.01 * i) for i in range(6)]


def _vectors(ids):
    return np.stack([VEC[i] for i in ids])


def test_strength_zero_is_the_plain_top_k_and_a_stronger_one_mixes_the_niches() -> None:
    assert rerank([POOL], _vectors, 4, 0.0) == [POOL[:4]]
    [mixed] = rerank([POOL], _vectors, 4, 0.5)
    assert mixed[0] == POOL[0]  # the most relevant first
    assert {v[0] for v, _ in mixed} == {"a", "b"} and len({v for v, _ in mixed}) == 4
    assert all(item in POOL for item in mixed)  # the pool's own scores, nothing invented


def test_a_batch_of_pools_of_any_length_keeps_each_users_own_videos() -> None:
    pools = [POOL, POOL[:2], [], POOL[6:9]]
    out = rerank(pools, _vectors, 4, 0.5)
    assert [len(o) for o in out] == [4, 2, 0, 3]
    for pool, got in zip(pools, out):
        assert len(set(got)) == len(got) and set(got) <= set(pool)


def test_the_served_lists_are_more_diverse_with_the_re_ranking() -> None:
    from models.recs.als import StreamingALS
    from models.recs.config import RecsSettings

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    ids = [f"v{i}" for i in range(200)]
    vectors = (centers[np.arange(200) % 4] + 0.1 * rng.normal(size=(200, 8))).astype(np.float32)
    plain = StreamingALS(RecsSettings(factors=8))
    plain.upsert_items(ids, vectors)
    diverse = StreamingALS(RecsSettings(factors=8, diversity=0.5, diversity_pool=10))
    diverse.upsert_items(ids, vectors)
    history = {"v0": 3.0, "v4": 2.0, "v1": 1.5}  # mostly the first niche, some of the second

    def ild(items):
        x = vectors[[ids.index(v) for v, _ in items]]
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return float((len(x) ** 2 - (x @ x.T).sum()) / (len(x) * (len(x) - 1)))

    [(_, a, _)] = plain.serve_many([history], 10)
    [(_, b, _)] = diverse.serve_many([history], 10)
    [(_, c, _)] = diverse.serve_many([history], 10, diversity=0.0)  # the setting overridden per call
    assert c == a and len(b) == 10 and not {v for v, _ in b} & set(history)
    assert ild(b) > ild(a) + 0.1, (ild(a), ild(b))
