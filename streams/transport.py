"""Faust's aiokafka transport with two changes: a configurable fetch long-poll wait, and extra
producers flushed before every offset commit.

Faust hard-codes `fetch_max_wait_ms=1500`. A broker that holds a fetch until that wait expires when no
data is there (librdkafka's mock cluster does) then adds up to 1.5 s to every event's latency and starves
micro-batches (measured with `reelstream bench pipeline`). Real Kafka answers as soon as data arrives, so
a short wait only costs a few more empty fetches there.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "reelstream"
FETCH_MAX_WAIT_MS = {"value": 20}  # set from Settings by streams.app before the worker starts
# Producers flushed together with Faust's before every offset commit (streams/output.py).
FLUSH_WITH_COMMIT: list[Any] = []


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS["value"]  # read by aiokafka at start()
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Producer(faust_aiokafka.Producer):
    async def flush(self) -> None:
        await super().flush()
        for producer in FLUSH_WITH_COMMIT:
            await producer.flush()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
