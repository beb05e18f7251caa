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

from streams.output import OutputProducer
from streams.pipeline import inactive_videos


def latest_values(batch: Iterable[Any]) -> dict[Any, Any]:
    """A changelog batch (raw JSON key/value events, in offset order) as {key: its latest value, None for a
    tombstone}: what a table that keeps derived state beside its data needs from each applied batch."""
    return {
        orjson.loads(e.message.key): None if e.message.value is None else orjson.loads(e.message.value)
        for e in batch
    }


class OutputTable(faust.Table):
    """A `streams.pipeline.UserStore`."""

    output: OutputProducer | None = None

    def put(self, key: str, value: Any, partition: int) -> None:
        """`table[key] = value` with the changelog partition given: Faust's path reads it from the current
        event (a contextvar the agent must bind per user) and calls sensors per write, ~4% of a worker's
        main-thread CPU (py-spy, `bench pipeline`); key expiry (windowed tables only) does not apply here."""
        self.data[key] = value
        self.send_changelog(partition, key, value)

    def remove(self, key: str, partition: int) -> None:
        """`del table[key]`, the same way: a tombstone on the changelog."""
        self.data.pop(key, None)
        self.send_changelog(partition, key, None, value_serializer="raw")

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        if self.output is None:
            return super().send_changelog(partition, key, value, key_serializer, value_serializer)
        payload = None if value is None else orjson.dumps(value)
        self.output.emit(self.changelog_topic.get_topic_name(), orjson.dumps(key), payload, None, partition)
        # on_key_set/on_key_del only read the partition of the returned future message.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))


class CatalogTable(faust.GlobalTable):
    """video_id -> status ("active", "removed", "blocked"), with `inactive` kept up to date on every local
    write and every changelog batch applied (other workers' writes, recovery)."""

    _inactive: set[str] | None = None

    @property
    def inactive(self) -> set[str]:
        if self._inactive is None:
            self._inactive = inactive_videos(self.data)
        return self._inactive

    def _track(self, key: str, status: Any) -> None:
        if status is None or status == "active":
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
