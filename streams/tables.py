"""The worker's own tables.

The users table is a Faust Table whose changelog writes go through the OutputProducer (librdkafka) instead
of Faust's producer: the same bytes (JSON key and value, None as a tombstone) to the same partition, flushed
before offsets are committed like every other output. Recovery is Faust's own, from the changelog topic.

The catalog is a GlobalTable (every worker reads all of it) that also keeps the set of videos that are not
active, so a micro-batch's exclusions are that set, not a scan of the whole catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import faust
import orjson

from streams.catalog import inactive_videos, is_available
from streams.output import OutputProducer


def latest_values(batch: Iterable[Any]) -> dict[Any, Any]:
    """A changelog batch (raw JSON key/value events, in offset order) as {key: its latest value, None for a
    tombstone}: what a table that keeps derived state beside its data needs from each applied batch."""
    return {
        orjson.loads(e.message.key): None if e.message.value is None else orjson.loads(e.message.value)
        for e in batch
    }


class HistoryEncoder:
    """The changelog bytes of `{"events": rows}` records, re-encoding only the rows appended since the last
    record of the same key: a user's whole history was serialized on every write, ~6% of a worker's main
    thread (py-spy, `bench pipeline`). The bytes are exactly `orjson.dumps(record)` (tests/test_pipeline.py).

    The previous rows are compared with the new ones by value (identity first, so a C-level pass over
    pointers when the rows are the same objects, as the worker's are); any other change (a replaced row, a
    truncated history, another shape of record) is encoded in full. At most `max_keys` keys are kept,
    the least recently written ones dropped first.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._last: dict[Any, tuple[list[Any], bytes]] = {}
        self.spliced = 0  # encodings that re-used the previous bytes (tests, profiling)

    def encode(self, key: Any, value: Any) -> bytes:
        rows = value.get("events") if type(value) is dict and len(value) == 1 else None
        if type(rows) is not list:
            return orjson.dumps(value)
        last = self._last.pop(key, None)
        n = len(last[0]) if last is not None else -1
        if last is not None and len(rows) >= n and rows[:n] == last[0]:
            encoded = last[1]
            self.spliced += 1
            if len(rows) > n:
                tail = orjson.dumps(rows[n:])[1:-1]
                encoded = encoded[:-2] + (b"," + tail if n else tail) + b"]}"
        else:
            encoded = orjson.dumps(value)
        if len(self._last) >= self.max_keys:
            del self._last[next(iter(self._last))]
        self._last[key] = (list(rows), encoded)  # a copy: the caller may change its list later
        return encoded

    def forget(self, key: Any) -> None:
        self._last.pop(key, None)


class OutputTable(faust.Table):
    """A `streams.pipeline.UserStore`."""

    output: OutputProducer | None = None
    encoder: HistoryEncoder | None = None

    def put(self, key: str, value: Any, partition: int) -> None:
        """`table[key] = value` with the changelog partition given: Faust's path reads it from the current
        event (a contextvar the agent must bind per user) and calls sensors per write, ~4% of a worker's
        main-thread CPU (py-spy, `bench pipeline`); key expiry (windowed tables only) does not apply here."""
        self.data[key] = value
        if self.output is None:
            self.send_changelog(partition, key, value)
            return
        if self.encoder is None:
            self.encoder = HistoryEncoder()
        self._emit(partition, key, self.encoder.encode(key, value))

    def remove(self, key: str, partition: int) -> None:
        """`del table[key]`, the same way: a tombstone on the changelog."""
        self.data.pop(key, None)
        if self.encoder is not None:
            self.encoder.forget(key)
        self.send_changelog(partition, key, None, value_serializer="raw")

    def _emit(self, partition: int | None, key: Any, payload: bytes | None) -> None:
        assert self.output is not None
        self.output.emit(self.changelog_topic.get_topic_name(), orjson.dumps(key), payload, None, partition)

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        if self.output is None:
            return super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self._emit(partition, key, None if value is None else orjson.dumps(value))
        # on_key_set/on_key_del only read the partition of the returned future message.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))


class CatalogTable(faust.GlobalTable):
    """video_id -> status (streams.catalog), with `inactive` kept up to date on every local
    write and every changelog batch applied (other workers' writes, recovery)."""

    _inactive: set[str] | None = None

    @property
    def inactive(self) -> set[str]:
        if self._inactive is None:
            self._inactive = inactive_videos(self.data)
        return self._inactive

    def _track(self, key: str, status: Any) -> None:
        if is_available(status):
            self.inactive.discard(key)
        else:
            self.inactive.add(key)

    def on_key_set(self, key: str, value: Any) -> None:
        super().on_key_set(key, value)
        self._track(key, value)

    def on_key_del(self, key: str) -> None:
        super().on_key_del(key)
        self._track(key, None)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        batch = list(batch)
        super().apply_changelog_batch(batch)
        for key, status in latest_values(batch).items():
            self._track(key, status)
