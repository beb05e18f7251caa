"""Extra producers flushed before every offset commit.

The agents write their output with their own librdkafka producer (streams/output.py), not Faust's. Faust
flushes its producer before it commits offsets; this producer's `flush` also flushes the producers named
in `TransportOptions.flush_with_commit`, so no offset is committed before the output of the messages up
to it was acknowledged by the broker.

Upstream: faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py `Producer.flush` (extended), called
by faust/transport/consumer.py `Consumer._commit_offsets` (`await self.app.producer.flush()`) before the
offsets are committed.
"""

from __future__ import annotations

from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.transport.options import options_of

RELIES_ON = (
    ("faust.transport.drivers.aiokafka", "Producer.flush"),
    ("faust.transport.drivers.aiokafka", "Producer.app"),
    ("faust.transport.consumer", "Consumer._commit_offsets"),
)


class CommitFlushProducer(faust_aiokafka.Producer):
    async def flush(self) -> None:
        await super().flush()
        for producer in options_of(self.app).flush_with_commit:
            await producer.flush()
