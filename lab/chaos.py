"""Reliability experiments (kills, broker outages, hostile input) and `reelstream bench chaos`.

A replay is fed to real worker processes on the embedded broker while faults are injected: `kill -9` of
the worker at seeded random points of the stream (restarted each time), and the broker taken down
(SIGUSR1) and back up (SIGUSR2). When every agent input is committed, the final state is audited against
the inputs: the users table changelog (last value per key) must hold each valid event of each non-erased
user exactly once, every comment must have a flag and every user's last event must have been served.
Outputs may repeat (at-least-once); state may not.
"""

from __future__ import annotations

import collections
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from lab.recording import Record
from streams.producer import make_producer
from streams.settings import Settings

FAULT_HEADER = "x-reelstream-fault"  # set by lab.generator on malformed or repeated messages


# --- feeding and waiting ------------------------------------------------------------------------------
class Feeder(threading.Thread):
    """Produces records at a fixed rate in the background; `sent` says how far it got.

    Its producer waits out broker outages (a long message timeout): the feeder stands for upstream
    producers, which retry, and is not what is under test.
    """

    def __init__(
        self, bootstrap: str, records: list[Record], rate: float | None, timeout_s: float = 300,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`extra`: more librdkafka producer settings (e.g. a larger `message.max.bytes`)."""
        super().__init__(daemon=True, name="chaos-feeder")
        self.records = records
        self.rate = rate
        self.sent = 0
        self.errors: list[str] = []
        self.producer = make_producer(
            bootstrap,
            **{
                "message.timeout.ms": int(timeout_s * 1000),
                "log_level": 2,  # connection errors during outages are expected; delivery errors are kept
                **(extra or {}),
            },
        )

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self) -> None:
        from lab.recording import produce_records

        produce_records(self.producer, self.records, rate=self.rate, on_delivery=self._delivered,
                        on_sent=lambda i, rec, at: setattr(self, "sent", i + 1))  # fmt: skip
        if self.producer.flush(300):
            self.errors.append("undelivered after 300 s")


def agent_inputs(settings: Settings) -> list[str]:
    """The topics the worker's agents consume: committed to their end means every output is flushed."""
    t = settings.topics
    return [t.events, t.videos, t.comments, t.interactions_by_video]


def uncommitted(bootstrap: str, settings: Settings) -> int:
    """Messages in the agents' input topics past the app's committed offsets (the consumer-group lag)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        lag = 0
        for topic in agent_inputs(settings):
            parts = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=5):
                high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)[1]
                lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


# --- the audit ----------------------------------------------------------------------------------------
@dataclass
class Audit:
    """What the final state says about the inputs. `problems` names the first few offenders."""

    events: int = 0  # valid user events fed
    lost: int = 0  # valid events missing from state, comments without a flag, users not served last
    double_counted: int = 0  # state rows beyond what the inputs justify, per (user, event type)
    unexpected: int = 0  # state or recommendations an erasure should have removed
    dlq: int = 0  # distinct dead-lettered input messages
    dlq_by_reason: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


def fault_of(rec: Record) -> str | None:
    return next((v.decode() for k, v in rec.headers if k == FAULT_HEADER and v is not None), None)


def valid_events(records: Iterable[Record], settings: Settings) -> list[dict]:
    """Valid user events in feed order (generated faults are tagged; a tagged duplicate is a valid repeat)."""
    from lab.generator import FAULTS

    out = []
    for rec in records:
        kind = fault_of(rec)
        if rec.topic == settings.topics.events and (kind is None or FAULTS.get(kind) is None):
            out.append(orjson.loads(rec.value))
    return out


def last_values(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """A compacted topic as its consumers see it: the last value per key (None: a tombstone)."""
    from lab.recording import read_topic

    return {rec.key: rec.value for rec in read_topic(bootstrap, topic)}


def audit(bootstrap: str, settings: Settings, valid: list[dict]) -> Audit:
    """Read the final state and outputs back from the broker and reconcile them with the valid inputs."""
    from lab.recording import read_topic
    from streams.topics import USERS_TABLE, changelog

    t = settings.topics
    state = {orjson.loads(k): orjson.loads(v)["events"] if v else None
             for k, v in last_values(bootstrap, changelog(settings, USERS_TABLE)).items()}  # fmt: skip
    recs: dict[str, list[dict | None]] = collections.defaultdict(list)
    for rec in read_topic(bootstrap, t.recommendations):
        recs[rec.key.decode()].append(orjson.loads(rec.value) if rec.value else None)
    flagged = {orjson.loads(r.value)["event_id"] for r in read_topic(bootstrap, t.moderation_flags)}
    dead = {}
    for rec in read_topic(bootstrap, t.dlq):
        d = orjson.loads(rec.value)
        dead[(d["topic"], d["partition"], d["offset"])] = d["reason"]
    return reconcile(settings.recs.history_max_events, valid, state, recs, flagged, dead)


def reconcile(
    history_max: int,
    valid: list[dict],
    state: dict[str, list | None],
    recs: dict[str, list[dict | None]],
    flagged: set[str],
    dead: dict[tuple, str],
) -> Audit:
    """The audit itself: final users table (user -> rows | None), recommendations per user in order,
    flagged comment ids, dead letters by source (topic, partition, offset) -> reason."""
    result = Audit(events=len(valid), dlq=len(dead), dlq_by_reason=dict(collections.Counter(dead.values())))
    expected: dict[str, dict[str, str]] = {}  # user -> event_id -> type, in feed order
    last_event: dict[str, dict] = {}
    comments: dict[str, str] = {}  # event_id -> user
    for e in valid:
        user = e["user_id"]
        last_event[user] = e
        if e["type"] == "user_delete":
            expected.pop(user, None)
            comments = {c: u for c, u in comments.items() if u != user}
        else:
            expected.setdefault(user, {}).setdefault(e["event_id"], e["type"])
            if e["type"] == "comment":
                comments[e["event_id"]] = user
    for user, e in last_event.items():
        rows, served = state.get(user), recs.get(user, [])
        if user not in expected:  # erased last
            if rows is not None:
                result.unexpected += 1
                result.note(f"{user}: erased, but the users table still holds {len(rows)} rows")
            if served and served[-1] is not None:
                result.unexpected += 1
                result.note(f"{user}: a recommendation after erasure")
            continue
        window = dict(list(expected[user].items())[-history_max:])
        stored = [r[0] for r in rows or []]
        for event_id in window.keys() - set(stored):
            result.lost += 1
            result.note(f"{user}: event {event_id} missing from state")
        for event_id in set(stored) - window.keys():
            result.unexpected += 1
            result.note(f"{user}: event {event_id} in state, not in the inputs since the last erasure")
        for kind, n in (collections.Counter(r[2] for r in rows or []) - collections.Counter(window.values())).items():
            result.double_counted += n
            result.note(f"{user}: {n} more {kind} rows than inputs")
        if not any(r and r["source_event_id"] == e["event_id"] for r in served):
            result.lost += 1
            result.note(f"{user}: last event {e['event_id']} never served")
    for event_id in comments.keys() - flagged:
        result.lost += 1
        result.note(f"comment {event_id} has no flag")
    return result


# --- the experiment -----------------------------------------------------------------------------------
@dataclass
class ChaosResult:
    kills: int
    outage_s: float
    events: int
    lost: int
    double_counted: int
    unexpected: int
    dlq: int
    dlq_expected: int
    crashes: int
    seconds: float
    problems: list[str]

    def report(self) -> dict[str, Any]:
        """The `bench chaos --json` object."""
        keys = ("kills", "outage_s", "events", "lost", "double_counted", "unexpected", "dlq", "dlq_expected",
                "crashes", "seconds")  # fmt: skip
        return {k: v for k, v in asdict(self).items() if k in keys}


def fault_points(rng: random.Random, total: int, phases: int) -> list[int]:
    """One position per phase, uniformly inside equal windows of the middle 80% of the stream."""
    lo, width = total // 10, (total * 8 // 10) // max(phases, 1)
    return [lo + i * width + rng.randrange(max(width, 1)) for i in range(phases)]


def run_chaos(
    *,
    kills: int = 3,
    outage_s: float = 30.0,
    events: int = 3000,
    users: int = 150,
    seed: int = 7,
    rate: float = 100.0,
    settle_timeout_s: float = 180.0,
) -> ChaosResult:
    """Feed a generated stream (with its malformed messages) to a worker; kill it `kills` times at seeded
    random points (restarting it each time, alternately on its own local store and on an empty one), then take the broker down for `outage_s`; audit the result."""
    from lab.generator import FAULTS, GeneratorConfig, generate
    from lab.local import LocalStack, consumed, wait_for
    from lab.recording import read_records

    started = time.monotonic()
    settings = Settings()
    with LocalStack() as stack:
        path = stack.workdir / "stream.jsonl"
        truth = generate(GeneratorConfig(users=users, videos=max(50, users), events=events, seed=seed,
                                         events_topic=settings.topics.events, videos_topic=settings.topics.videos,
                                         with_faults=True), path)  # fmt: skip
        records = list(read_records(path))
        dlq_expected = sum(n for k, n in truth["counts"].items() if k.startswith("faults.") and FAULTS[k[7:]])
        stack.start_broker()
        worker = stack.start_worker()
        killed: set[int] = set()
        feeder = Feeder(stack.bootstrap, records, rate)
        points = fault_points(random.Random(seed), len(records), kills + (1 if outage_s else 0))
        logs = lambda: [w.log for w in stack.workers]  # noqa: E731

        def reached(position: int) -> Callable[[], bool]:
            """The feed reached `position` and the current worker consumes (or it exited by itself)."""
            return lambda: worker.proc.poll() is not None or (
                feeder.sent >= position and consumed(worker.metrics()) > 0
            )

        feeder.start()
        for n, point in enumerate(points[:kills]):
            # A kill lands in the middle of live processing: the feed reached the point and this worker
            # process has handled input (it may hold uncommitted offsets and unflushed outputs).
            # A worker that exited by itself is counted as a crash below, and restarted like a killed one.
            wait_for(reached(point), 120, "kill point", logs())
            if worker.proc.poll() is None:
                worker.stop(signal.SIGKILL)
                killed.add(worker.proc.pid)
            # Alternately on the dead worker's own disk (its local store and the changelog's tail) and on a
            # new one (another machine: the whole changelog).
            worker = stack.start_worker(data_dir=worker.data_dir if n % 2 == 0 else None)
        if outage_s:
            # Only once the (restarted) worker consumes: this scenario is an outage under a running worker.
            # A worker starting, or making its first group join, inside an outage is covered by
            # tests/test_reliability.py (it used to stay idle with no partitions; streams/transport/group_join.py).
            wait_for(reached(points[-1]), 120, "outage point", logs())
            stack.broker.send_signal(signal.SIGUSR1)
            time.sleep(outage_s)  # the outage itself: a duration, not a condition
            stack.broker.send_signal(signal.SIGUSR2)
        feeder.join()
        if feeder.errors:
            raise RuntimeError(f"feeding failed: {feeder.errors[:3]}")
        wait_for(lambda: worker.proc.poll() is not None or uncommitted(stack.bootstrap, settings) == 0,
                 settle_timeout_s, "all input committed", logs())  # fmt: skip
        crashes = sum(1 for w in stack.workers if w.proc.poll() is not None and w.proc.pid not in killed)
        result = audit(stack.bootstrap, settings, valid_events(records, settings))
    return ChaosResult(
        kills=kills, outage_s=outage_s, events=result.events, lost=result.lost,
        double_counted=result.double_counted, unexpected=result.unexpected, dlq=result.dlq,
        dlq_expected=dlq_expected, crashes=crashes, seconds=round(time.monotonic() - started, 1),
        problems=result.problems,
    )  # fmt: skip
