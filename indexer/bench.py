"""`reelstream bench index`: every index kind on the same synthetic ALS-like items, exact as the baseline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from indexer.base import VectorIndex
from indexer.config import IndexSettings
from indexer.factory import make_index
from indexer.ivf import IvfIndex
from indexer.synthetic import als_like


def run(settings: IndexSettings, *, items: int, dim: int = 64, queries: int = 500, k: int = 20,
        ops: int = 200, seed: int = 0) -> dict[str, Any]:
    """Build each kind on `items` vectors and measure it; ratios are to exact, measured in the same run."""
    x, users = als_like(items + ops, queries, dim, seed)
    x, spare = x[:items], x[items:]
    ids = [f"v{i}" for i in range(items)]
    results: dict[str, dict[str, Any]] = {}
    truth: list[set[str]] = []
    indexes: dict[str, VectorIndex] = {}
    for kind in ("exact", "ivf"):
        index = make_index(settings.model_copy(update={"kind": kind}), dim)
        start = time.perf_counter()
        index.upsert(ids, x)
        build_s = time.perf_counter() - start
        hits = index.search(users, k)
        if kind == "exact":
            truth = [{v for v, _ in row} for row in hits]
        recall = float(np.mean([len(t & {v for v, _ in row}) / k for t, row in zip(truth, hits)]))
        single = [_clock(partial(index.search, users[i : i + 1], k)) for i in range(queries)]
        start = time.perf_counter()
        index.search(users, k)
        batch_qps = queries / (time.perf_counter() - start)
        results[kind] = {
            # False for an IVF still below its training threshold (nlist x train_per_list items): exact then.
            "approximate": isinstance(index, IvfIndex) and index.trained,
            "build_s": round(build_s, 3),
            f"recall_at_{k}": round(recall, 4),
            "single_query_ms": _percentiles([wall for wall, _ in single]),
            "single_query_cpu_ms": _percentiles([cpu for _, cpu in single]),
            "batch_queries_per_s": round(batch_qps, 1),
            **_writes(index, ids, x, spare, k, np.random.default_rng(seed + 1)),
        }
        indexes[kind] = index
    # Both indexes took the same writes (same seed), including a norm overflow that made the IVF relift.
    after = [{v for v, _ in row} for row in indexes["exact"].search(users, k)]
    hits = indexes["ivf"].search(users, k)
    results["ivf"][f"recall_at_{k}_after_writes"] = round(
        float(np.mean([len(t & {v for v, _ in row}) / k for t, row in zip(after, hits)])), 4)
    return {
        "items": items, "dim": dim, "queries": queries, "k": k, "write_ops": ops,
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "settings": settings.model_dump(exclude={"kind"}),
        **results,
        "ivf_to_exact": _ratios(results["ivf"], results["exact"]),
    }


def _writes(index: VectorIndex, ids: list[str], x: np.ndarray, spare: np.ndarray, k: int,
            rng: np.random.Generator) -> dict[str, Any]:
    """Single-item writes as the item-vector stream issues them: half updates of known ids, half new ids.
    Upserts are synchronous, so an upsert's latency is its time to searchable; `upsert_visible` checks that:
    each upserted vector is rescaled to 1.05 x the longest item norm, so it must be the top-1 of a query along
    its own direction (inside the IVF's norm headroom, so no relift)."""
    longest = float(np.linalg.norm(x, axis=1).max())
    beacons = spare / np.linalg.norm(spare, axis=1, keepdims=True)
    targets = [ids[i] if j % 2 else f"new{j}" for j, i in enumerate(rng.integers(0, len(ids), len(spare)))]
    upserts, visible = [], 0
    for video_id, direction in zip(targets, beacons):
        upserts.append(_clock(partial(index.upsert, [video_id], direction[None] * (1.05 * longest))))
        visible += index.search(direction[None], 1)[0][0][0] == video_id
    victims = [ids[i] for i in rng.choice(len(ids), len(spare), replace=False)]
    removes = [_clock(partial(index.remove, [v])) for v in victims]
    assert not set(victims) & {v for row in index.search(x[rng.integers(0, len(x), 50)], k) for v, _ in row}
    overflow = _clock(partial(index.upsert, ["longest"], x[:1] / np.linalg.norm(x[0]) * 2 * longest))
    return {
        "upsert_ms": _percentiles([wall for wall, _ in upserts]),
        "upsert_cpu_ms": _percentiles([cpu for _, cpu in upserts]),
        "upsert_visible": round(visible / len(spare), 3),
        "remove_ms": _percentiles([wall for wall, _ in removes]),
        "norm_overflow_upsert_s": round(overflow[0], 3),
    }


def _clock(call: Callable[[], object]) -> tuple[float, float]:
    """Wall and this thread's CPU seconds of one call. On a shared machine the wall tail is mostly time spent
    descheduled, which CPU time leaves out (single-threaded calls do all their work on this thread)."""
    start, start_cpu = time.perf_counter(), time.thread_time()
    call()
    return time.perf_counter() - start, time.thread_time() - start_cpu


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 4), "p99": round(float(np.percentile(ms, 99)), 4)}


def _ratios(ivf: dict[str, Any], exact: dict[str, Any]) -> dict[str, float]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b else float("nan")

    return {
        "build_s": ratio(ivf["build_s"], exact["build_s"]),
        "single_query_p50": ratio(ivf["single_query_ms"]["p50"], exact["single_query_ms"]["p50"]),
        "single_query_p99": ratio(ivf["single_query_ms"]["p99"], exact["single_query_ms"]["p99"]),
        "batch_queries_per_s": ratio(ivf["batch_queries_per_s"], exact["batch_queries_per_s"]),
        "upsert_p50": ratio(ivf["upsert_ms"]["p50"], exact["upsert_ms"]["p50"]),
        "remove_p50": ratio(ivf["remove_ms"]["p50"], exact["remove_ms"]["p50"]),
    }
