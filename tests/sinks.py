"""An output sink for unit tests: what the pipeline emits, kept in a list (no broker involved)."""

from __future__ import annotations

import orjson


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def emit(self, topic, key, value, timestamp=None, partition=None) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        pass

    def values(self, topic: str) -> list[dict | None]:
        return [None if v is None else orjson.loads(v) for t, _, v in self.sent if t == topic]
