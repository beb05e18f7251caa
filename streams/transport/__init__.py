"""Faust's aiokafka transport with these changes: a configurable fetch long-poll wait, extra producers
flushed before every offset commit, a start and first group join that survive a broker outage, and
records the broker deleted before they were read dead-lettered instead of skipped, each fetched
message handed to its stream without four asyncio tasks when that does not need to wait, and raw input
topics delivered without Faust's decoding.

Faust hard-codes `fetch_max_wait_ms=1500`. A broker that holds a fetch until that wait expires when no
data is there (librdkafka's mock cluster does) then adds up to 1.5 s to every event's latency and starves
micro-batches (measured with `reelstream bench pipeline`). Real Kafka answers as soon as data arrives, so
a short wait only costs a few more empty fetches there.

Start-up inside a broker outage (aiokafka 0.14, faust-streaming 0.15; nothing here is mock-specific):
- aiokafka's `start()` raises `KafkaConnectionError` when no bootstrap server answers, and the worker
  exits. Producer and consumer now retry until the broker is reachable.
- aiokafka's bootstrap asks for no topic metadata; the subscribed topics' metadata is requested when
  Faust subscribes. If that request fails (broker down) and the broker is back by the first JoinGroup,
  the leader runs Faust's assignor on metadata without any topic: "Ignoring missing topic" for each, then
  a KeyError on the global table's changelog (`_global_table_standby_assignments`). aiokafka hands that
  error to "the user" and its coordination routine waits until someone consumes it (`check_errors()`),
  which Faust never does while it has no partitions: no heartbeat, no rejoin, idle for good.
  `_guard_group_join` makes the leader wait for the metadata of every subscribed topic before assigning,
  and `_watch_coordinator` consumes (and logs) any error aiokafka parks that way, so the group is
  rejoined instead of stalling.

Offset gaps. When the broker has deleted records a consumer has not read yet (retention, or the embedded
broker's 5 MiB per-partition log cap, see lab/broker.py), the fetch fails with OFFSET_OUT_OF_RANGE and
aiokafka resets the position to the earliest offset still there, without an error. Faust then either acks
the skipped range as a "gap" and commits past it (a running worker) or, when it has not yet noted a read
offset for the partition (a restarted worker), may never commit that partition again.
`_TrackedPartitionState` sees the reset itself (position before, position after): on the topics named by
`watch_offset_gaps` the hole is logged as an error, counted in the DLQ metric (reason `offset_gap`, one
per missing offset), written to the DLQ as one record naming the range, and handed to Faust as a gap so
commits go past it. Only a move forward to the earliest offset counts (not a seek, nor `seek_to_end`).

Per-message hand-off. Faust's fetch loop delivers every message as
`wait_first(callback(message), suspend_flow.wait())`, so that a delivery blocked on a full stream buffer
is abandoned when a rebalance suspends the flow. `wait_first` wraps each of those, plus the consumer's
stopped and crashed events, in a task and then cancels the losers: four tasks per message, about 30% of
a worker's main-thread CPU per event (measured with and without, on the `bench pipeline` stream).
`Consumer.wait_first` runs the delivery one step first; when it completes at once (the buffer had room,
the usual case) nothing else was needed. Otherwise the suspended delivery continues inside Faust's `wait_first`, unchanged.

Raw input topics. The agents' topics carry raw bytes and each partition feeds one agent; `Conductor`
delivers their messages with `_raw_delivery`, Faust's delivery minus what raw bytes do not need (the
schema decode, settings lookups, per-message sets): 3.3 instead of 10.8 us per message (Faust's Cython
handler, measured in-process). Every other topic keeps Faust's handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer import subscription_state as aiokafka_subscriptions
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.errors import KafkaConnectionError
from faust.transport import conductor as faust_conductor
from faust.transport import producer as faust_producer
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import WaitResults

log = logging.getLogger(__name__)

SCHEME = "reelstream"
FETCH_MAX_WAIT_MS = {"value": 20}  # set from Settings by streams.app before the worker starts
# Producers flushed together with Faust's before every offset commit (streams/output.py).
FLUSH_WITH_COMMIT: list[Any] = []
# How long a group leader waits for the metadata of subscribed topics before assigning anyway (a topic
# that really does not exist must not block the group forever; the next rejoin tries again).
TOPIC_METADATA_WAIT_S = 30.0
RETRY_MAX_S = 5.0
GAP_REASON = "offset_gap"


@dataclass
class _GapWatch:
    topics: frozenset[str] = frozenset()
    emit: Callable[..., None] | None = None  # OutputProducer.emit: thread-safe (librdkafka)
    dlq: str = ""
    on_hole: Callable[[str, int, int, int], None] | None = None  # set by the worker's consumer thread


GAPS = _GapWatch()


def watch_offset_gaps(topics: Iterable[str], emit: Callable[..., None], dlq: str) -> None:
    """Dead-letter holes in the offsets of `topics` (see the module docstring); set by streams.app."""
    GAPS.topics, GAPS.emit, GAPS.dlq = frozenset(topics), emit, dlq


class _TrackedPartitionState(aiokafka_subscriptions.TopicPartitionState):
    """aiokafka's per-partition fetch state, noticing a reset that jumps forward: records deleted unread."""

    _lost_from: int | None = None

    def _topic_partition(self) -> Any:
        return next((tp for tp, state in self._assignment._tp_state.items() if state is self), None)

    def await_reset(self, strategy: int) -> None:
        self._lost_from = None
        if strategy == OffsetResetStrategy.EARLIEST:
            tp = self._topic_partition()
            if tp is not None and tp.topic in GAPS.topics:
                # -1: no position at all (no committed offset): any start past 0 is only worth a warning,
                # since on real Kafka a new group legitimately starts at whatever retention left.
                self._lost_from = -1 if self._position is None else self._position
        super().await_reset(strategy)

    def seek(self, position: int) -> None:
        self._lost_from = None
        super().seek(position)

    def reset_to(self, position: int) -> None:
        lost_from, self._lost_from = self._lost_from, None
        super().reset_to(position)
        if lost_from is None or position <= max(lost_from, 0):
            return
        tp = self._topic_partition()
        if tp is None:
            return
        if lost_from < 0:
            log.warning("no committed offset for %s[%d]: starting at the earliest offset the broker still has, "
                        "%d (offsets before it were deleted before this group read them)",
                        tp.topic, tp.partition, position)  # fmt: skip
        elif GAPS.on_hole is not None:
            GAPS.on_hole(tp.topic, tp.partition, lost_from, position)


