"""Several workers in one consumer group: `reelstream bench scale` and the rebalance experiment.

Workers split the co-partitioned topics; each serves the users of its partitions and keeps a full replica
of the item index. Correctness is audited from the final state exactly as for crashes (lab.chaos.audit).
"""

from __future__ import annotations

import time
from typing import Any

from lab.chaos import (
    Feeder,
    audit,
    compare_runs,
    derived_before_and_after_refit,
    fault_free,
    settle,
    uncommitted,
    valid_events,
)
from lab.local import LocalStack, Worker, total, wait_for
from streams.settings import Settings


def owned_partitions(worker: Worker, topic: str) -> set[int]:
    """The partitions of `topic` a worker consumes now (its per-partition lag series)."""
    prefix = 'reelstream_consumer_lag_messages{partition="'
    out = set()
    for name in worker.metrics():
        if name.startswith(prefix) and f'topic="{topic}"' in name:
            out.add(int(name[len(prefix):].split('"')[0]))
    return out


def wait_balanced(stack: LocalStack, settings: Settings, timeout: float = 90) -> None:
    """Until the live workers own every events partition between them, each at least one."""
    def balanced() -> bool:
        live = [w for w in stack.workers if w.proc.poll() is None]
        owned = [owned_partitions(w, settings.topics.events) for w in live]
        return all(owned) and set().union(*owned) == set(range(settings.partitions))

    wait_for(balanced, timeout, "partitions assigned", [w.log for w in stack.workers])


def run_scale(
    workers: int, events: int, seed: int = 5, rebalance: bool = False, rate: float | None = None, reference: bool = False
) -> dict[str, Any]:
    """Feed a generated stream to `workers` workers (with `rebalance`: one more joins at a third of the feed
    and the first leaves at two thirds) and audit the final state. With `reference`, the same stream is first
    fed to one worker alone, and the derived state of both runs is compared (lab.chaos.compare_runs):
    partitions that moved must carry the item side's state by value."""
    from lab.generator import GeneratorConfig, generate
    from lab.recording import read_records

    settings = Settings()
    with LocalStack() as stack:
        path = stack.workdir / "stream.jsonl"
        generate(GeneratorConfig(users=max(200, events // 20), videos=max(100, events // 50), events=events,
                                 seed=seed), path)  # fmt: skip
        records = list(read_records(path))
        expected = fault_free(records, settings, rate, 300) if reference else None
        stack.start_broker()
        for _ in range(workers):
            # One join at a time: a second join in the middle of the first rebalance made the mock
            # broker's coordinator answer SyncGroup with InvalidRequest and the group never settled.
            stack.start_worker()
            wait_balanced(stack, settings)
        feeder = Feeder(stack.bootstrap, records, rate)
        logs = [w.log for w in stack.workers]
        start = time.perf_counter()
        feeder.start()
        if rebalance:
            wait_for(lambda: feeder.sent >= len(records) // 3, 120, "a third fed", logs)
            joiner = stack.start_worker()
            # Its join must complete before the leave below (a leave inside that rebalance can wedge the mock
            # broker's coordinator). It may own no events partition yet: Faust's sticky assignor caps each
            # member at ceil(partitions / members) and keeps 2 + 2 of 4 where they are.
            wait_for(lambda: total(joiner.metrics(), "reelstream_rebalances_total") >= 1, 90, "the join", logs)
            wait_for(lambda: feeder.sent >= 2 * len(records) // 3, 120, "two thirds fed", logs)
            stack.workers[0].stop()  # a clean leave (SIGTERM): its partitions move to the others
            wait_balanced(stack, settings)  # the survivors, the joiner included, own every partition
        feeder.join()
        wait_for(lambda: uncommitted(stack.bootstrap, settings) == 0, 300, "all input committed",
                 [w.log for w in stack.workers])  # fmt: skip
        seconds = time.perf_counter() - start
        exited = [w for w in stack.workers[1 if rebalance else 0:] if w.proc.poll() is not None]
        crash_logs = [f"{w.log.name} exited with {w.proc.returncode}: {w.log.read_text()[-3000:]}" for w in exited]
        # A scrape can time out while a worker is busy (it then reads as empty): ask until each one answers.
        alive = [w for w in stack.workers if w.proc.poll() is None]
        rebalances = sum(total(wait_for(w.metrics, 60, "metrics", [w.log]), "reelstream_rebalances_total") for w in alive)
        valid = valid_events(records, settings)
        result = audit(stack.bootstrap, settings, valid)
        derived = {}
        if expected is not None:
            settle(stack, stack.workers[-1], settings, 300)
            derived = compare_runs(derived_before_and_after_refit(stack, settings, 300), expected)
        served = {r.key for r in _recommendation_keys(stack.bootstrap, settings)}
    active = {e["user_id"] for e in valid} - {e["user_id"] for e in valid if e["type"] == "user_delete"}
    return {
        "workers": workers,
        "events": len(records),
        "events_per_s": round(len(records) / seconds, 1),
        "lost": result.lost,
        "double_counted": result.double_counted,
        "users_without_recs": sum(1 for u in active if u.encode() not in served),
        "rebalances": int(rebalances),
        "crashes": len(exited),
        "problems": crash_logs + result.problems,
        **derived,
    }


def _recommendation_keys(bootstrap: str, settings: Settings) -> list[Any]:
    from lab.recording import read_topic

    return [r for r in read_topic(bootstrap, settings.topics.recommendations) if r.value is not None]
