"""Per-message hand-off without four asyncio tasks when the delivery does not need to wait.

Faust's fetch loop delivers every message as `wait_first(callback(message), suspend_flow.wait())`, so that
a delivery blocked on a full stream buffer is abandoned when a rebalance suspends the flow. `wait_first`
wraps each of those, plus the consumer's stopped and crashed events, in a task and then cancels the
losers: four tasks per message, about 30% of a worker's main-thread CPU per event (measured with and
without, on the `bench pipeline` stream). `Consumer.wait_first` runs the delivery one step first; when it
completes at once (the buffer had room, the usual case) nothing else was needed. Otherwise the suspended
delivery continues inside Faust's `wait_first`, unchanged.

Upstream: faust-streaming 0.15.3 faust/transport/consumer.py `Consumer._drain_messages` (the per-message
`self.wait_first(callback(message), self.suspend_flow.wait())`) and `Consumer.suspend_flow`;
mode-streaming 0.7.1 mode/services.py `Service.wait_first` (overridden: falls back to it), `Service._stopped`,
`Service._crashed`, `WaitResults(done, results, stopped)`; CPython `asyncio.Event.wait` (its code object
identifies the flow's wait coroutine).
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

RELIES_ON = (
    ("faust.transport.consumer", "Consumer._drain_messages"),
    ("faust.transport.consumer", "Consumer.suspend_flow"),
    ("faust.transport.drivers.aiokafka", "Consumer.wait_first"),
    ("mode.services", "Service.wait_first"),
    ("mode.services", "Service._stopped"),
    ("mode.services", "Service._crashed"),
    ("mode.services", "WaitResults._fields"),
)


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


class HandoffConsumer(faust_aiokafka.Consumer):
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
