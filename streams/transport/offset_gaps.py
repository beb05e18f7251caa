"""Records the broker deleted before they were read: dead-lettered and acked as a gap instead of skipped.

When the broker has deleted records a consumer has not read yet (retention, or the embedded broker's
5 MiB per-partition log cap, see lab/broker.py), the fetch fails with OFFSET_OUT_OF_RANGE and aiokafka
resets the position to the earliest offset still there, without an error. Faust then either acks the
skipped range as a "gap" and commits past it (a running worker) or, when it has not yet noted a read
offset for the partition (a restarted worker), may never commit that partition again.
`_TrackedPartitionState` sees the reset itself (position before, position after): on the topics named by
`TransportOptions.gap_topics` the hole is logged as an error, counted in the DLQ metric (reason
`offset_gap`, one per missing offset), written to the DLQ as one record naming the range, and handed to
Faust as a gap so commits go past it. Tables' changelogs (`TransportOptions.changelog_topics`) are watched
too, while a standby or a recovery reads them: a reset there is reported as `changelog_gap` (the start of a
recovery beyond what a table applied is checked where recovery starts instead, recovery_holes.py: Faust
starts recovery at the earliest offset itself, so no reset happens). Only a move forward to the earliest
offset counts (not a seek, nor `seek_to_end`).

Only a consumer that opted in is changed: when its app's options name gap topics, the consumer thread
gives its new AIOKafkaConsumer a `_GapWatchingSubscriptions` (before the consumer starts, so the fetcher
and coordinator are built with it). That subscription state, on each assignment, replaces the fresh
partition states of the watched topics by `_TrackedPartitionState`s holding the thread's `_on_hole`.
aiokafka's module-level `TopicPartitionState` is not replaced: every other consumer, and every other
partition, keeps aiokafka's own state.

Upstream: aiokafka 0.14.0 aiokafka/consumer/subscription_state.py `SubscriptionState.assign_from_subscribed`
(extended), `SubscriptionState._subscription`, `Subscription.assignment`, `Assignment._tp_state` (states
replaced right after `Assignment.__init__` built them), `TopicPartitionState.__init__(assignment)`,
`await_reset`, `reset_to`, `seek`, `_position` (overridden / read); aiokafka/consumer/fetcher.py
`Fetcher._proc_fetch_request` and `_update_fetch_positions` (call `tp_state.await_reset(strategy)` on
OFFSET_OUT_OF_RANGE or no committed offset, then `reset_to(offset)`), `OffsetResetStrategy.EARLIEST`;
aiokafka/consumer/consumer.py `AIOKafkaConsumer._subscription` (replaced before `start()`), `_loop`.
faust-streaming 0.15.3 faust/transport/drivers/aiokafka.py `AIOKafkaConsumerThread._create_worker_consumer`
(extended) and faust/transport/consumer.py `Consumer._add_gap`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka.consumer import subscription_state as aiokafka_subscriptions
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.transport.options import TransportOptions, options_of

log = logging.getLogger(__name__)

GAP_REASON = "offset_gap"
CHANGELOG_GAP_REASON = "changelog_gap"

RELIES_ON = (
    ("aiokafka.consumer.subscription_state", "SubscriptionState.__init__"),
    ("aiokafka.consumer.subscription_state", "SubscriptionState.assign_from_subscribed"),
    ("aiokafka.consumer.subscription_state", "SubscriptionState._subscription"),
    ("aiokafka.consumer.subscription_state", "Subscription.assignment"),
    ("aiokafka.consumer.subscription_state", "Assignment._tp_state"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.__init__"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.await_reset"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.reset_to"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.seek"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState._position"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.position"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState.has_valid_position"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.verify_event_path"),
    ("aiokafka.consumer.subscription_state", "TopicPartitionState._assignment"),
    ("aiokafka.consumer.fetcher", "OffsetResetStrategy.EARLIEST"),
    ("aiokafka.consumer.fetcher", "Fetcher._proc_fetch_request"),
    ("aiokafka.consumer.fetcher", "Fetcher._update_fetch_positions"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._subscription"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer._loop"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread._create_worker_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread.consumer"),
    ("faust.transport.consumer", "Consumer._add_gap"),
    ("faust.transport.consumer", "Consumer.loop"),
)

OnHole = Callable[[str, int, int, int], None]


class _TrackedPartitionState(aiokafka_subscriptions.TopicPartitionState):
    """aiokafka's per-partition fetch state, noticing a reset that jumps forward: records deleted unread."""

    _lost_from: int | None = None

    def __init__(self, assignment: Any, tp: Any, on_hole: OnHole) -> None:
        super().__init__(assignment)
        self._tp, self._on_hole = tp, on_hole

    def await_reset(self, strategy: int) -> None:
        self._lost_from = None
        if strategy == OffsetResetStrategy.EARLIEST:
            # -1: no position at all (no committed offset): any start past 0 is only worth a warning,
            # since on real Kafka a new group legitimately starts at whatever retention left.
            self._lost_from = -1 if self._position is None else self._position
        super().await_reset(strategy)

    def seek(self, position: int) -> None:
        self._lost_from = None
        super().seek(position)

    @property
    def position(self) -> int | None:  # type: ignore[override]
        """None while a reset is pending, where aiokafka's asserts. Faust's livelock check
        (`AIOKafkaConsumerThread.verify_event_path`) reads it every few seconds without checking
        `has_valid_position` (it handles None), and a restarted worker crashed on it exactly when records of
        its own interactions-by-video had been deleted unread (`bench state`, 40k events after recovery: the
        embedded broker's 5 MiB cap). aiokafka's own callers check `has_valid_position` first."""
        return self._position

    def reset_to(self, position: int) -> None:
        lost_from, self._lost_from = self._lost_from, None
        super().reset_to(position)
        if lost_from is None or position <= max(lost_from, 0):
            return
        tp = self._tp
        if lost_from < 0:
            log.warning("no committed offset for %s[%d]: starting at the earliest offset the broker still has, "
                        "%d (offsets before it were deleted before this group read them)",
                        tp.topic, tp.partition, position)  # fmt: skip
        else:
            self._on_hole(tp.topic, tp.partition, lost_from, position)


