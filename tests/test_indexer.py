"""Contract of indexer.base.VectorIndex, run against every implementation (and the IVF's exact cold start)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from indexer.base import VectorIndex
from indexer.config import IndexSettings
from indexer.exact import ExactIndex
from indexer.factory import make_index, restore_index
from indexer.ivf import IvfIndex
from indexer.synthetic import als_like

DIM = 16
N = 4000

IMPLEMENTATIONS: dict[str, Callable[[], VectorIndex]] = {
    "exact": lambda: ExactIndex(DIM),
    "ivf": lambda: IvfIndex(DIM, nlist=16, nprobe=8, train_per_list=39),
    "ivf-cold": lambda: IvfIndex(DIM, nlist=16, nprobe=8, train_per_list=10_000),
}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def make(request: pytest.FixtureRequest) -> Callable[[], VectorIndex]:
    return IMPLEMENTATIONS[request.param]


def random_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((N, DIM), dtype=np.float32) * rng.lognormal(0, 0.5, (N, 1)).astype(np.float32)
    return items, rng.standard_normal((50, DIM), dtype=np.float32)


def clustered_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return als_like(N, 50, DIM, seed)


def ids_for(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def filled(make: Callable[[], VectorIndex], items: np.ndarray) -> VectorIndex:
    index = make()
    index.upsert(ids_for(len(items)), items)
    return index


def brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> list[list[str]]:
    top = np.argsort(-(queries @ items.T), axis=1)[:, :k]
    return [[f"v{i}" for i in row] for row in top]


# Isotropic random data has no cluster structure for IVF to exploit (its worst case): nprobe 8 of 16 lists
# gives ~0.83 there and ~0.99 on the ALS-like clustered data. Exact search must be exact.
@pytest.mark.parametrize(("data", "ivf_min_recall"), [(random_data, 0.8), (clustered_data, 0.95)],
                         ids=["random", "clustered"])
def test_recall_and_scores_match_brute_force(make, data, ivf_min_recall: float) -> None:
    items, queries = data()
    index = filled(make, items)
    hits = index.search(queries, 20)
    truth = brute_force(items, queries, 20)
    recall = np.mean([len({h for h, _ in got} & set(want)) / 20 for got, want in zip(hits, truth)])
    approximate = isinstance(index, IvfIndex) and index.trained
    assert recall >= (ivf_min_recall if approximate else 1.0)
    position = {v: i for i, v in enumerate(ids_for(N))}
    for q, row in zip(queries, hits):
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, [float(items[position[v]] @ q) for v, _ in row], rtol=1e-4, atol=1e-4)


def test_len_contains_and_remove(make) -> None:
    items, _ = random_data()
    index = filled(make, items)
    assert len(index) == N and "v3" in index and "nope" not in index
    assert index.remove(["v3", "v4", "nope", "v3"]) == 2
    assert len(index) == N - 2 and "v3" not in index
    found = {v for row in index.search(items[:10], 50) for v, _ in row}
    assert not found & {"v3", "v4"}


def test_removed_ids_never_returned(make) -> None:
    items, queries = clustered_data()
    index = filled(make, items)
    gone = set(ids_for(N)[::2])
    assert index.remove(gone) == len(gone)
    rows = index.search(np.vstack([items[:200], queries]), 30)
    assert all(len(row) == 30 for row in rows)
    assert not {v for row in rows for v, _ in row} & gone


def test_concurrent_search_never_sees_completed_removal(make) -> None:
    items, _ = clustered_data()
    index = filled(make, items)
    rng = np.random.default_rng(2)
    writes = [(f"v{i}", [f"v{i + 1}", f"new{i}"], rng.standard_normal((2, DIM), dtype=np.float32))
              for i in range(0, 600, 3)]
    assert_concurrent_search_is_consistent(index, items, writes)


def test_concurrent_search_through_ivf_training() -> None:
    items, _ = clustered_data()
    index = IvfIndex(DIM, nlist=16, nprobe=8, train_per_list=39)
    index.upsert(ids_for(600), items[:600])
    writes = [(f"v{i}", ids_for(N)[600 + 20 * i : 620 + 20 * i], items[600 + 20 * i : 620 + 20 * i])
              for i in range(100)]  # crosses the training threshold (624) on the way
    assert_concurrent_search_is_consistent(index, items, writes)
    assert index.trained


def assert_concurrent_search_is_consistent(index: VectorIndex, items: np.ndarray,
                                           writes: list[tuple[str, list[str], np.ndarray]]) -> None:
    """Apply (remove one id, upsert some vectors) steps while another thread searches: nothing may fail, and no
    search that starts after a removal returned may return the removed id."""
    removed: list[str] = []  # appended only after remove() returned
    errors: list[BaseException] = []
    stop = threading.Event()
    rng = np.random.default_rng(1)

    def searcher() -> None:
        try:
            while not stop.is_set():
                already_gone = set(removed)
                for row in index.search(items[rng.integers(0, N, 8)], 20):
                    assert not {v for v, _ in row} & already_gone
        except BaseException as e:  # noqa: BLE001 - surfaced by the main thread
            errors.append(e)

    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        for gone, upserted, vectors in writes:
            index.remove([gone])
            removed.append(gone)
            index.upsert(upserted, vectors)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[0]
    assert not set(removed) & {v for row in index.search(items[:100], 50) for v, _ in row}


def test_updated_vector_found_at_new_place(make) -> None:
    items, _ = random_data()
    index = filled(make, items)
    direction = np.zeros((1, DIM), dtype=np.float32)
    direction[0, 0] = 1.0
    longest = float(np.linalg.norm(items, axis=1).max())
    for scale in (0.99 * longest, 3.0 * longest):  # inside the IVF's radius, then past it (rebuild)
        index.upsert(["v7"], direction * scale)
        (top, score), *_ = index.search(direction, 5)[0]
        assert top == "v7" and score == pytest.approx(scale, rel=1e-5)
        for video_id, score in index.search(items[7:8], 100)[0]:  # the old vector is gone, wherever v7 ranks
            if video_id == "v7":
                assert score == pytest.approx(float(items[7, 0]) * scale, rel=1e-4, abs=1e-4)
        assert len(index) == N


def test_duplicate_ids_in_one_upsert_keep_last(make) -> None:
    index = filled(make, random_data()[0])
    first, last = np.eye(DIM, dtype=np.float32)[:2] * 100
    index.upsert(["dup", "dup"], np.stack([first, last]))
    assert len(index) == N + 1
    assert index.search(last[None], 1)[0][0][0] == "dup"
    assert index.search(first[None], 1)[0][0][0] != "dup"


def test_exclude_filters_and_still_returns_k(make) -> None:
    items, queries = clustered_data()
    index = filled(make, items)
    full = index.search(queries[:5], 120)
    seen = {v for row in full for v, _ in row[:15]} | {"not-indexed"}
    filtered = index.search(queries[:5], 20, exclude=seen)
    for want, got in zip(full, filtered):
        assert len(got) == 20 and not {v for v, _ in got} & seen
        assert [v for v, _ in got] == [v for v, _ in want if v not in seen][:20]


def test_per_query_excludes_equal_one_search_per_query(make) -> None:
    items, queries = clustered_data()
    index = filled(make, items)
    full = index.search(queries[:6], 40)
    own = [{v for v, _ in row[n : 3 * n + 1]} for n, row in enumerate(full)]  # 0 to 11 ids each, differing
    batched = index.search(queries[:6], 10, exclude={full[0][0][0]}, excludes=own)
    for q, skip, got in zip(queries[:6], own, batched):
        assert got == index.search(q[None], 10, exclude=skip | {full[0][0][0]})[0]
        assert len(got) == 10 and not {v for v, _ in got} & skip
    with pytest.raises(ValueError):
        index.search(queries[:2], 5, excludes=[set()])


def test_snapshot_round_trip_is_identical(make) -> None:
    items, queries = clustered_data()
    index = filled(make, items)
    index.remove(ids_for(100))
    index.upsert(["v200", "fresh"], items[:2] * 0.5)
    for restored in (restore_index(index.snapshot()), type(index).restore(index.snapshot())):
        assert type(restored) is type(index) and len(restored) == len(index)
        assert restored.search(queries, 25, exclude={"v300"}) == index.search(queries, 25, exclude={"v300"})
        restored.upsert(["after"], items[:1])  # a restored index keeps working
        assert "after" in restored and "after" not in index


def test_empty_index_and_k_beyond_size(make) -> None:
    index = make()
    assert len(index) == 0
    assert index.search(np.ones((3, DIM), dtype=np.float32), 10) == [[], [], []]
    index.upsert(["a", "b"], np.eye(DIM, dtype=np.float32)[:2])
    assert [v for v, _ in index.search(np.eye(DIM, dtype=np.float32)[:1], 10)[0]] == ["a", "b"]
    index.remove(["a", "b"])
    assert index.search(np.ones((1, DIM), dtype=np.float32), 10) == [[]]


def test_bad_input_raises_value_error(make) -> None:
    index = filled(make, random_data()[0])
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        index.upsert(["x"], np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        index.search(np.ones((1, DIM - 1), dtype=np.float32), 5)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        index.search(np.ones(DIM, dtype=np.float32), 5)
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        index.upsert(["x", "y"], np.ones((1, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.upsert(["x"], np.full((1, DIM), np.nan, dtype=np.float32))
    assert len(index) == N


def test_ivf_trains_at_threshold_and_keeps_recall_after_norm_overflow() -> None:
    items, queries = clustered_data()
    index = IvfIndex(DIM, nlist=16, nprobe=8, train_per_list=39)
    index.upsert(ids_for(600), items[:600])
    assert not index.trained
    index.upsert(ids_for(N)[600:], items[600:])
    assert index.trained and len(index) == N
    longest = float(np.linalg.norm(items, axis=1).max())
    beacon = np.zeros((1, DIM), dtype=np.float32)
    beacon[0, 3] = 1.0
    index.upsert(["huge"], beacon * 5 * longest)  # past the radius: R grows in place
    assert index.search(beacon, 1)[0] == [("huge", pytest.approx(5 * longest, rel=1e-5))]
    everything = np.vstack([items, beacon * 5 * longest])
    names = ids_for(N) + ["huge"]
    truth = [[names[i] for i in row] for row in np.argsort(-(queries @ everything.T), axis=1)[:, :20]]
    hits = index.search(queries, 20)
    assert np.mean([len({v for v, _ in got} & set(want)) / 20 for got, want in zip(hits, truth)]) >= 0.9


def test_make_index_follows_settings() -> None:
    assert isinstance(make_index(IndexSettings(kind="exact"), DIM), ExactIndex)
    ivf = make_index(IndexSettings(kind="ivf", nlist=8, nprobe=4), DIM)
    assert isinstance(ivf, IvfIndex) and isinstance(ivf, VectorIndex) and ivf.dim == DIM
