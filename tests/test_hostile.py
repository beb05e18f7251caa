"""Hostile input: malformed, mistyped, oversized, duplicated and odd-but-valid messages mixed with real traffic.

Every message is made by one of the makers below, which know the DLQ reason it must get (None: valid). The
same makers drive Hypothesis (random instances it controls and shrinks) for the parser and the pipeline,
and a seeded stream of 10,000 messages for a real worker, where each bad message must land in the DLQ
with its reason, counts per reason taken from the DLQ topic itself, while valid traffic flows.

The ~1 MB messages (`mb_text`, `too_large`) go through a real worker too, in a fast stream of their own
(the 10,000-message stream times throughput). The embedded broker keeps at most 5 MiB per partition and
deletes older records beyond that (lab/broker.py): a burst of 1 MB messages once made it delete
records the worker had not read yet, and the worker skipped them and committed past them without a trace.
The worker now dead-letters such holes (`offset_gap`, streams/transport/offset_gaps.py), and a test forces one; the
1 MB test keeps every partition under the cap, so each of its messages must be processed or dead-lettered
with its own reason.
"""

from __future__ import annotations

import base64
import collections
import json
import random
import time
from collections.abc import Callable

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from contracts.events import InvalidMessage, parse_event
from streams.pipeline import DLQ_RAW_MAX_BYTES, Message, Pipeline
from tests.sinks import Sink

START_TS = 1_767_225_600
TEXTS = ["great video", "太好看了", "🔥🔥🔥", "'; DROP TABLE users; --", "<script>alert(1)</script>",
         "a\u0000b", "\u202eevil", "x" * 5000]  # fmt: skip
Maker = Callable[[random.Random, dict], bytes | None]


def valid_event(rng: random.Random, n: int, prefix: str) -> dict:
    """A valid user event; its video may be one no upload ever announced (still valid)."""
    kind = rng.choice(["watch", "watch", "like", "unlike", "share", "skip", "comment"])
    e = {"schema_version": 1, "event_id": f"{prefix}-{n}", "type": kind, "user_id": f"{prefix}u{rng.randrange(150)}",
         "video_id": f"{prefix}v{rng.randrange(400)}", "ts": START_TS + n}  # fmt: skip
    if kind == "watch":
        e |= {"watch_ms": rng.randrange(0, 60_000), "duration_ms": rng.randrange(1, 60_000)}
    elif kind == "comment":
        e |= {"text": rng.choice(TEXTS), "lang": rng.choice(["en", "zh", None])}
    return e


def _patch(**fields: object) -> Maker:
    return lambda rng, e: orjson.dumps({**e, **fields})


def _drop(rng: random.Random, e: dict) -> bytes:
    required = ["event_id", "user_id", "ts", "video_id", "type"] + {"watch": ["watch_ms", "duration_ms"],
                                                                    "comment": ["text"]}.get(e["type"], [])  # fmt: skip
    name = rng.choice(required)
    return orjson.dumps({k: v for k, v in e.items() if k != name})


