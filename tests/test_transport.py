"""The consumer's per-message hand-off (streams/transport/handoff.py): no tasks when a delivery completes at once,
Faust's own race against a suspended flow when it has to wait; raw input topics delivered without Faust's
decoding, as the same events."""

from __future__ import annotations

import asyncio

import pytest

from tests.offline_app import offline_app, raw_channel


def _consumer():
    """A finalized app's consumer, made inside the running loop so its events and tasks live there."""
    return offline_app().consumer


def _run(body):
    async def main():
        consumer = _consumer()
        return await body(consumer, consumer.suspend_flow)

    return asyncio.run(main())


def test_a_delivery_that_completes_at_once_creates_no_task():
    async def body(consumer, flow):
        created = []
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: created.append(coro) or asyncio.Task(coro, loop=loop, **kw))

        async def deliver():
            return "delivered"

        result = await consumer.wait_first(deliver(), flow.wait())
        return result, list(created)  # before asyncio.run adds its own shutdown tasks

    result, created = _run(body)
    assert result.results == ["delivered"] and not result.stopped
    assert created == []


def test_a_delivery_that_waits_still_completes():
    async def body(consumer, flow):
        room = asyncio.get_running_loop().create_future()

        async def deliver():
            await asyncio.sleep(0)
            return await room

        asyncio.get_running_loop().call_later(0.01, room.set_result, "delivered later")
        return await consumer.wait_first(deliver(), flow.wait())

    result = _run(body)
    assert result.results == ["delivered later"]


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended():
    """A rebalance suspends the flow while a delivery waits on a full buffer: as in Faust, the delivery is
    cancelled rather than left blocking the fetch loop."""
    states = []

    async def body(consumer, flow):
        async def deliver():
            try:
                await asyncio.get_running_loop().create_future()  # never room
            except asyncio.CancelledError:
                states.append("cancelled")
                raise

        asyncio.get_running_loop().call_later(0.01, flow.set)
        return await consumer.wait_first(deliver(), flow.wait())

    result = _run(body)
    assert result.results == [True]  # the flow's wait won
    assert states == ["cancelled"]


def test_a_delivery_that_raises_propagates():
    async def body(consumer, flow):
        async def deliver():
            raise ValueError("bad message")

        return await consumer.wait_first(deliver(), flow.wait())

    with pytest.raises(ValueError, match="bad message"):
        _run(body)


def test_raw_single_channel_partitions_get_the_lean_delivery_and_the_same_events_as_faust_s():
    from faust.transport import conductor as faust_conductor
    from faust.types import TP, Message

    async def main():
        app = offline_app()
        app.flow_control.resume()
        channel = raw_channel(app, "t")
        tp = TP("t", 0)
        lean = app.topics._build_handler(tp, {channel})
        generic = faust_conductor.Conductor._build_handler(app.topics, tp, {channel})
        assert getattr(lean, "__qualname__", "").startswith("_raw_delivery")
        json_handler = app.topics._build_handler(TP("j", 0), {aiter(app.topic("j"))})  # Faust's own
        assert not getattr(json_handler, "__qualname__", "").startswith("_raw_delivery")
        events = []
        for deliver in (lean, generic):
            for key, value in ((b"k", b"v"), (None, None)):
                message = Message("t", 0, 7, 1.0, 0, [], key, value, None)
                await deliver(message)
                event = channel.queue.get_nowait()
                events.append((event.key, event.value, event.message is message, message.refcount))
        return events

    events = asyncio.run(main())
    assert events[:2] == events[2:] == [(b"k", b"v", True, 1), (None, None, True, 1)]


def test_a_lost_offset_range_is_reported_once_whatever_order_its_parts_are_seen_in():
    """The reset watcher can see the last offset of a hole (Faust's recovery seeks to earliest - 1) before
    the table's assignment check reports the whole range: each offset is still reported exactly once."""
    from streams.transport.options import ReportedGaps

    gaps = ReportedGaps()
    assert gaps.claim("log", 0, 3, 4) == [(3, 4)]
    assert gaps.claim("log", 0, 0, 4) == [(0, 3)]  # the rest of the range, not nothing
    assert gaps.claim("log", 0, 0, 4) == []  # the same hole re-read after a rebalance
    assert gaps.claim("log", 0, 6, 8) == [(6, 8)]
    assert gaps.claim("log", 0, 2, 10) == [(4, 6), (8, 10)]
    assert gaps.claim("log", 1, 0, 2) == [(0, 2)]  # another partition


