"""streams/batching.py against a real Faust app and stream (no broker): what is queued is taken at once up to
the batch size, a batch is acked only when the caller asks for the next one, events of an older consumer
generation are acked but never handed out, and Faust's way of stopping an actor ends the batches."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import Message

from models.recs.serving import load_recommender
from models.text.base import load_comment_models
from streams.app import create_app
from streams.batching import micro_batches
from streams.settings import Settings
from tests.sinks import Sink


def test_micro_batches_take_what_is_queued_and_ack_only_after_the_caller_is_done():
    async def main():
        settings = Settings(bootstrap_servers="127.0.0.1:1")  # never started: nothing is reached
        app = create_app(settings, load_recommender(settings.recs, settings.index), load_comment_models(settings.moderation), output=Sink())
        app.finalize()
        app.flow_control.resume()
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        channel = aiter(app.topic("t", **raw))
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
        assert all(m.acked for m in queued) and fresh.acked and stale.acked  # skipped, yet acked: as Faust's

    asyncio.run(main())
