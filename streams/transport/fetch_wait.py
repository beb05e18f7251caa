"""Consumer fetch long-poll wait taken from the options instead of Faust's hard-coded 1500 ms.

Faust hard-codes `fetch_max_wait_ms=1500`. A broker that holds a fetch until that wait expires when no
data is there (librdkafka's mock cluster does) then adds up to 1.5 s to every event's latency and starves
micro-batches (measured with `reelstream bench pipeline`). Real Kafka answers as soon as data arrives, so
a short wait only costs a few more empty fetches there.

Upstream: faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py
`AIOKafkaConsumerThread._create_worker_consumer` (builds the AIOKafkaConsumer with `fetch_max_wait_ms=1500`);
aiokafka 0.14.0 aiokafka/consumer/consumer.py `AIOKafkaConsumer._fetch_max_wait_ms` (set in `__init__`,
read by `start()` when it builds the Fetcher), overwritten here before the consumer starts.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.transport.options import options_of

RELIES_ON = (
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_worker_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.app"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._fetch_max_wait_ms"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer.start"),
)


class FetchWaitThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = options_of(self.app).fetch_max_wait_ms  # read by aiokafka at start()
        return consumer
