"""An output sink for unit tests: what the pipeline emits, kept in a list (no broker involved)."""

from __future__ import annotations

import orjson


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self._next_offset: dict[tuple[str, int | None], int] = {}

    def emit(self, topic, key, value, timestamp=None, partition=None, on_delivery=None) -> None:
        """Recorded, and acknowledged at once (as the broker would at the next flush) with the next offset of
        its topic and partition, so the users table's RocksDB write-behind sees its writes delivered."""
        self.sent.append((topic, key, value))
        if on_delivery is not None:
            self.acknowledge(topic, partition, on_delivery)

    def acknowledge(self, topic, partition, on_delivery) -> None:
        """A delivery report with the next offset of `topic`[`partition`]."""
        offset = self._next_offset.get((topic, partition), 0)
        self._next_offset[topic, partition] = offset + 1
        on_delivery(None, Delivered(topic, partition, offset))

    async def flush(self) -> None:
        pass

    def values(self, topic: str) -> list[dict | None]:
        return [None if v is None else orjson.loads(v) for t, _, v in self.sent if t == topic]


class Delivered:
    """The part of a confluent_kafka.Message a delivery callback reads."""

    def __init__(self, topic: str, partition: int | None, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int:
        return self._offset
