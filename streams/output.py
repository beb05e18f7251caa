"""Outputs through confluent-kafka's producer (librdkafka, in C), flushed before offsets are committed.

Faust's own producer path costs tens of microseconds of Python per message; a worker emits more than one
output per event (recommendations, changelogs, flags), so that path dominated its CPU (py-spy, measured by
`reelstream bench pipeline`). librdkafka batches in its own thread. At-least-once holds because Faust
flushes its producer before it commits offsets, and our transport's producer (streams/transport/commit_flush.py) flushes
this one there too, raising if any message could not be delivered: then nothing is committed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streams.producer import make_producer, produce

if TYPE_CHECKING:
    from streams.security import KafkaSecurity


class DeliveryFailed(RuntimeError):
    pass


class OutputProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        linger_ms: int = 5,
        extra: dict[str, Any] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        """`extra`: more librdkafka settings (they win over the defaults here); `security`: TLS/SASL (default:
        the environment's)."""
        overrides = {"linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000, **(extra or {})}
        self._producer = make_producer(bootstrap_servers, security, **overrides)
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err}")

    def emit(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        timestamp: float | None = None,
        partition: int | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """`on_delivery(err, msg)`: also called with the delivery report (in the thread that flushes)."""
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if on_delivery is not None:
            kwargs["on_delivery"] = lambda err, msg: (self._on_delivery(err, msg), on_delivery(err, msg))
        if timestamp:
            kwargs["timestamp"] = int(timestamp * 1000)
        if partition is not None:
            kwargs["partition"] = partition
        produce(self._producer, topic, value, key, **kwargs)

    def flush_blocking(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeliveryFailed(f"{remaining} messages undelivered, {len(errors)} failed: {errors[:3]}")

    async def flush(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.flush_blocking)
