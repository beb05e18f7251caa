"""Consumer lag of a worker, computed at scrape time from the Faust consumer's current assignment.

Computed rather than stored in gauges: after a rebalance only the partitions this worker holds now are
reported, so a revoked partition's series ends instead of repeating its last value (no stale series).

- `reelstream_consumer_lag_messages{topic,partition}`: high watermark − (last read offset + 1).
- `reelstream_consumer_lag_seconds{topic,partition}`: 0 when caught up, else now − Kafka timestamp of the
  last message the agents consumed there. The next unread message is younger than that one, so this is an
  upper bound on its wait; it grows by a second a second while a partition is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitoring.metrics import REBALANCES, REGISTRY

_LABELS = ["topic", "partition"]


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "reelstream_consumer_lag_messages", "Messages not yet consumed, by assigned topic partition.", labels=_LABELS
        ),
        GaugeMetricFamily(
            "reelstream_consumer_lag_seconds",
            "Upper bound on how long the next unconsumed message has waited (0 when caught up).",
            labels=_LABELS,
        ),
    )


class ConsumerLag(Collector):
    """One per process (the registry is global); `watch` points it at the app being run."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.app: Any = None
        self.last_timestamp: dict[tuple[str, int], float] = {}

    def watch(self, app: Any) -> None:
        """Report `app`'s consumer, count its rebalances and forget revoked partitions' timestamps."""
        self.app = app
        self.last_timestamp.clear()
        app.on_partitions_assigned.connect(self._assigned)
        app.on_partitions_revoked.connect(self._revoked)

    def seen(self, topic: str, partition: int, timestamp: float) -> None:
        """An agent consumed a message with this Kafka timestamp (seconds)."""
        self.last_timestamp[(topic, partition)] = timestamp

    def _assigned(self, app: Any, assigned: Iterable[Any], **_: Any) -> None:
        REBALANCES.inc()

    def _revoked(self, app: Any, revoked: Iterable[Any], **_: Any) -> None:
        for tp in revoked:
            self.last_timestamp.pop((tp.topic, tp.partition), None)

    def positions(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, lag in messages) for every assigned partition whose high watermark is known."""
        consumer = getattr(self.app, "_consumer", None)  # never create one just to be scraped
        if consumer is None:
            return
        try:
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - not started yet, or stopping: nothing to report
            return
        read = consumer._read_offset  # Faust keeps no public accessor; a defaultdict, so .get only
        # A paused changelog is one of this worker's own tables after recovery: written, never read again.
        changelogs = self.app.tables.changelog_topics
        idle = {tp for tp in consumer._paused_partitions if tp.topic in changelogs}
        for tp in sorted(assignment - idle):
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - partition just revoked by the client thread
                continue
            if high is None:
                continue  # no fetch answered yet
            offset = read.get(tp)
            yield tp.topic, tp.partition, max(0, high - (offset + 1 if offset is not None else 0))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages, seconds = _families()
        now = self.clock()
        for topic, partition, lag in self.positions():
            labels = [topic, str(partition)]
            messages.add_metric(labels, lag)
            ts = self.last_timestamp.get((topic, partition))
            if lag == 0:
                seconds.add_metric(labels, 0.0)
            elif ts is not None:
                seconds.add_metric(labels, max(0.0, now - ts))
        yield messages
        yield seconds

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families()


LAG = ConsumerLag()
REGISTRY.register(LAG)