def _comment(chars: int) -> Maker:
    return lambda rng, e: orjson.dumps({**e, "type": "comment", "lang": "en", "text": "spam " * (chars // 5)})


# kind -> (maker, DLQ reason or None when valid). Each maker changes exactly one thing of a valid event.
KINDS: dict[str, tuple[Maker, str | None]] = {
    "valid": (lambda rng, e: orjson.dumps(e), None),
    # ASCII-escaped first: a cut through a multi-byte character would make it bad_encoding instead
    "bad_json": (lambda rng, e: json.dumps(e).encode()[: -rng.randrange(1, 20)], "bad_json"),
    "nan": (lambda rng, e: orjson.dumps(e).replace(b'"ts":', b'"ts":NaN,"x":', 1), "bad_json"),
    "garbage": (lambda rng, e: b"\x00" + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(64))), "bad_json"),
    "tombstone": (lambda rng, e: None, "bad_json"),
    "invalid_utf8": (lambda rng, e: orjson.dumps({**e, "user_id": "CAFE_"}).replace(b"CAFE_", b"caf\xe9"),
                     "bad_encoding"),  # fmt: skip
    "not_an_object": (lambda rng, e: orjson.dumps(rng.choice([[e], "event", 42, None, True])), "not_an_object"),
    "schema_version": (lambda rng, e: orjson.dumps({**e, "schema_version": rng.choice([0, 2, 99, "1", -1])}),
                       "unknown_schema_version"),  # fmt: skip
    "unknown_type": (lambda rng, e: orjson.dumps({**e, "type": rng.choice(["superlike", "WATCH", "", 5, None])}),
                     "unknown_type"),  # fmt: skip
    "missing_field": (_drop, "missing_field"),
    "wrong_type": (lambda rng, e: orjson.dumps({**e, **rng.choice(
        [{"user_id": 123}, {"user_id": ["u"]}, {"video_id": None}, {"event_id": ""}, {"ts": "yesterday"},
         {"type": "watch", "watch_ms": "a while", "duration_ms": 1000}, {"type": "comment", "text": 42},
         {"type": "comment", "text": "hi", "lang": "fr"}])}), "bad_field"),  # fmt: skip
    "absurd_number": (lambda rng, e: orjson.dumps({**e, **rng.choice(
        [{"ts": 1e300}, {"ts": -5}, {"ts": 4_102_444_801}, {"type": "watch", "watch_ms": -1, "duration_ms": 10},
         {"type": "watch", "watch_ms": 2**62, "duration_ms": 10}, {"type": "watch", "watch_ms": 1, "duration_ms": 0},
         {"type": "watch", "watch_ms": 1.5, "duration_ms": 10}])}), "bad_field"),  # fmt: skip
    "long_text": (lambda rng, e: orjson.dumps({**e, "type": "comment", "text": "x" * rng.randrange(5001, 20_000)}),
                  "text_too_long"),  # fmt: skip
    "mb_text": (_comment(900_000), "text_too_long"),  # ~0.9 MB: under the message cap, over the text cap
    "too_large": (_comment(1_000_100), "too_large"),  # over 1 MB
}


def make(kind: str, rng: random.Random, n: int, prefix: str) -> tuple[bytes | None, str | None, dict]:
    """(value, expected DLQ reason, the valid event it was made from)."""
    maker, reason = KINDS[kind]
    e = valid_event(rng, n, prefix)
    return maker(rng, e), reason, e


def settings_(**env: object):
    from streams.settings import Settings

    return Settings(**env)


# --- the parser and the pipeline, driven by Hypothesis ---------------------------------------------------
@st.composite
def messages(draw: st.DrawFn, kinds: list[str] = [k for k in KINDS if k not in ("mb_text", "too_large")]):
    kind = draw(st.sampled_from(kinds))
    rng = draw(st.randoms(use_true_random=False))
    return kind, *make(kind, rng, draw(st.integers(0, 10**6)), "p")


@given(messages(kinds=list(KINDS)))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_the_parser_gives_each_hostile_message_its_reason(m):
    kind, value, reason, _ = m
    s = settings_()
    try:
        parse_event(value, max_bytes=s.max_message_bytes, max_text_chars=s.max_text_chars)
    except InvalidMessage as err:
        assert err.reason == reason, (kind, err)
    else:
        assert reason is None, kind


@given(st.lists(messages(), min_size=1, max_size=60), st.data())
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_hostile_batch_never_raises_and_every_message_is_accounted_for(batch, data):
    from models.recs.serving import load_recommender

    s = settings_()
    sink, users = Sink(), {}
    pipe = Pipeline(s, users, {}, load_recommender(s.recs, s.index), sink.emit, clock=lambda: START_TS + 1e7)
    # Redeliveries of earlier messages, anywhere in the batch.
    batch = batch + [data.draw(st.sampled_from(batch)) for _ in range(data.draw(st.integers(0, 5)))]
    msgs = [Message("events", 0, i, START_TS, e["user_id"].encode(), v) for i, (_, v, _, e) in enumerate(batch)]
    pipe.process_events(msgs)
    dead = {d["offset"]: d["reason"] for d in sink.values("events.dlq")}
    assert dead == {i: reason for i, (_, _, reason, _) in enumerate(batch) if reason is not None}
    for _, _, reason, e in batch:
        if reason is None:
            assert [r[0] for r in users[e["user_id"]]["events"]].count(e["event_id"]) == 1


def test_a_dead_letter_for_a_message_near_the_size_cap_fits_the_producer():
    """A ~0.9 MB comment is dead-lettered (text_too_long); base64 of all of it would be ~1.2 MB, which
    librdkafka refuses at produce time: before the fix that exception took the whole batch, and the valid
    event after it, down with it (run_batch's own fallback dead-letters through the same emit)."""
    import asyncio

    from models.recs.serving import load_recommender
    from streams.output import OutputProducer

    s = settings_()
    # Nothing listens there: produce() still checks sizes synchronously. log_level 0: no reconnect noise.
    out = OutputProducer("127.0.0.1:9", extra={"log_level": 0})
    users: dict = {}
    pipe = Pipeline(s, users, {}, load_recommender(s.recs, s.index), out.emit)
    rng = random.Random(1)
    big, reason, e = make("mb_text", rng, 1, "t")
    ok = valid_event(rng, 2, "t")
    msgs = [Message("events", 0, 0, START_TS, b"k", big), Message("events", 0, 1, START_TS, b"k", orjson.dumps(ok))]
    asyncio.run(pipe.run_batch(pipe.process_events, msgs))
    assert [r[0] for r in users[ok["user_id"]]["events"]] == [ok["event_id"]]
    assert len(big) > DLQ_RAW_MAX_BYTES and reason == "text_too_long"


# --- a real worker under more than 10,000 hostile messages -----------------------------------------------
WEIGHTS = {"valid": 0.30, "bad_json": 0.06, "nan": 0.03, "garbage": 0.04, "tombstone": 0.03, "invalid_utf8": 0.06,
           "not_an_object": 0.06, "schema_version": 0.06, "unknown_type": 0.06, "missing_field": 0.08,
           "wrong_type": 0.08, "absurd_number": 0.08, "long_text": 0.05, "duplicate": 0.01}  # fmt: skip
def hostile_stream(seed: int, n: int, prefix: str) -> list[tuple[bytes | None, bytes | None, str | None, str]]:
    """n seeded messages: (key, value, expected reason, kind). Duplicates repeat an earlier valid message."""
    rng = random.Random(seed)
    out, sent_valid = [], []
    for i, kind in enumerate(rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=n)):
        if kind == "duplicate" and sent_valid:
            out.append((*rng.choice(sent_valid), None, kind))
            continue
        value, reason, e = make("valid" if kind == "duplicate" else kind, rng, i, prefix)
        out.append((e["user_id"].encode(), value, reason, kind))
        if reason is None:
            sent_valid.append((e["user_id"].encode(), value))
    return out