# aiokafka builds these by this module-level name (Assignment.__init__); the subclass only adds the check.
aiokafka_subscriptions.TopicPartitionState = _TrackedPartitionState


def report_gap(topic: str, partition: int, first: int, end: int) -> None:
    """Offsets first..end-1 of topic[partition] will never be delivered: say so, loudly and durably."""
    from monitoring import metrics
    from contracts.events import DeadLetter, dumps

    n = end - first
    log.error("offsets %d..%d of %s[%d] (%d messages) were deleted by the broker before this worker read "
              "them: dead-lettered as %s", first, end - 1, topic, partition, n, GAP_REASON)  # fmt: skip
    detail = (f"offsets {first}..{end - 1} ({n} messages) were no longer on the broker when this worker "
              "fetched them (retention or log truncation); their bytes are unavailable")  # fmt: skip
    record = DeadLetter(reason=GAP_REASON, detail=detail, topic=topic, partition=partition, offset=first, raw="")
    if GAPS.emit is not None:
        GAPS.emit(GAPS.dlq, None, dumps(record), None, partition)
    metrics.DLQ.labels(GAP_REASON).inc(n)


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


def missing_topics(cluster: Any, topics: set[str]) -> list[str]:
    """Topics of `topics` for which `cluster` (aiokafka ClusterMetadata) knows no partition."""
    return sorted(t for t in topics if not cluster.partitions_for_topic(t))


