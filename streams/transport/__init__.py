"""Faust's aiokafka transport with these changes, one patch per module (each module's docstring gives the
reason, with its measurements, and the upstream names it overrides or relies on, at the pinned versions of
pins.py):

- fetch_wait.py: the consumer's fetch long-poll wait from the options, not Faust's hard-coded 1500 ms.
- outage_start.py: producer and consumer start retried while no broker answers, instead of exiting.
- group_join.py: the group leader waits for the subscribed topics' metadata before assigning, and errors
  aiokafka parks for "the user" are consumed, so a first join inside an outage does not stall for good.
- offset_gaps.py: records the broker deleted before they were read dead-lettered and acked as a gap.
- fair_drain.py: each poll takes a share of its records from every buffered partition, so a topic of large
  records (the item side's) is not starved by buffers of small ones.
- handoff.py: each fetched message handed to its stream without four asyncio tasks when it need not wait.
- raw_delivery.py: raw input topics delivered without Faust's decoding.
- commit_flush.py: extra producers (streams/output.py) flushed before every offset commit.
- rocks_store.py: the users table's RocksDB partitions written directly, only with acknowledged changelog
  records and their offset (streams/tables.py OutputTable); deleted keys compacted out of their files.
- recovery_holes.py: a table recovery starting beyond what the table applied (records deleted unread) is
  reported as a changelog gap, not recovered around (the app's `TableManager`).
- recovery_flow.py: flow control held while a completed recovery resumes and seeks the input partitions, so
  the queue clearing that ends it cannot drop messages fetched meanwhile.

Settings are passed in, not module globals: `streams.app.create_app` builds a `TransportOptions` and
`configure(app, options)` attaches it to the app; the patches read it through their `app`. Importing this
module registers the `reelstream://` broker URL scheme (streams/settings.py `broker_url`) in Faust's
transport registry.
"""

from __future__ import annotations

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.transport.commit_flush import CommitFlushProducer
from streams.transport.fair_drain import FairDrainThread
from streams.transport.fetch_wait import FetchWaitThread
from streams.transport.group_join import GroupJoinThread
from streams.transport.handoff import HandoffConsumer
from streams.transport.offset_gaps import OffsetGapsThread
from streams.transport.options import TransportOptions, configure, options_of
from streams.transport.outage_start import OutageStartProducer, OutageStartThread
from streams.transport.pins import PINNED, check_pins
from streams.transport.raw_delivery import RawDeliveryConductor
from streams.transport.recovery_flow import FlowHeldRecovery
from streams.transport.recovery_holes import HoleCheckingRecovery
from streams.transport.recovery_holes import TableManager as HoleCheckingTableManager

__all__ = [
    "PINNED", "SCHEME", "TableManager", "Transport", "TransportOptions", "check_pins", "configure", "options_of"
]

SCHEME = "reelstream"


class ConsumerThread(GroupJoinThread, OutageStartThread, OffsetGapsThread, FetchWaitThread, FairDrainThread):
    """on_start: OutageStartThread's (Faust's, with the start retried) creates the consumer through
    OffsetGapsThread's and FetchWaitThread's `_create_worker_consumer`, then GroupJoinThread guards its
    group join and its assignment waits; on_thread_stop: GroupJoinThread's watch stopped, then Faust's;
    each poll: FairDrainThread's `_fetch_records`."""


class Consumer(HandoffConsumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Producer(CommitFlushProducer, OutageStartProducer):
    pass


class Recovery(HoleCheckingRecovery, FlowHeldRecovery):
    """_build_offsets: HoleCheckingRecovery's (Faust's, with skipped offsets reported); the end of a
    recovery: FlowHeldRecovery's (Faust's, with flow control held until the queues were cleared)."""


class TableManager(HoleCheckingTableManager):
    recovery_class = Recovery


class Conductor(RawDeliveryConductor):
    pass


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer
    Conductor = Conductor


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
