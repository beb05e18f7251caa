"""Each poll starts with the buffered partition polled least recently, so large records are not starved.

aiokafka's `Fetcher.fetched_records` drains its buffered fetch results (one fetch of up to
`consumer_max_fetch_size`, 4 MiB, per partition) front to back, up to `max_records` (`broker_max_poll_records`,
2,000) per poll, and a partition it did not empty keeps the front. A buffer of small records stays first for
many polls: 4 MiB of `events` (~124 bytes each) is ~33,000 records, 17 polls, then the next `events`
partition's, while `interactions-by-video` (one message of a micro-batch's items per partition, ~100 KB)
waits behind all of them and gets one 4 MiB fetch, a few dozen messages, per round. A saturated worker's item
side then fell behind its events agent until the embedded broker deleted its input unread (measured:
`bench state --users 20000 --events 100000` dead-lettered 592 offsets of it as `offset_gap`; on real Kafka it
would be lag). Moving every partition a poll took records from to the back of the order makes polls go
round-robin over the buffered partitions, by records instead of by bytes; each partition's own order is
unchanged.

Upstream: aiokafka 0.14.0 aiokafka/consumer/fetcher.py `Fetcher._records` (an OrderedDict of TopicPartition ->
FetchResult in fetch order, drained from the front by `Fetcher.fetched_records`, which deletes a drained
entry and keeps a partial one); faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py
`AIOKafkaConsumerThread._fetch_records` (extended: the records it returns, then the order rotated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

RELIES_ON = (
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._fetch_records"),
    ("aiokafka.consumer.fetcher", "Fetcher._records"),
    ("aiokafka.consumer.fetcher", "Fetcher.fetched_records"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._fetcher"),
)


def rotate(fetcher: Any, drained: Mapping[Any, Any]) -> None:
    """The partitions a poll took records from, still buffered, to the back of `fetcher`'s drain order."""
    buffered = fetcher._records
    for tp in drained:
        if tp in buffered:
            buffered.move_to_end(tp)


class FairDrainThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(
        self, consumer: Any, active_partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        rotate(consumer._fetcher, records)
        return records