def _guard_group_join(coordinator: Any, wait_s: float) -> None:
    """Before the leader assigns partitions, wait until the metadata of every topic the group subscribes
    to is known, refreshing it as needed (see the module docstring)."""
    perform_assignment = coordinator._perform_assignment
    client = coordinator._client

    async def with_topic_metadata(response: Any) -> Any:
        topics: set[str] = set()
        for member in response.members:  # (member_id, [group_instance_id,] metadata)
            topics.update(ConsumerProtocol.METADATA.decode(member[-1]).subscription)
        deadline = time.monotonic() + wait_s
        delay = 0.1
        while missing := missing_topics(client.cluster, topics):
            if time.monotonic() >= deadline:
                log.error("assigning without metadata for %s after %.0f s", missing, wait_s)
                break
            log.warning("no metadata yet for %d subscribed topics (%s, ...): refreshing before assigning",
                        len(missing), missing[0])  # fmt: skip
            updated = await client.force_metadata_update()
            if not updated or missing_topics(client.cluster, topics):  # broker down, or topics not there yet
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        return await perform_assignment(response)

    coordinator._perform_assignment = with_topic_metadata


async def _watch_coordinator(consumer: Any, interval_s: float = 1.0) -> None:
    """aiokafka parks errors of its group coordination routine (a failed assignment, a failed heartbeat
    task, an unexpected JoinGroup/SyncGroup answer) until the application calls a consumer method that
    checks them, and stops coordinating until then. Faust only does so while it has partitions (and crashes
    on them, from its commit). Consumed here (logged, then the routine goes on and rejoins the group) when
    the worker has no partitions, or when a rejoin failed half-way: Faust's partitions were revoked for the
    rejoin, but aiokafka still lists the old assignment, so without this the worker neither consumed nor
    left the group (seen with a SyncGroup answered INVALID_REQUEST in a rebalance; it then crashed on
    Faust's next commit)."""
    while not consumer._closed:
        await asyncio.sleep(interval_s)
        coordinator = consumer._coordinator
        if coordinator is None or coordinator._pending_exception is None:
            continue
        rejoining = getattr(coordinator, "_performed_join_prepare", False)  # revoked, not yet re-assigned
        if consumer.assignment() and not rejoining:
            continue
        if coordinator._coordination_task.done():
            return  # the routine itself ended (closing or crashed): aiokafka raises that to Faust
        try:
            coordinator.check_errors()
        except Exception as exc:  # noqa: BLE001 - whatever it parked: log it, the routine rejoins
            log.error("consumer group coordination failed: %r; rejoining the group", exc)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _watch_task: asyncio.Task | None = None

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS["value"]  # read by aiokafka at start()
        return consumer

    def _on_hole(self, topic: str, partition: int, first: int, end: int) -> None:
        """In this thread's loop (aiokafka's): report, then let Faust's loop ack the range as a gap."""
        key = (topic, partition, first, end)
        if key not in self._holes_reported:  # a re-read of the same hole (after a rebalance) is one loss
            self._holes_reported.add(key)
            report_gap(topic, partition, first, end)
        consumer = self.consumer
        asyncio.run_coroutine_threadsafe(consumer._add_gap(TP(topic, partition), first, end - 1), consumer.loop)

    async def on_start(self) -> None:
        """As Faust's, with the start retried while the broker is unreachable and the join guarded."""
        self._holes_reported: set[tuple[str, int, int, int]] = set()
        GAPS.on_hole = self._on_hole
        self._consumer = self._create_consumer(loop=self.thread_loop)
        self.time_started = time.monotonic()
        await _until_reachable(self._consumer.start, "consumer")
        if self._consumer._coordinator is not None:
            _guard_group_join(self._consumer._coordinator, TOPIC_METADATA_WAIT_S)
            self._watch_task = asyncio.ensure_future(_watch_coordinator(self._consumer))

    async def on_thread_stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        await super().on_thread_stop()