def _records(messages: list[tuple[bytes | None, bytes | None, str | None, str]]):
    from lab.recording import Record

    return [Record("events", -1, -1, None, k, v) for k, v, _, _ in messages]


def _feed_and_time(stack, worker, messages, already: float) -> float:
    """Seconds from the first produce until the worker has accounted for every message."""
    from lab.chaos import Feeder
    from lab.local import consumed, wait_for

    started = time.monotonic()
    feeder = Feeder(stack.bootstrap, _records(messages), rate=None)
    feeder.start()
    wait_for(lambda: consumed(worker.metrics()) >= already + len(messages), 180, "hostile feed", [worker.log])
    feeder.join()
    assert not feeder.errors, feeder.errors[:3]
    return time.monotonic() - started


@pytest.mark.integration
def test_a_worker_under_hostile_input_dead_letters_each_message_and_keeps_valid_traffic_flowing():
    from lab.chaos import audit, uncommitted
    from lab.local import LocalStack, wait_for
    from lab.recording import read_topic

    s = settings_()
    rng = random.Random(1)
    clean = [(e["user_id"].encode(), orjson.dumps(e), None, "valid")
             for e in (valid_event(rng, i, "clean") for i in range(3000))]  # fmt: skip
    hostile = hostile_stream(2, 10_000, "junk")
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        t_clean = _feed_and_time(stack, worker, clean, 0)
        t_hostile = _feed_and_time(stack, worker, hostile, len(clean))
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log])
        assert worker.proc.poll() is None, "the worker died"
        dead = {}
        for rec in read_topic(stack.bootstrap, s.topics.dlq):
            d = orjson.loads(rec.value)
            dead[(d["partition"], d["offset"])] = d
        valid = [orjson.loads(v) for _, v, reason, _ in clean + hostile if reason is None]
        result = audit(stack.bootstrap, s, valid)
        log = worker.log.read_text()
    generated = collections.Counter(reason for _, _, reason, _ in hostile if reason is not None)
    assert collections.Counter(d["reason"] for d in dead.values()) == generated
    raws = collections.Counter((d["reason"], base64.b64decode(d["raw"])) for d in dead.values())
    for _, value, reason, kind in hostile:
        if reason is not None:
            assert raws[(reason, value or b"")] >= 1, (kind, (value or b"")[:80])
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems
    assert "Traceback" not in log and "processing_error" not in json.dumps(list(dead.values()))
    n_valid = sum(1 for m in hostile if m[2] is None)
    ratio = (n_valid / t_hostile) / (len(clean) / t_clean)
    print(f"\nvalid events/s: {len(clean) / t_clean:.0f} alone, {n_valid / t_hostile:.0f} among "
          f"{len(hostile) - n_valid} bad messages (ratio {ratio:.2f}); DLQ by reason {dict(generated)}")  # fmt: skip
    assert ratio > 0.05  # junk costs parsing time, but valid traffic keeps flowing


