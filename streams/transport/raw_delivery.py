"""Raw input topics delivered without Faust's decoding.

The agents' topics carry raw bytes and each partition feeds one agent; `RawDeliveryConductor` delivers
their messages with `_raw_delivery`, Faust's delivery minus what raw bytes do not need (the schema decode,
settings lookups, per-message sets): 3.3 instead of 10.8 us per message (Faust's Cython handler, measured
in-process), ~5% of a worker's main thread per message (py-spy, `bench pipeline`). Every other topic keeps
Faust's handler.

Upstream: faust-streaming 0.15.3 faust/transport/conductor.py `Conductor._build_handler` (overridden:
falls back to it) and what it builds, `ConductorCompiler.build` (or faust/transport/_cython/conductor
`ConductorHandler` where that extension is built; not in this install). The delivery reproduced here
relies on `app.flow_control.acquire`, faust/transport/producer.py `ProducerBuffer.wait_until_ebb` /
`pending` / `max_messages`, `app.conf.producer_threaded`, `Message.incref`, `app.conf.Event`,
`sensors.on_topic_buffer_full`, faust/transport/consumer.py `Consumer.on_buffer_full` / `on_buffer_drop`,
faust/channels.py `Channel.queue` / faust/topics.py `Topic.put`; mode-streaming 0.7.1 mode/utils/queues.py
`FlowControlQueue.put_nowait_enhanced`, `FlowControlEvent.acquire`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport import conductor as faust_conductor
from faust.types import TP

RELIES_ON = (
    ("faust.transport.conductor", "Conductor._build_handler"),
    ("faust.transport.conductor", "Conductor.app"),
    ("faust.transport.conductor", "ConductorCompiler.build"),
    ("faust.transport.producer", "ProducerBuffer.wait_until_ebb"),
    ("faust.transport.producer", "ProducerBuffer.pending"),
    ("faust.transport.producer", "ProducerBuffer.max_messages"),
    ("faust.transport.consumer", "Consumer.on_buffer_full"),
    ("faust.transport.consumer", "Consumer.on_buffer_drop"),
    ("faust.types", "Message.incref"),
    ("faust.topics", "Topic.queue"),
    ("faust.topics", "Topic.put"),
    ("faust.sensors.base", "SensorDelegate.on_topic_buffer_full"),
    ("mode.utils.queues", "FlowControlQueue.put_nowait_enhanced"),
    ("mode.utils.queues", "FlowControlEvent.acquire"),
)


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


class RawDeliveryConductor(faust_conductor.Conductor):
    def _build_handler(self, tp: TP, channels: Any) -> Any:
        """The agents' input topics (raw bytes, one agent each) skip Faust's generic delivery: ~5% of a
        worker's main thread per message (py-spy, `bench pipeline`). Everything else is Faust's."""
        if len(channels) == 1:
            (channel,) = channels
            if _is_raw(channel):
                return _raw_delivery(self, tp, channel)
        return super()._build_handler(tp, channels)