class _Resumed:
    """Awaiting this continues `coro`, which already ran outside any task up to yielding `pending`: the
    awaiting task takes over where that first step stopped (the protocol `yield from` implements)."""

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Any:
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - cancellation too: delivered to the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


def _is_wait_of(coro: Any, event: asyncio.Event) -> bool:
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and getattr(coro, "cr_code", None) is asyncio.Event.wait.__code__ and (
        frame.f_locals.get("self") is event
    )


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Faust's per-message `wait_first(delivery, suspend_flow.wait())` without tasks when the delivery
        completes in its first step (module docstring); any other call is Faust's own."""
        if not (
            len(coros) == 2
            and timeout is None
            and asyncio.iscoroutine(coros[0])
            and _is_wait_of(coros[1], self.suspend_flow)
            and not (self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set())
        ):
            return await super().wait_first(*coros, timeout=timeout)
        delivery, flow = coros
        try:
            pending = delivery.send(None)
        except StopIteration as done:
            flow.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            flow.close()
            raise
        return await super().wait_first(_Resumed(delivery, pending), flow)


class Producer(faust_aiokafka.Producer):
    async def on_start(self) -> None:
        """As Faust's, with the start retried while the broker is unreachable."""
        await faust_producer.Producer.on_start(self)
        producer = self._producer = self._new_producer()
        self.beacon.add(producer)
        await _until_reachable(producer.start, "producer")

    async def flush(self) -> None:
        await super().flush()
        for producer in FLUSH_WITH_COMMIT:
            await producer.flush()


def _raw_delivery(conductor: faust_conductor.Conductor, tp: TP, channel: Any) -> Callable[[Any], Awaitable[None]]:
    """Faust's per-message delivery (ConductorCompiler.build) for a partition read by one channel of raw
    bytes: the same flow control, producer back-pressure (ProducerBuffer.wait_until_ebb, entered only when
    its buffer is over its limit), reference count, queue pressure callbacks and full-queue wait, without
    the decoding machinery (raw bytes decode to themselves) or the per-message sets and loop over channels."""
    app = conductor.app
    consumer = app.consumer
    acquire_flow_control = app.flow_control.acquire
    buffer = app.producer.buffer
    threaded = app.conf.producer_threaded  # then the buffer's size is another queue's: ask the buffer
    on_topic_buffer_full = app.sensors.on_topic_buffer_full
    event_type = app.conf.Event  # what App.create_event builds (settings lookups cost per message)

    def on_pressure_high() -> None:
        on_topic_buffer_full(tp)
        consumer.on_buffer_full(tp)

    def on_pressure_drop() -> None:
        consumer.on_buffer_drop(tp)

    async def on_message(message: Any) -> None:
        await acquire_flow_control()
        if threaded or buffer.pending.qsize() > buffer.max_messages:
            await buffer.wait_until_ebb()
        message.incref(1)
        event = event_type(app, message.key, message.value, message.headers, message)
        queue = channel.queue
        if queue.full():
            on_topic_buffer_full(tp)
            await channel.put(event)
        else:
            queue.put_nowait_enhanced(event, on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop)

    return on_message


def _is_raw(channel: Any) -> bool:
    schema = getattr(channel, "schema", None)
    return (
        schema is not None
        and schema.key_type is bytes
        and schema.value_type is bytes
        and schema.key_serializer == "raw"
        and schema.value_serializer == "raw"
    )


class Conductor(faust_conductor.Conductor):
    def _build_handler(self, tp: TP, channels: Any) -> Any:
        """The agents' input topics (raw bytes, one agent each) skip Faust's generic delivery: ~5% of a
        worker's main thread per message (py-spy, `bench pipeline`). Everything else is Faust's."""
        if len(channels) == 1:
            (channel,) = channels
            if _is_raw(channel):
                return _raw_delivery(self, tp, channel)
        return super()._build_handler(tp, channels)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer
    Conductor = Conductor


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