def test_a_partition_awaiting_a_reset_has_no_position_instead_of_an_assertion():
    """Faust's livelock check reads `position` of every assigned partition unguarded; while a watched
    partition awaits its reset (records deleted unread) aiokafka's assertion crashed the worker."""
    from aiokafka.consumer.fetcher import OffsetResetStrategy
    from aiokafka.consumer.subscription_state import TopicPartitionState
    from faust.types import TP

    from streams.transport.offset_gaps import _TrackedPartitionState

    holes = []

    async def main() -> None:  # aiokafka builds its futures on the running loop
        state = _TrackedPartitionState(None, TP("events", 0), lambda *hole: holes.append(hole))
        state.seek(5)
        assert state.position == 5
        state.await_reset(OffsetResetStrategy.EARLIEST)
        assert state.position is None and not state.has_valid_position
        state.reset_to(9)
        assert state.position == 9 and holes == [("events", 0, 5, 9)]
        plain = TopicPartitionState(None)
        plain.await_reset(OffsetResetStrategy.EARLIEST)
        with pytest.raises(AssertionError):  # aiokafka's own: why the override exists
            plain.position  # noqa: B018

    asyncio.run(main())


def test_a_failed_rejoin_pushed_to_an_assignment_wait_waits_for_the_next_one_while_the_group_routine_runs():
    """aiokafka pushes an unexpected SyncGroup answer to every wait for the assignment (`abort_waiters`), the
    fetch's among them; Faust's fetch raised it and the worker crashed. Guarded, the wait goes on to the next
    assignment while the coordination routine runs; a dead routine's error, or a specific one, still raises."""
    from types import SimpleNamespace

    from aiokafka import errors
    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.structs import TopicPartition

    from streams.transport.group_join import _guard_assignment_waits, rejoin_failure

    async def main() -> None:
        subscription = SubscriptionState()
        subscription.register_fetch_waiters(set())  # the fetcher's, registered when it starts
        subscription.subscribe({"events"})
        routine = asyncio.get_running_loop().create_future()
        consumer = SimpleNamespace(_subscription=subscription, _coordinator=SimpleNamespace(_coordination_task=routine))
        _guard_assignment_waits(consumer)
        waiting = asyncio.ensure_future(subscription.wait_for_assignment())
        await asyncio.sleep(0)
        subscription.abort_waiters(errors.KafkaError("InvalidRequestError()"))  # what _push_error_to_user does
        await asyncio.sleep(0.01)
        assert not waiting.done()  # still waiting: for the assignment of the rejoin that follows
        subscription.assign_from_subscribed({TopicPartition("events", 0)})
        await asyncio.wait_for(waiting, 1)
        assert not rejoin_failure(errors.GroupAuthorizationFailedError("g"), consumer._coordinator)
        routine.set_result(None)  # the routine ended: its error is Faust's to see
        dead = asyncio.ensure_future(subscription.wait_for_assignment())
        await asyncio.sleep(0)
        subscription.abort_waiters(errors.KafkaError("Unexpected error during coordination"))
        with pytest.raises(errors.KafkaError):
            await asyncio.wait_for(dead, 1)

    asyncio.run(main())


def test_a_message_fetched_while_a_completed_recovery_seeks_the_inputs_reaches_the_agent():
    """Faust's end of recovery resumes the input partitions, awaits the seek, then resumes flow control, which
    clears every agent queue (streams/transport/recovery_flow.py): a message the fetcher delivered during the
    seek was lost. Held in its delivery until the queues were cleared, it is delivered after."""
    from faust.types import TP, Message

    async def main():
        app = offline_app()
        recovery = app.tables.recovery
        channel = raw_channel(app, "t")
        tp = TP("t", 0)
        deliver = app.topics._build_handler(tp, {channel})  # the lean delivery; Faust's acquires the same way
        message = Message("t", 0, 7, 1.0, 0, [], b"k", b"v", None)
        deliveries = []

        class Consumer:  # what the end of a recovery asks of the consumer; the seek is where the fetcher runs
            def assignment(self):
                return {tp}

            def resume_partitions(self, tps):
                pass

            async def perform_seek(self):
                deliveries.append(asyncio.ensure_future(deliver(message)))
                await asyncio.sleep(0.01)

            def resume_flow(self):
                pass

        class Fetcher:
            async def maybe_start(self):
                pass

        app._consumer, app._fetcher = Consumer(), Fetcher()
        app.flow_control.resume()  # as while recovery reads the changelogs
        await recovery.on_recovery_completed(app.consumer_generation_id)
        await asyncio.gather(*deliveries)
        return [event.message is message for event in [channel.queue.get_nowait() for _ in range(channel.queue.qsize())]]

    assert asyncio.run(main()) == [True]


