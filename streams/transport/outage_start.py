"""Producer and consumer start retried while no broker answers, instead of the worker exiting.

aiokafka's `start()` raises `KafkaConnectionError` when no bootstrap server answers, and the worker exits
(aiokafka 0.14, faust-streaming 0.15; nothing here is mock-specific). Producer and consumer now retry
until the broker is reachable. aiokafka's start() bootstraps first, so a failed attempt has started
nothing and can be repeated.

Upstream: aiokafka 0.14.0 aiokafka/consumer/consumer.py `AIOKafkaConsumer.start` and
aiokafka/producer/producer.py `AIOKafkaProducer.start` (both bootstrap first and raise
`aiokafka.errors.KafkaConnectionError`); faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py
`AIOKafkaConsumerThread.on_start` (`_create_consumer`, `time_started`, `_consumer.start()`) and
`Producer.on_start` (faust/transport/producer.py `Producer.on_start`, `_new_producer`, `beacon.add`,
`_producer.start()`), both replaced here by the same steps with the start retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaConnectionError
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.transport.options import RETRY_MAX_S

log = logging.getLogger(__name__)

RELIES_ON = (
    ("aiokafka.errors", "KafkaConnectionError"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer.start"),
    ("aiokafka.producer.producer", "AIOKafkaProducer.start"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.on_start"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.time_started"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.thread_loop"),
    ("faust.transport.drivers.aiokafka", "Producer.on_start"),
    ("faust.transport.drivers.aiokafka", "Producer._new_producer"),
    ("faust.transport.drivers.aiokafka", "Producer._producer"),
    ("faust.transport.producer", "Producer.on_start"),
)


async def _until_reachable(start: Callable[[], Awaitable[None]], what: str) -> None:
    """await start() until it stops failing with KafkaConnectionError (no bootstrap server answers).
    aiokafka's start() bootstraps first, so a failed attempt has started nothing and can be repeated."""
    delay = 0.2
    while True:
        try:
            await start()
            return
        except KafkaConnectionError as exc:
            log.warning("%s: broker unreachable (%s); retrying in %.1f s", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)


class OutageStartThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def on_start(self) -> None:
        """As Faust's, with the start retried while the broker is unreachable."""
        self._consumer = self._create_consumer(loop=self.thread_loop)
        self.time_started = time.monotonic()
        await _until_reachable(self._consumer.start, "consumer")


class OutageStartProducer(faust_aiokafka.Producer):
    async def on_start(self) -> None:
        """As Faust's, with the start retried while the broker is unreachable."""
        await faust_producer.Producer.on_start(self)
        producer = self._producer = self._new_producer()
        self.beacon.add(producer)
        await _until_reachable(producer.start, "producer")
