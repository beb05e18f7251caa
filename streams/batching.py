"""Micro-batches taken straight from an agent's channel queue, instead of Faust's `Stream.take_events`.

Faust's `take_events(max_, within)` fills its buffer through the stream's per-event iterator (a background
task that awaits once per event), and returns after `within` seconds whatever that task has moved by then.
Under load the same thread also runs the fetcher, which fills the channel queue in bursts without
yielding, so the window ended with a few hundred events moved while thousands sat in the queue (measured,
`bench pipeline`: batches of 4 to 1,000 with 3,000 to 6,800 queued). Smaller batches serve the same user
more often: more work per event.

`micro_batches` takes what is already queued in one go (up to `max_events`) and waits for more only while
the queue is empty and `within_s` has not passed since the batch's first event: the same bound on the
wait, full batches under load. It keeps what Faust's stream iterator guarantees:
- a message is tracked as pending (graceful shutdown waits for it) from when its batch is handed out, and
  acked only after the caller is done with the batch, so an offset is never committed before its event
  was processed (an abandoned partial batch is neither tracked nor acked: it is delivered again);
- events from before a rebalance (an older consumer generation) or taken while flow control is suspended
  are not handed out, as Faust's iterator skips them, and, unlike there, not acked either; nor are events
  handed out before a rebalance began (`release` says why);
- errors thrown into the channel are raised, except StopAsyncIteration (how Faust stops an actor), which
  ends the batches;
- a caller that awaits before applying a batch (the moderation agent scores on another thread) asks
  `still_current` first: a rebalance may have begun meanwhile, and what it would write then is the old
  owner's, racing the new one's (see there);
- the stream's processors run once per event, when its batch is handed out (a processor that raises
  `faust.exceptions.Skip` drops the event, acked); their return values are not used: agents here take
  events, not values. `agent.test_context()` observes agents through such a processor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.exceptions import Skip
from mode.utils.futures import maybe_async


async def micro_batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of a Faust agent's stream events; each batch is acked when the caller asks for the next."""
    app = stream.app
    channel = aiter(stream.channel)  # subscribes the agent's topic, as iterating the stream does
    queue = channel.queue
    flow = app.flow_control
    consumer = app.consumer
    acking_topics = app.topics.acking_topics
    processors = stream._processors
    loop = asyncio.get_running_loop()
    while True:
        try:
            batch = [await queue.get()]
            deadline = loop.time() + within_s
            while len(batch) < max_events:
                while len(batch) < max_events and not queue.empty():
                    batch.append(queue.get_nowait())
                left = deadline - loop.time()
                if len(batch) >= max_events or left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except asyncio.TimeoutError:
                    break
        except StopAsyncIteration:
            return  # the actor is stopping: Faust throws this into its channel
        generation, active = app.consumer_generation_id, flow.is_active()
        taken, live = [], []
        for event in batch:
            message = event.message
            if not active or message.generation_id != generation:
                continue  # neither tracked nor acked (see `release`)
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            taken.append(event)
            try:
                value = event.value
                for processor in processors:
                    value = await maybe_async(processor(value))
            except Skip:
                continue  # filtered: acked below, as Faust acks what a processor skips
            live.append(event)
        if live:
            yield live
        for event in taken:
            if still_current(app, event):
                await stream.ack(event)
            else:
                release(event)


def release(event: Any) -> None:
    """An event handed out before a rebalance began, done with but not acked: its message leaves the set a
    rebalance waits on (Faust's `Consumer.wait_empty` drops messages marked acked within a second), and its
    offset is not added to what may be committed. Faust acks such events (its stream iterator acks what it
    skips); but during a revoke the consumer has already forgotten the partition's committed offset, so the
    commit that ends the revoke takes any run of acked offsets: events nobody applied (a comment whose score
    was discarded, below) would be committed past and never read again. Unacked, the partition's owner, this
    worker or another, reads them again from the committed offset."""
    event.message.acked = True


def still_current(app: Any, event: Any) -> bool:
    """Whether `micro_batches` would still hand this event out: flow not suspended (a rebalance under way) and
    the consumer generation it was fetched in. A result computed across an await for an event no longer
    current is discarded like Faust's own old-generation events (not applied, and not acked: `release`): its
    partition's owner, this worker or another, reads it again from the committed offset. Applied, it was a
    write by the old owner: table rows and item-side messages the new owner, which had already read the
    changelog, never saw (seen as a comment's sentiment missing from the new owner's state)."""
    return bool(app.flow_control.is_active()) and event.message.generation_id == app.consumer_generation_id
