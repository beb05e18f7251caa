"""Each poll takes a share of its records from every buffered partition, so large records are not starved.

aiokafka's `Fetcher.fetched_records` drains its buffered fetch results front to back, up to `max_records`
(`broker_max_poll_records`, 2,000) per poll, and a partition it did not empty keeps the front; a partition is
fetched again only once its buffer is empty. Buffers of small records then hold the front for many polls:
4 MiB of `events` (~124 bytes each) is ~33,000 records, while `interactions-by-video` (one message of a
micro-batch's items per partition, ~100 KB) waits behind every `events` partition for each refill. The
embedded broker makes it worse: it answers a fetch with one record batch per partition (measured,
tests/test_transport.py), one item message. A saturated worker's item side then fell behind its events agent
until the broker deleted its input unread (`bench state --users 20000 --events 100000`: 592 offsets of it
dead-lettered as `offset_gap`; on real Kafka it would be lag). Here a poll with several partitions buffered
takes at most `max_records / n` from each of the n (the rest waits for the next poll), so every partition is
drained, and fetched again, at every poll; each partition's own order is unchanged.

Upstream: aiokafka 0.14.0 aiokafka/consumer/fetcher.py `Fetcher._records` (an OrderedDict of TopicPartition
-> FetchResult, or an error it raises on the next drain, in fetch order) and `Fetcher.fetched_records` (drains
the given partitions up to `max_records`, `timeout` 0: no wait); faust-streaming 0.15.3
faust/transport/drivers/aiokafka.py `AIOKafkaConsumerThread._fetch_records` (extended: called once per
buffered partition with its share).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiokafka.consumer.fetcher import FetchResult
from faust.transport.drivers import aiokafka as faust_aiokafka

RELIES_ON = (
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._fetch_records"),
    ("aiokafka.consumer.fetcher", "Fetcher._records"),
    ("aiokafka.consumer.fetcher", "Fetcher.fetched_records"),
    ("aiokafka.consumer.fetcher", "FetchResult"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._fetcher"),
)

# fetch(partitions, timeout, max_records) -> {partition: records}: aiokafka's drain, as Faust calls it.
Fetch = Callable[[Collection[Any], float | None, int | None], Awaitable[Mapping[Any, list]]]


async def drain_fairly(
    fetch: Fetch, buffered: Mapping[Any, Any], active: Collection[Any] | None, timeout: float | None,
    max_records: int | None,
) -> Mapping[Any, list]:  # fmt: skip
    """One poll: `max_records // n` records at most from each of the n partitions of `active` with records in
    `buffered` (the fetcher's `_records`), without waiting; one plain drain when that is as fair (no limit,
    fewer than two such partitions) or would change how errors surface (an error result buffered: aiokafka
    returns what it drained before raising it on the next poll), or when the shares found nothing."""
    ready = [tp for tp in buffered if not active or tp in active]
    if max_records is None or len(ready) < 2 or any(type(buffered[tp]) is not FetchResult for tp in ready):
        return await fetch(active, timeout, max_records)
    share = max(1, max_records // len(ready))
    records: dict[Any, list] = {}
    for tp in ready:
        records.update(await fetch({tp}, 0, share))
    return records or await fetch(active, timeout, max_records)


class FairDrainThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(
        self, consumer: Any, active_partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Any:
        parent = super()._fetch_records

        def fetch(partitions: Any, wait: float | None, limit: int | None) -> Awaitable[Mapping[Any, list]]:
            return parent(consumer, partitions, timeout=wait, max_records=limit)

        return await drain_fairly(fetch, consumer._fetcher._records, active_partitions, timeout, max_records)
