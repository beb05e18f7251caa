"""Several workers in one consumer group on the embedded broker: a rebalance during a replay (a worker
joins, another leaves) loses nothing, double-counts nothing, and every active user keeps being served."""

from __future__ import annotations

import pytest

from streams.scale import run_scale

pytestmark = pytest.mark.integration


def test_rebalance_during_replay_loses_nothing():
    result = run_scale(workers=2, events=3000, seed=8, rebalance=True, rate=800.0)
    assert result["crashes"] == 0
    assert result["lost"] == 0 and result["double_counted"] == 0, result["problems"]
    assert result["users_without_recs"] == 0
    assert result["rebalances"] >= 2  # the join and the leave were both seen by the surviving workers