class _GapWatchingSubscriptions(aiokafka_subscriptions.SubscriptionState):
    """aiokafka's subscription state of one consumer, whose assignments track the partitions of `topics`."""

    def __init__(self, topics: frozenset[str], on_hole: OnHole, loop: Any = None) -> None:
        super().__init__(loop=loop)
        self._gap_topics, self._on_hole = topics, on_hole

    def assign_from_subscribed(self, assignment: Any) -> None:
        super().assign_from_subscribed(assignment)
        # The new Assignment's states were built a moment ago and nothing has used them yet (this is
        # synchronous; assignment waiters only wake on the loop's next turn).
        new = self._subscription.assignment
        for tp in list(new._tp_state):
            if tp.topic in self._gap_topics:
                new._tp_state[tp] = _TrackedPartitionState(new, tp, self._on_hole)


def report_gap(
    options: TransportOptions, topic: str, partition: int, first: int, end: int, reason: str = GAP_REASON
) -> None:
    """Offsets first..end-1 of topic[partition] will never be delivered: say so, loudly and durably, once
    per offset (`TransportOptions.gaps`).
    `reason`: GAP_REASON for an agent's input, CHANGELOG_GAP_REASON for a table's changelog
    (recovery_holes.py, or a standby's reset: the records were gone before the table was recovered from them)."""
    from contracts.events import DeadLetter, dumps
    from monitoring import metrics

    # Only what was not reported already (the same loss seen again, or by another watcher first).
    for start, stop in options.gaps.claim(topic, partition, first, end):
        n = stop - start
        log.error("offsets %d..%d of %s[%d] (%d messages) were deleted by the broker before this worker read "
                  "them: dead-lettered as %s", start, stop - 1, topic, partition, n, reason)  # fmt: skip
        detail = (f"offsets {start}..{stop - 1} ({n} messages) were no longer on the broker when this worker "
                  "fetched them (retention or log truncation); their bytes are unavailable")  # fmt: skip
        record = DeadLetter(reason=reason, detail=detail, topic=topic, partition=partition, offset=start, raw="")
        if options.gap_emit is not None:
            options.gap_emit(options.dlq, None, dumps(record), None, partition)
        metrics.DLQ.labels(reason).inc(n)


class OffsetGapsThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        options = options_of(self.app)
        topics = options.gap_topics | options.changelog_topics
        if topics:  # before start(): the fetcher and coordinator take the consumer's subscription state then
            consumer._subscription = _GapWatchingSubscriptions(topics, self._on_hole, loop=consumer._loop)
        return consumer

    def _on_hole(self, topic: str, partition: int, first: int, end: int) -> None:
        """In this thread's loop (aiokafka's): report, then let Faust's loop ack the range as a gap (an
        agent's input; a changelog, read by a standby or a recovery, has no committed offset to move)."""
        options = options_of(self.app)
        changelog = topic in options.changelog_topics
        report_gap(options, topic, partition, first, end, CHANGELOG_GAP_REASON if changelog else GAP_REASON)
        if changelog:
            return
        consumer = self.consumer
        asyncio.run_coroutine_threadsafe(consumer._add_gap(TP(topic, partition), first, end - 1), consumer.loop)
