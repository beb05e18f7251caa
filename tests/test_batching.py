"""streams/batching.py against a real Faust app and stream (no broker): what is queued is taken at once up to
the batch size, a batch is acked only when the caller asks for the next one, events of an older consumer
generation are never handed out, and neither they nor events handed out before a rebalance began are acked
(their offsets never reach what the consumer may commit), and Faust's way of stopping an actor ends the
batches."""

from __future__ import annotations

import asyncio

import pytest
from faust.types.tuples import ConsumerMessage as Message  # what the consumer makes: tracked, acked to it

from streams.batching import micro_batches
from tests.offline_app import offline_app, raw_channel


def test_micro_batches_take_what_is_queued_and_ack_only_after_the_caller_is_done():
    async def main():
        app = offline_app()
        app.flow_control.resume()
        channel = raw_channel(app, "t")
        await app.topics._update_indices()  # as the conductor does on a subscription: "t" acks to the consumer
        offsets = iter(range(100))

        def put(generation=app.consumer_generation_id):
            message = Message("t", 0, next(offsets), 1.0, 0, [], b"k", b"v", None, generation_id=generation)
            message.incref()  # as the conductor does, once per channel
            channel.queue.put_nowait(app.create_event(message.key, message.value, message.headers, message))
            return message

        batches = micro_batches(app.stream(channel), max_events=3, within_s=0.05).__aiter__()
        queued = [put() for _ in range(5)]
        first = await batches.__anext__()
        assert [e.message for e in first] == queued[:3]  # the batch size, at once
        assert not any(m.acked for m in queued)  # nothing acked while the caller holds the batch
        second = await batches.__anext__()  # the rest, after waiting at most within_s for more
        assert [e.message for e in second] == queued[3:]
        assert all(m.acked for m in queued[:3]) and not any(m.acked for m in queued[3:])
        stale, fresh = put(generation=app.consumer_generation_id - 1), put()
        third = await batches.__anext__()
        assert [e.message for e in third] == [fresh]  # the stale event is not handed out
        channel.queue._throw(StopAsyncIteration())  # how Faust's Actor.cancel stops an agent
        with pytest.raises(StopAsyncIteration):
            await batches.__anext__()
        assert all(m.acked for m in queued) and fresh.acked and not stale.acked  # skipped, and not acked
        return _ackable(app)

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 6]  # the stale event's offset (5) is not among them


def _ackable(app):
    """The offsets the app's consumer counts as acked, and so may commit (Faust's `Consumer._acked`)."""
    return sorted(offset for offsets in app.consumer._acked.values() for offset in offsets)


def test_events_handed_out_before_a_rebalance_began_are_released_without_an_offset_ack():
    """A caller that awaits between taking a batch and being done with it (the moderation agent scores on
    another thread) can see a rebalance begin meanwhile: the revoke waits for those events, then commits
    whatever offsets are acked, having forgotten the committed one. Released, not acked, they let the revoke
    go on, and stay for the partition's owner to read again."""

    async def main():
        app = offline_app()
        app.flow_control.resume()
        channel = raw_channel(app, "t")
        await app.topics._update_indices()  # as the conductor does on a subscription: "t" acks to the consumer
        messages = [Message("t", 0, offset, 1.0, 0, [], b"k", b"v", None, generation_id=app.consumer_generation_id)
                    for offset in range(4)]  # fmt: skip
        for message in messages:
            message.incref()
            channel.queue.put_nowait(app.create_event(message.key, message.value, message.headers, message))
        batches = micro_batches(app.stream(channel), max_events=2, within_s=0.05).__aiter__()
        first = await batches.__anext__()
        assert set(app.consumer._unacked_messages) == set(messages[:2])  # what a revoke would wait for
        await batches.__anext__()  # done with the first batch: acked
        app.flow_control.suspend()  # a revoke begins while the caller holds the second batch
        next_batch = asyncio.ensure_future(batches.__anext__())
        await asyncio.sleep(0.1)  # the caller is done with it; nothing more is handed out while suspended
        app.consumer._clean_unacked_messages()  # what the revoke's wait does between its checks
        next_batch.cancel()
        assert [e.message for e in first] == messages[:2]
        return all(m.acked for m in messages), set(app.consumer._unacked_messages), _ackable(app)

    released, unacked, ackable = asyncio.run(main())
    assert released and unacked == set()  # nothing left for the revoke to wait on
    assert ackable == [0, 1]  # the second batch's offsets (2, 3) are not committable

