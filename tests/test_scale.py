"""Several workers in one consumer group on the embedded broker: a rebalance during a replay (a worker
joins, another leaves) loses nothing, double-counts nothing, and every active user keeps being served; a
rejoin whose SyncGroup fails leaves no zombie member."""

from __future__ import annotations

import signal

import pytest

from lab.chaos import Feeder, audit, uncommitted, valid_events
from lab.generator import GeneratorConfig, generate
from lab.local import LocalStack, wait_for
from lab.recording import read_records
from lab.chaos import derived_ok
from lab.scale import owned_partitions, run_scale, wait_balanced
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_rebalance_during_replay_loses_nothing():
    """A join and a leave mid-replay: histories as the audit requires, and the item side's state of the
    partitions that moved, by value, as one worker alone derives it from the same stream."""
    result = run_scale(workers=2, events=3000, seed=8, rebalance=True, rate=800.0, reference=True)
    print({k: v for k, v in result.items() if k != "problems"})
    assert result["crashes"] == 0, result["problems"]
    assert result["item_state_mismatches"] == 0, result["item_state_examples"]
    assert derived_ok(result), {k: v for k, v in result.items() if k != "problems"}
    assert result["lost"] == 0 and result["double_counted"] == 0, result["problems"]
    assert result["users_without_recs"] == 0
    assert result["rebalances"] >= 2  # the join and the leave were both seen by the surviving workers


def test_a_rejoin_whose_sync_group_fails_leaves_no_zombie_member():
    """A SyncGroup answered with an unexpected error during a rebalance (the mock broker does this when
    joins and leaves overlap; SIGHUP injects it) must not leave the member that had partitions holding its
    old assignment without consuming, nor crash it later: both members rejoin and split the partitions,
    and a replay afterwards is processed in full."""
    settings = Settings()
    with LocalStack() as stack:
        stack.start_broker()
        stack.start_worker()
        wait_balanced(stack, settings)
        stack.broker.send_signal(signal.SIGHUP)  # the next two SyncGroup requests: INVALID_REQUEST
        stack.start_worker()
        logs = [w.log for w in stack.workers]

        def split() -> bool:
            owned = [owned_partitions(w, settings.topics.events) for w in stack.workers]
            return all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == set(range(settings.partitions))

        wait_for(split, 90, "the two members splitting the partitions", logs)
        assert "Unexpected error from SyncGroup" in "".join(p.read_text() for p in logs)  # the fault happened
        path = stack.workdir / "stream.jsonl"
        generate(GeneratorConfig(users=100, videos=50, events=400, seed=3), path)
        records = list(read_records(path))
        feeder = Feeder(stack.bootstrap, records, None)
        feeder.start()
        feeder.join()
        wait_for(lambda: uncommitted(stack.bootstrap, settings) == 0, 120, "all input committed", logs)
        assert [w.proc.poll() for w in stack.workers] == [None, None]
        result = audit(stack.bootstrap, settings, valid_events(records, settings))
        assert result.lost == 0 and result.double_counted == 0, result.problems
