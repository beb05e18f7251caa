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

from lab.recording import Record, high_watermarks
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
    return sum(lag_by_partition(bootstrap, settings).values())


def lag_by_partition(bootstrap: str, settings: Settings) -> dict[str, int]:
    """'topic[partition]' -> messages past the app's committed offset there, for every input partition
    (what a failed wait on `uncommitted` reports: which partition is stuck)."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.security import client_config

    consumer = Consumer(client_config(bootstrap, **{"group.id": settings.app_id, "enable.auto.commit": False}))
    try:
        lags = {}
        for topic in agent_inputs(settings):
            parts = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=5):
                high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)[1]
                lags[f"{topic}[{tp.partition}]"] = high - max(tp.offset, 0)
        return lags
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


# --- derived state ---------------------------------------------------------------------------------------
@dataclass
class Derived:
    """The state a worker derives, as the broker holds it once the stream is quiescent: the item side's
    (video, user) -> confidence (the item-state changelog), the latest vector per video (item-vectors) and
    the Gram of all users the item solves use (a refit's, from `models`; before one, the sum of user-gram's
    partials), and that sum itself (`served_gram`: the factors the workers hold for the users they serve,
    summed; after a refit, every user re-served from their history against the fit's vectors), with its
    parts per `events` partition (`partials`: which partition differs, when the sums do)."""

    items: dict[tuple[str, str], float]
    vectors: dict[str, Any]
    gram: Any
    served_gram: Any
    partials: dict[int, Any]


def derived_state(bootstrap: str, settings: Settings) -> Derived:
    import numpy as np

    from contracts.models import MODEL_KEY, parse_model_record, parse_vector_record
    from streams.items import parse_state_key
    from streams.topics import ITEM_STATE_TABLE, changelog

    items: dict[tuple[str, str], float] = {}
    for key, value in last_values(bootstrap, changelog(settings, ITEM_STATE_TABLE)).items():
        if value is not None:
            _, user = parse_state_key(orjson.loads(key))
            items.update({(video, user): c for video, c in orjson.loads(value)[2].items()})
    vectors = {}
    for key, value in last_values(bootstrap, settings.topics.item_vectors).items():
        parsed = None if value is None else parse_vector_record(orjson.loads(value))
        if parsed is not None:
            vectors[orjson.loads(key)] = np.asarray(parsed[0], dtype=np.float64)
    f = settings.recs.factors
    partials = {int(orjson.loads(k)): np.asarray(orjson.loads(v), dtype=np.float64).reshape(f, f)
                for k, v in last_values(bootstrap, settings.topics.user_gram).items() if v is not None}  # fmt: skip
    served = sum(partials.values()) if partials else np.zeros((f, f))
    published = last_values(bootstrap, settings.topics.models).get(orjson.dumps(MODEL_KEY))
    gram = served
    if published is not None:  # a refit's: the Gram every item solve uses from then on
        gram = np.asarray(parse_model_record(orjson.loads(published), f).gram, dtype=np.float64).reshape(f, f)
    return Derived(items, vectors, gram, served, partials)


# After the refit, vectors and Gram are a deterministic function of the users table (refit_and_settle), which
# the audit requires equal: only floating-point noise may remain (none was measured: both come out 0.0).
REFIT_TOLERANCE = 1e-6


def derived_ok(report: dict[str, Any]) -> bool:
    """A `compare_runs` report within what the issue asks: exact item state, refit state within tolerance."""
    return (report.get("item_state_mismatches", 0) == 0 and report.get("item_vectors_only_in_one_run", 0) == 0
            and report.get("item_vectors_max_rel_diff", 0.0) <= REFIT_TOLERANCE
            and report.get("gram_max_rel_diff", 0.0) <= REFIT_TOLERANCE
            and report.get("served_gram_max_rel_diff", 0.0) <= REFIT_TOLERANCE)  # fmt: skip


def compare_derived(got: Derived, reference: Derived) -> dict[str, Any]:
    """`item_state_mismatches`: (video, user) pairs present in one run only or with another confidence
    (exact: the item side's state is a function of the inputs, models/recs/confidence.py `video_confidences`);
    `item_vectors_max_rel_diff`: the largest |a - b| / |b| over videos with a vector in both runs
    (`item_vectors_only_in_one_run` counts the others); `gram_max_rel_diff`: |A - B| / |B| (Frobenius), and
    `served_gram_max_rel_diff` the same of `served_gram` (`served_gram_partitions_differing`: the `events`
    partitions whose parts differ by more than REFIT_TOLERANCE of that norm, or are in one run only)."""
    import numpy as np

    pairs = got.items.keys() | reference.items.keys()
    mismatched = sorted(p for p in pairs if got.items.get(p) != reference.items.get(p))
    common = got.vectors.keys() & reference.vectors.keys()
    diffs = [float(np.linalg.norm(got.vectors[v] - reference.vectors[v]) / max(np.linalg.norm(reference.vectors[v]), 1e-12))
             for v in common]  # fmt: skip
    gram_norm = max(float(np.linalg.norm(reference.gram)), 1e-12)
    served_norm = max(float(np.linalg.norm(reference.served_gram)), 1e-12)
    return {
        "item_state_mismatches": len(mismatched),
        "item_state_examples": [[*p, got.items.get(p), reference.items.get(p)] for p in mismatched[:5]],
        "item_vectors_max_rel_diff": round(max(diffs, default=0.0), 6),
        "item_vectors_only_in_one_run": len(got.vectors.keys() ^ reference.vectors.keys()),
        "gram_max_rel_diff": round(float(np.linalg.norm(got.gram - reference.gram)) / gram_norm, 6),
        "served_gram_max_rel_diff": round(float(np.linalg.norm(got.served_gram - reference.served_gram)) / served_norm, 6),
        "served_gram_partitions_differing": sorted(
            p for p in got.partials.keys() | reference.partials.keys()
            if p not in got.partials or p not in reference.partials
            or np.linalg.norm(got.partials[p] - reference.partials[p]) > REFIT_TOLERANCE * served_norm),
    }


def settle(stack: Any, worker: Any, settings: Settings, timeout_s: float) -> None:
    """Every agent input committed, then two item refresh intervals with no new item vector: quiescent."""
    from lab.local import wait_for

    logs = [w.log for w in stack.workers]
    wait_for(lambda: worker.proc.poll() is not None or uncommitted(stack.bootstrap, settings) == 0,
             timeout_s, "all input committed", logs)  # fmt: skip
    _quiet(stack, settings, timeout_s)


def refit_and_settle(stack: Any, settings: Settings, timeout_s: float) -> None:
    """The slow speed's refresh of a quiescent state: a trainer fits once (a function of the users table:
    rows in user-id order, a fixed seed, no earlier fit to start from; streams/trainer.py), publishes, and
    the workers settle on its vectors and Gram."""
    from lab.local import wait_for

    from contracts.models import MODEL_KEY, parse_model_record
    from lab.recs_replay import served_version

    trainer = stack.start_trainer()
    wait_for(lambda: high_watermarks(stack.bootstrap, settings.topics.models, 1)[0] > 0, timeout_s, "a refit",
             [trainer.log], trainer.proc)  # fmt: skip
    trainer.stop()
    record = last_values(stack.bootstrap, settings.topics.models)[orjson.dumps(MODEL_KEY)]
    version = parse_model_record(orjson.loads(record), settings.recs.factors).model_version
    live = [w for w in stack.workers if w.proc.poll() is None]
    # Every worker serves the fit and has served its users again with it (their factors feed user-gram).
    wait_for(lambda: all(served_version(m) == version and m.get("reelstream_refresh_pending_users", 0) == 0
                         for m in (w.metrics() for w in live)), timeout_s, "every worker serving the refit",
             [w.log for w in live])  # fmt: skip
    _quiet(stack, settings, timeout_s)


def derived_before_and_after_refit(stack: Any, settings: Settings, timeout_s: float) -> tuple[Derived, Derived]:
    """Of a settled stack: its derived state, then again after `refit_and_settle`."""
    before = derived_state(stack.bootstrap, settings)
    refit_and_settle(stack, settings, timeout_s)
    return before, derived_state(stack.bootstrap, settings)


def compare_runs(got: tuple[Derived, Derived], reference: tuple[Derived, Derived]) -> dict[str, Any]:
    """`compare_derived` after the refit, and the streaming state's differences before it (`*_before_refit`).
    The item state is compared at both points: a refit's videos leave the item side (models/recs/item_side.py),
    so after it only what no fit covers is left, and the state the faults went through is the one before."""
    before, after = compare_derived(got[0], reference[0]), compare_derived(got[1], reference[1])
    return {**after,
            "item_state_mismatches": before["item_state_mismatches"] + after["item_state_mismatches"],
            "item_state_examples": (before["item_state_examples"] + after["item_state_examples"])[:5],
            "item_state_mismatches_before_refit": before["item_state_mismatches"],
            "item_state_pairs_before_refit": len(reference[0].items),
            "item_state_pairs_after_refit": len(reference[1].items),
            **{f"{k}_before_refit": before[k] for k in ("item_vectors_max_rel_diff", "gram_max_rel_diff")}}  # fmt: skip


def _quiet(stack: Any, settings: Settings, timeout_s: float) -> None:
    """Until neither item-vectors nor the item-state changelog (what the item side journals, e.g. the state a
    fit now covers leaving it) changes over two item refresh intervals."""
    from streams.topics import ITEM_STATE_TABLE, changelog

    topics = (settings.topics.item_vectors, changelog(settings, ITEM_STATE_TABLE))
    interval = settings.recs.item_refresh_interval_s
    last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = [high_watermarks(stack.bootstrap, topic, settings.partitions) for topic in topics]
        if now == last:
            return
        last = now
        time.sleep(2 * interval + 1)  # a tick's vectors, and the flush after them
    raise TimeoutError(f"item vectors or item state still changing after {timeout_s} s")


def fault_free(records: list, settings: Settings, rate: float | None, timeout_s: float) -> tuple[Derived, Derived]:
    """The same replay on a fresh broker and worker, without faults, at the same rate (the two-speed loop
    is asynchronous: what the item side has solved when a user is served depends on the feed's pace), as
    the reference for derived state."""
    from lab.local import LocalStack

    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        feeder = Feeder(stack.bootstrap, records, rate)
        feeder.start()
        feeder.join()
        settle(stack, worker, settings, timeout_s)
        return derived_before_and_after_refit(stack, settings, timeout_s)


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
    derived: dict[str, Any] = field(default_factory=dict)  # compare_runs against a fault-free replay

    def report(self) -> dict[str, Any]:
        """The `bench chaos --json` object."""
        keys = ("kills", "outage_s", "events", "lost", "double_counted", "unexpected", "dlq", "dlq_expected",
                "crashes", "seconds")  # fmt: skip
        return {**{k: v for k, v in asdict(self).items() if k in keys}, **self.derived}


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
    reference: bool = True,
) -> ChaosResult:
    """Feed a generated stream (with its malformed messages) to a worker; kill it `kills` times at seeded
    random points (restarting it each time, alternately on its own local store and on an empty one), then
    take the broker down for `outage_s`; audit the result. With `reference`, the same stream is first
    replayed without faults, and the derived state of both runs is compared (`compare_runs`)."""
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
        expected = fault_free(records, settings, rate, settle_timeout_s) if reference else None
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
        settle(stack, worker, settings, settle_timeout_s)
        crashes = sum(1 for w in stack.workers if w.proc.poll() is not None and w.proc.pid not in killed)
        result = audit(stack.bootstrap, settings, valid_events(records, settings))
        derived = {}
        if expected is not None:
            derived = compare_runs(derived_before_and_after_refit(stack, settings, settle_timeout_s), expected)
    return ChaosResult(
        kills=kills, outage_s=outage_s, events=result.events, lost=result.lost,
        double_counted=result.double_counted, unexpected=result.unexpected, dlq=result.dlq,
        dlq_expected=dlq_expected, crashes=crashes, seconds=round(time.monotonic() - started, 1),
        problems=result.problems, derived=derived,
    )  # fmt: skip