@pytest.mark.integration
def test_every_poll_takes_records_of_every_buffered_partition():
    """fair_drain.py, on aiokafka's own fetcher and the embedded broker: with ~2.7 MB of 90-byte records and
    a few 100 KB records buffered, each poll of at most 2,000 records takes a share of both, so the large
    records arrive at nearly every poll from the first on (aiokafka's own drain, in runs where the small
    records' buffer came first, served the first large one after up to 6 polls), and every record arrives
    once, in order. Also what the embedded broker does that makes it matter: it answers a fetch with one
    record batch per partition, so a partition behind the others gets one record per round."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTP
    from confluent_kafka import Producer

    from lab.local import LocalStack
    from streams.transport import ConsumerThread
    from streams.transport.fair_drain import FairDrainThread, drain_fairly

    assert ConsumerThread._fetch_records is FairDrainThread._fetch_records  # the worker's consumer polls so
    sizes = {"small-records": (30_000, 90), "large-records": (20, 100_000)}
    with LocalStack() as stack:
        stack.start_broker()
        producer = Producer({"bootstrap.servers": stack.bootstrap, "message.max.bytes": 2_000_000})
        for i in range(sizes["small-records"][0]):
            producer.produce("small-records", str(i).encode().ljust(90, b"."), partition=0)
        for i in range(sizes["large-records"][0]):  # each its own record batch, as a worker's item messages
            producer.produce("large-records", str(i).encode().ljust(100_000, b"."), partition=0)
            producer.flush(30)
        assert producer.flush(30) == 0

        async def polls() -> tuple[list[set[str]], dict[str, list[int]]]:
            aio = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False,
                                   max_partition_fetch_bytes=4 * 1024 * 1024)  # fmt: skip
            await aio.start()
            try:
                tps = {AioTP(topic, 0) for topic in sizes}
                aio.assign(list(tps))
                for tp in tps:
                    aio.seek(tp, 0)
                fetcher = aio._fetcher
                for _ in range(200):  # both partitions buffered before the first poll
                    if len(fetcher._records) == 2:
                        break
                    await asyncio.sleep(0.05)

                def fetch(partitions, timeout, max_records):
                    return fetcher.fetched_records(partitions, timeout=timeout, max_records=max_records)

                polled, offsets = [], {topic: [] for topic in sizes}
                while sum(map(len, offsets.values())) < sum(n for n, _ in sizes.values()):
                    drained = await drain_fairly(fetch, fetcher._records, tps, 10, 2_000)
                    assert drained and sum(map(len, drained.values())) <= 2_000, drained.keys()
                    polled.append({tp.topic for tp in drained})
                    for tp, records in drained.items():
                        offsets[tp.topic] += [r.offset for r in records]
                    await asyncio.sleep(0.05)  # an agent's work on the poll: the drained partition is fetched again
                return polled, offsets
            finally:
                await aio.stop()

        polled, offsets = asyncio.run(polls())
    assert polled[0] == set(sizes), polled[:3]
    large = [i for i, topics in enumerate(polled) if "large-records" in topics]
    # One 100 KB record per fetch (the embedded broker's one batch), and a fetch per poll but the first one or
    # two (the refetch still in flight): all 20 by poll 22 (3 runs). aiokafka's own drain: the last at poll
    # 27-32 (3 runs), after all the small records.
    assert len(large) == 20 and large[-1] <= 23, polled
    assert offsets == {topic: list(range(n)) for topic, (n, _) in sizes.items()}
