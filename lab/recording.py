"""Record and replay Kafka messages through a faithful JSONL file.

One object per line: {"topic", "partition", "offset", "timestamp_ms", "key"|"key_b64", "value"|"value_b64",
"headers": [[name, value_b64], ...]}. Keys and values that decode as UTF-8 are stored as text so files stay
readable and diffable; anything else is base64, so every byte survives. A `.gz` suffix means gzip (written
with a zero mtime, so the same records give the same bytes). Generated records, never read from a broker,
carry partition and offset -1.
"""

from __future__ import annotations

import base64
import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from streams.producer import make_producer, produce
from streams.security import client_config


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _encode_bytes(obj: dict, name: str, data: bytes | None) -> None:
    if data is None:
        obj[name] = None
        return
    try:
        obj[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        obj[f"{name}_b64"] = base64.b64encode(data).decode("ascii")


def _decode_bytes(obj: dict, name: str) -> bytes | None:
    if f"{name}_b64" in obj:
        return base64.b64decode(obj[f"{name}_b64"], validate=True)
    text = obj.get(name)
    return None if text is None else text.encode("utf-8")


def record_to_json(rec: Record) -> bytes:
    """One line of the record format, newline included."""
    obj: dict = {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp_ms": rec.timestamp_ms,
    }
    _encode_bytes(obj, "key", rec.key)
    _encode_bytes(obj, "value", rec.value)
    obj["headers"] = [
        [name, None if value is None else base64.b64encode(value).decode("ascii")]
        for name, value in rec.headers
    ]
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def record_from_json(line: bytes | str) -> Record:
    obj = orjson.loads(line)
    return Record(
        topic=obj["topic"],
        partition=int(obj["partition"]),
        offset=int(obj["offset"]),
        timestamp_ms=obj.get("timestamp_ms"),
        key=_decode_bytes(obj, "key"),
        value=_decode_bytes(obj, "value"),
        headers=[
            (name, None if value is None else base64.b64decode(value, validate=True))
            for name, value in obj.get("headers") or []
        ],
    )


@contextmanager
def _open(path: str | Path, mode: str) -> Iterator[IO[bytes]]:
    path = Path(path)
    if path.suffix != ".gz":
        with open(path, mode + "b") as f:
            yield f
        return
    with open(path, mode + "b") as raw, gzip.GzipFile(filename="", mode=mode + "b", fileobj=raw, mtime=0) as f:
        yield f


def read_records(path: str | Path) -> Iterator[Record]:
    """Records of a file, in file order; a malformed line raises ValueError naming the line."""
    with _open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield record_from_json(line)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a record: {exc}") from exc


def write_records(path: str | Path, records: Iterable[Record]) -> int:
    """Write records (streaming); returns how many were written."""
    n = 0
    with _open(path, "w") as f:
        for rec in records:
            f.write(record_to_json(rec))
            n += 1
    return n


@dataclass(frozen=True)
class RecordStats:
    count: int
    seconds: float
    stopped_by: str  # "count" | "end" (every partition at its high watermark) | "idle"
    partitions: int


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Per partition, the offset the next record of `topic` will get."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(client_config(bootstrap, **{"group.id": "reelstream-watermarks"}))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Messages of `topic` past what consumer group `group` has committed (all of a partition it never did)."""
    from confluent_kafka import Consumer, TopicPartition

    high = high_watermarks(bootstrap, topic, partitions)
    c = Consumer(client_config(bootstrap, **{"group.id": group}))
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return sum(high[tp.partition] - max(tp.offset, 0) for tp in committed)


def read_topic(
    bootstrap: str, topic: str, count: int | None = None, timeout_s: float = 5.0, stats: dict | None = None
) -> Iterator[Record]:
    """Every message of a topic from the beginning of each partition, without joining a group.

    Stops by itself: after `count` messages; else when every partition reached the high watermark it had
    when reading started; and in any case after `timeout_s` without a new message (a live topic with
    `count` larger than what arrives, or a broker that went away). `stats` receives how it stopped.
    """
    from confluent_kafka import (
        OFFSET_BEGINNING,
        TIMESTAMP_NOT_AVAILABLE,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    consumer = Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": "reelstream-record",  # required by the client; never joined nor committed (assign only)
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "socket.timeout.ms": max(1000, int(timeout_s * 1000)),
            },
        )
    )
    stats = {} if stats is None else stats
    try:
        meta = consumer.list_topics(topic, timeout=max(timeout_s, 1.0))
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            reason = tmeta.error if tmeta is not None else "absent"
            raise KafkaException(f"topic {topic!r} not readable at {bootstrap}: {reason}")
        parts = sorted(tmeta.partitions)
        stats["partitions"] = len(parts)
        remaining: dict[int, int] = {}  # partition -> high watermark still to reach
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=max(timeout_s, 1.0))
            if high > low:
                remaining[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        n = 0
        last_msg = time.monotonic()
        while True:
            if count is not None and n >= count:
                stats["stopped_by"] = "count"
                return
            if count is None and not remaining:
                stats["stopped_by"] = "end"
                return
            if time.monotonic() - last_msg > timeout_s:
                stats["stopped_by"] = "idle"
                return
            for msg in consumer.consume(num_messages=min(1000, count - n) if count else 1000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.pop(msg.partition(), None)
                        continue
                    raise KafkaException(err)
                last_msg = time.monotonic()
                ts_type, ts = msg.timestamp()
                yield Record(
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
                    key=msg.key(),
                    value=msg.value(),
                    headers=list(msg.headers() or []),
                )
                n += 1
                if remaining.get(msg.partition(), -1) <= msg.offset() + 1:
                    remaining.pop(msg.partition(), None)
    finally:
        consumer.close()


def record(
    bootstrap: str, topic: str, path: str | Path, count: int | None = None, timeout_s: float = 5.0
) -> RecordStats:
    """Copy a topic from the beginning of every partition into a record file (see `read_topic`)."""
    started = time.monotonic()
    stats: dict = {}
    n = write_records(path, read_topic(bootstrap, topic, count, timeout_s, stats))
    return RecordStats(n, time.monotonic() - started, stats.get("stopped_by", "idle"), stats.get("partitions", 0))


@dataclass(frozen=True)
class ReplayStats:
    sent: int
    failed: int
    by_topic: dict[str, int]
    seconds: float
    first_error: str | None = None


def produce_records(
    producer: Any,
    records: Iterable[Record],
    *,
    rate: float | None = None,
    topic: str | None = None,
    fresh_timestamps: bool = False,
    on_delivery: Callable[[Any, Any], None] | None = None,
    on_sent: Callable[[int, Record, float], None] | None = None,
) -> None:
    """Produce records in order through a confluent-kafka producer, at most `rate` per second, waiting out a
    full local queue. Keeps key, value, headers and the recorded timestamp (or stamps the send time when
    `fresh_timestamps`); `topic` overrides each record's own; `on_sent(index, record, sent_at)` after each."""
    started = time.monotonic()
    for i, rec in enumerate(records):
        if rate:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                producer.poll(ahead)
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        sent_at = time.time()
        kwargs: dict[str, Any] = {"key": rec.key, "value": rec.value}
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        timestamp = int(sent_at * 1000) if fresh_timestamps else rec.timestamp_ms
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        if rec.headers:
            kwargs["headers"] = rec.headers
        produce(producer, topic or rec.topic, **kwargs)
        if on_sent is not None:
            on_sent(i, rec, sent_at)


def replay(
    bootstrap: str, path: str | Path, topic: str | None = None, rate: float | None = None
) -> ReplayStats:
    """Produce every record of a file again, keeping key, value, timestamp and headers.

    `topic` sends everything to one topic instead of each record's own (a file may mix events and videos).
    `rate` caps messages per second. Partitions are chosen from the key with murmur2, as Java clients and
    aiokafka (Faust) do, so replays co-partition with everything else; recorded partitions are not reused.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    by_topic: Counter[str] = Counter()
    failed = 0
    first_error: str | None = None

    def on_error(err) -> None:
        nonlocal first_error
        first_error = first_error or str(err)

    def on_delivery(err, msg) -> None:
        nonlocal failed, first_error
        if err is not None:
            failed += 1
            first_error = first_error or str(err)
        else:
            by_topic[msg.topic()] += 1

    producer = make_producer(
        bootstrap,
        **{
            "message.timeout.ms": 30_000,  # an unreachable broker fails the replay instead of hanging it
            "log_level": 2,  # connection errors are reported once, through error_cb, not per retry
            "error_cb": on_error,
        },
    )
    started = time.monotonic()
    produce_records(producer, read_records(path), rate=rate, topic=topic, on_delivery=on_delivery)
    remaining = producer.flush(40)
    failed += remaining
    if remaining and first_error is None:
        first_error = f"{remaining} messages still undelivered after 40 s"
    return ReplayStats(sum(by_topic.values()), failed, dict(by_topic), time.monotonic() - started, first_error)