# --- ~1 MB messages through a real worker, and records deleted before the worker read them ---------------
BIG_PRODUCER = {"message.max.bytes": 2_000_000}  # librdkafka's default (1,000,000) refuses `too_large`


def _user_per_partition(prefix: str, partitions: int) -> dict[int, str]:
    from streams.topics import partition_for

    users: dict[int, str] = {}
    i = 0
    while len(users) < partitions:
        users.setdefault(partition_for(f"{prefix}u{i}".encode(), partitions), f"{prefix}u{i}")
        i += 1
    return users


def _feed(stack, messages, extra=None) -> None:
    from lab.chaos import Feeder

    feeder = Feeder(stack.bootstrap, _records(messages), rate=None, extra=extra)
    feeder.start()
    feeder.join()
    assert not feeder.errors, feeder.errors[:3]


def _dead_letters(bootstrap: str, s) -> dict[tuple[str, int, int], dict]:
    from lab.recording import read_topic

    dead = {}
    for rec in read_topic(bootstrap, s.topics.dlq):
        d = orjson.loads(rec.value)
        dead[(d["topic"], d["partition"], d["offset"])] = d
    return dead


def _offsets(bootstrap: str, s, partition: int) -> tuple[int, int]:
    """(the app's committed offset, the broker's log start offset) of events[partition]."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": s.app_id, "enable.auto.commit": False})
    try:
        tp = TopicPartition(s.topics.events, partition)
        committed = consumer.committed([tp], timeout=10)[0].offset
        return committed, consumer.get_watermark_offsets(tp, timeout=10)[0]
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_worker_dead_letters_1_mb_messages_in_a_fast_stream_and_skips_nothing():
    from lab.broker import PARTITION_LOG_MAX_BYTES
    from lab.chaos import audit, uncommitted
    from lab.local import LocalStack, consumed, total, wait_for
    from streams.topics import partition_for

    s = settings_()
    rng = random.Random(5)
    messages = hostile_stream(6, 2000, "mb")
    bigs = []
    for n, (partition, user) in enumerate(sorted(_user_per_partition("big", s.partitions).items())):
        for kind in ("mb_text", "too_large"):  # one of each on every events partition
            value, reason, e = make(kind, rng, n, "big")
            value = value.replace(e["user_id"].encode(), user.encode(), 1)
            bigs.append((user.encode(), value, reason, kind))
    step = len(messages) // (len(bigs) + 1)
    for i, big in enumerate(bigs):  # spread through the stream, fed as fast as the producer goes
        messages.insert((i + 1) * step + i, big)
    # The embedded broker's precondition: no partition ever holds more than its cap, read or not.
    per_partition = collections.Counter()
    for key, value, _, _ in messages:
        per_partition[partition_for(key, s.partitions)] += len(value or b"") + len(key)
    assert max(per_partition.values()) < PARTITION_LOG_MAX_BYTES * 0.8, per_partition
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        _feed(stack, messages, BIG_PRODUCER)
        wait_for(lambda: consumed(worker.metrics()) >= len(messages), 180, "1 MB feed", [worker.log], worker.proc)
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log], worker.proc)
        metrics = worker.metrics()
        dead = _dead_letters(stack.bootstrap, s)
        result = audit(stack.bootstrap, s, [orjson.loads(v) for _, v, reason, _ in messages if reason is None])
        log = worker.log.read_text()
    generated = collections.Counter(reason for _, _, reason, _ in messages if reason is not None)
    assert collections.Counter(d["reason"] for d in dead.values()) == generated  # no offset_gap among them
    assert total(metrics, "reelstream_dlq_messages_total") == sum(generated.values())
    raws = {(d["reason"], base64.b64decode(d["raw"])) for d in dead.values()}
    for _, value, reason, kind in bigs:
        assert (reason, value[:DLQ_RAW_MAX_BYTES]) in raws, kind
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems
    assert "Traceback" not in log


@pytest.mark.integration
@pytest.mark.parametrize("away", ["stopped and restarted", "paused (SIGSTOP) and resumed"])
def test_records_the_broker_deleted_before_the_worker_read_them_are_dead_lettered_not_skipped(away):
    """While the worker is away ~5.4 MB arrive on one partition and the embedded broker deletes the oldest
    (its 5 MiB cap; real Kafka's retention does the same to a consumer that falls behind it). The worker's
    next fetch is out of range: aiokafka resets to the log start without an error and Faust commits past
    the hole (a running worker, the original report: 553 messages skipped) or, restarted, may stall that
    partition. Before the fix nothing recorded the loss; now the DLQ names the range, commits go on."""
    import signal

    from confluent_kafka import Producer

    from lab.chaos import audit, uncommitted
    from lab.local import LocalStack, wait_for

    s = settings_()
    rng = random.Random(9)
    users = _user_per_partition("gap", s.partitions)

    def event(n: int, kind: str = "valid", user: str = users[0]) -> tuple[bytes, bytes | None, str | None, str]:
        value, reason, e = make(kind, rng, n, "gap")
        return user.encode(), value.replace(e["user_id"].encode(), user.encode(), 1), reason, kind

    before = [event(n) for n in range(30)]
    # The big ones' dead letters (keyed like them) go to other DLQ partitions: ~0.7 MB each, possibly
    # repeated (at-least-once), they would push the gap's own record out of DLQ partition 0 (the same cap).
    burst = [event(100 + n) for n in range(20)] + [event(200 + n, "mb_text", users[1 + n % 3]) for n in range(6)]
    after = [event(300 + n) for n in range(10)]
    with LocalStack() as stack:
        stack.start_broker()
        worker = stack.start_worker()
        _feed(stack, before)
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "first input committed", [worker.log])
        if away == "stopped and restarted":
            worker.stop()  # a clean stop: its offsets are committed
        else:
            worker.proc.send_signal(signal.SIGSTOP)  # still in the group, its position where it stopped
        producer = Producer({"bootstrap.servers": stack.bootstrap, **BIG_PRODUCER})
        for key, value, _, _ in burst + after:  # all on events partition 0, in this order
            producer.produce(s.topics.events, value, key, partition=0)
            producer.flush(30)
        committed, log_start = _offsets(stack.bootstrap, s, 0)
        if away == "stopped and restarted":
            worker = stack.start_worker()
        else:
            worker.proc.send_signal(signal.SIGCONT)
        assert committed == len(before) < log_start, (committed, log_start)  # records deleted unread
        wait_for(lambda: uncommitted(stack.bootstrap, s) == 0, 120, "all input committed", [worker.log], worker.proc)
        metrics = worker.metrics()
        dead = _dead_letters(stack.bootstrap, s)
        kept = [m for offset, m in enumerate(before + burst + after) if offset < len(before) or offset >= log_start]
        result = audit(stack.bootstrap, s, [orjson.loads(v) for _, v, reason, _ in kept if reason is None])
    gaps = [d for d in dead.values() if d["reason"] == "offset_gap"]
    assert [(d["topic"], d["partition"], d["offset"]) for d in gaps] == [(s.topics.events, 0, committed)], gaps
    assert f"offsets {committed}..{log_start - 1} ({log_start - committed} messages)" in gaps[0]["detail"]
    assert metrics.get('reelstream_dlq_messages_total{reason="offset_gap"}') == log_start - committed
    # everything the broker still had is processed or dead-lettered with its own reason
    for offset, (_, value, reason, _) in enumerate(before + burst + after):
        if offset >= log_start and reason is not None:
            assert dead[(s.topics.events, 0, offset)]["reason"] == reason
    assert result.lost == result.double_counted == result.unexpected == 0, result.problems


@pytest.mark.integration
def test_the_embedded_broker_deletes_past_5_mib_per_partition_and_clients_skip_silently():
    """The root cause above, minimal: librdkafka's mock keeps 5 MiB per partition (lab/broker.py) and a
    consumer positioned before the new log start is moved past the deleted records without an error."""
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTP
    from confluent_kafka import Consumer, Producer, TopicPartition

    from lab.broker import PARTITION_LOG_MAX_BYTES
    from lab.local import LocalStack

    s = settings_()
    with LocalStack() as stack:
        stack.start_broker()
        producer = Producer({"bootstrap.servers": stack.bootstrap, **BIG_PRODUCER})
        for value in [b"small"] * 20 + [b"x" * 950_000] * 6 + [b"after"] * 5:  # 5.7 MB on one partition
            producer.produce(s.topics.events, value, b"k", partition=0)
            producer.flush(30)
        consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "probe"})
        low, high = consumer.get_watermark_offsets(TopicPartition(s.topics.events, 0), timeout=10)
        consumer.close()

        async def read_from_0() -> list[int]:
            aio = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                                   enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
            await aio.start()
            try:
                tp = AioTP(s.topics.events, 0)
                aio.assign([tp])
                aio.seek(tp, 0)  # e.g. where the group's committed offset was
                offsets: list[int] = []
                while len(offsets) < high - low:
                    batch = await aio.getmany(timeout_ms=10_000)
                    assert batch, "nothing fetched"
                    offsets += [m.offset for records in batch.values() for m in records]
                return offsets
            finally:
                await aio.stop()

        offsets = asyncio.run(read_from_0())
    assert high == 31 and low == 21  # the 20 small records and the first big one are gone
    assert 5 * 950_000 <= PARTITION_LOG_MAX_BYTES < 6 * 950_000
    assert offsets == list(range(low, high))  # asked for 0, got 21..30: no error, no sign of the hole


# --- the other input topics: comments, videos, review-decisions -----------------------------------------
# Each with makers of its own (one change to a valid record each, like KINDS), driven by Hypothesis through
# the pipeline step that reads the topic: every record is accounted for, the bad ones dead-lettered once with
# their reason, and nothing of them applied.
def _one_of(*changes: dict) -> Maker:
    return lambda rng, r: orjson.dumps({**r, **rng.choice(changes)})


def _without(*required: str) -> Maker:
    def maker(rng: random.Random, r: dict) -> bytes:
        name = rng.choice(required)
        return orjson.dumps({k: v for k, v in r.items() if k != name})

    return maker


SHARED: dict[str, tuple[Maker, str]] = {  # what any JSON-object topic can receive, with the parser's reason
    "bad_json": (lambda rng, r: json.dumps(r).encode()[: -rng.randrange(1, 20)], "bad_json"),
    "garbage": (lambda rng, r: b"\x00" + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(64))), "bad_json"),
    "tombstone": (lambda rng, r: None, "bad_json"),
    "invalid_utf8": (lambda rng, r: orjson.dumps(r).replace(b"{", b"{\"x\": \"caf\xe9\",", 1), "bad_encoding"),
    "not_an_object": (lambda rng, r: orjson.dumps(rng.choice([[r], "x", 42, None, True])), "not_an_object"),
    "schema_version": (_one_of({"schema_version": 0}, {"schema_version": 2}, {"schema_version": "1"}),
                       "unknown_schema_version"),
    "too_large": (lambda rng, r: orjson.dumps({**r, "pad": "x" * 1_000_100}), "too_large"),
}
VIDEO_KINDS: dict[str, tuple[Maker, str | None]] = {
    "valid": (lambda rng, r: orjson.dumps(r), None),
    **SHARED,
    "missing_field": (_without("video_id", "type", "ts"), "missing_field"),
    "bad_field": (_one_of({"video_id": 5}, {"video_id": ""}, {"type": "explode"}, {"ts": "now"}, {"ts": -1},
                          {"title": "t" * 501}, {"tags": ["a"] * 51}, {"tags": "a"}), "bad_field"),
}
DECISION_KINDS: dict[str, tuple[Maker, str]] = {  # the valid one names an item nobody queued: stale
    "valid": (lambda rng, r: orjson.dumps(r), "stale_decision"),
    **{kind: (maker, "invalid_decision") for kind, (maker, _) in SHARED.items()},
    "missing_field": (_without("decision_id", "item_id", "user_id", "decision", "reviewer", "decided_at"),
                      "invalid_decision"),
    "bad_field": (_one_of({"decision": "delete-account"}, {"category": "<script>"}, {"user_id": 7}, {"note": "n" * 2001},
                          {"decided_at": "soon"}, {"reviewer": ""}), "invalid_decision"),
}


def _video(rng: random.Random, n: int) -> dict:
    return {"schema_version": 1, "video_id": f"hv{n}", "type": rng.choice(["upload", "remove", "block"]), "ts": START_TS + n}


def _decision(rng: random.Random, n: int) -> dict:
    return {"schema_version": 1, "decision_id": f"d{n}", "item_id": f"never-queued-{n}", "user_id": "hu1",
            "decision": rng.choice(["approve", "remove", "escalate"]), "category": "none", "reviewer": "ana",
            "decided_at": START_TS + n}  # fmt: skip


def _records_of(kinds: dict, base: Callable[[random.Random, int], dict]):
    @st.composite
    def records(draw: st.DrawFn):
        kind = draw(st.sampled_from(list(kinds)))
        rng = draw(st.randoms(use_true_random=False))
        maker, reason = kinds[kind]
        return maker(rng, base(rng, draw(st.integers(0, 10**6)))), reason

    return st.lists(records(), min_size=1, max_size=30)


def _pipeline():
    from models.recs.serving import load_recommender

    s = settings_()
    sink, users, catalog = Sink(), {}, {}
    return Pipeline(s, users, catalog, load_recommender(s.recs, s.index), sink.emit, clock=lambda: START_TS + 1e7), sink


def _dead(sink: Sink) -> dict[int, str]:
    return {d["offset"]: d["reason"] for d in sink.values("events.dlq")}


@given(st.lists(messages(kinds=list(KINDS)), min_size=1, max_size=40))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_hostile_records_on_comments_are_dead_lettered_with_their_reason(batch):
    """`comments` is the worker's own forward of comment events: anything else there (a record no worker
    wrote, or another event type) is dead-lettered; a valid comment nobody took in is not scored."""
    pipe, sink = _pipeline()
    msgs = [Message("comments", 0, i, START_TS, e["user_id"].encode(), v) for i, (_, v, _, e) in enumerate(batch)]
    assert pipe.comments_batch(msgs) == []
    expected = {i: reason or "unknown_type" for i, (_, v, reason, e) in enumerate(batch)
                if reason is not None or orjson.loads(v)["type"] != "comment"}  # fmt: skip
    assert _dead(sink) == expected


@given(_records_of(VIDEO_KINDS, _video))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_hostile_records_on_videos_are_dead_lettered_with_their_reason_and_never_reach_the_catalog(batch):
    pipe, sink = _pipeline()
    pipe.process_videos([Message("videos", 0, i, START_TS, None, v) for i, (v, _) in enumerate(batch)])
    assert _dead(sink) == {i: reason for i, (_, reason) in enumerate(batch) if reason is not None}
    assert set(pipe.catalog) == {orjson.loads(v)["video_id"] for v, reason in batch if reason is None}


@given(_records_of(DECISION_KINDS, _decision), st.booleans())
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_hostile_records_on_review_decisions_are_dead_lettered_and_decide_nothing(batch, wrong_key):
    """A record that is not a decision is `invalid_decision`, one keyed to another user than it names too,
    and a well-formed one for an item nobody queued `stale_decision`; none emits anything else."""
    from streams.pipeline import MappingStore
    from streams.review import ReviewDesk

    pipe, sink = _pipeline()
    desk = ReviewDesk(pipe.s, MappingStore({}), sink.emit, pipe.dead_letter, clock=lambda: START_TS + 1e7)
    key = b"someone-else" if wrong_key else b"hu1"
    desk.process_decisions([Message("review-decisions", 0, i, START_TS, key, v) for i, (v, _) in enumerate(batch)])
    expected = {i: "invalid_decision" if wrong_key and reason == "stale_decision" else reason
                for i, (_, reason) in enumerate(batch)}  # fmt: skip
    assert _dead(sink) == expected
    assert {t for t, _, _ in sink.sent} == {"events.dlq"}
