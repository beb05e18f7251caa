"""The end of a table recovery without losing what was fetched while it seeked the input partitions.

Why: when a recovery completes, Faust resumes the input (stream) partitions, awaits the seek to their
committed offsets, and only then resumes flow control (`Recovery.on_recovery_completed`; `_resume_streams`
for an app without tables does the same). Flow control has been active since recovery began reading the
changelogs, so messages fetched during that await are delivered into the agents' queues and their offsets
noted as read; `FlowControlEvent.resume()` then clears every queue. Nothing seeks back, so those messages
are never processed; Faust then acks the hole (an offset gap) or never commits the partition again.
Found by `eval recs --via-kafka --restarts 1` (tests/test_recs_replay.py), which sends its next events
while the restarted worker recovers: with a core kept busy, 7 of 16 runs lost 1 to 11 events that way
(instrumented: delivered to the queue, cleared by `resume()`, in no batch) or stopped committing a
partition for good (the CI failure); 0 of 10 with this patch. Upstream: faust-streaming issue #596 (open).

`FlowHeldRecovery` suspends flow control before Faust's code runs: a message fetched for an input partition
then waits in its delivery (`app.flow_control.acquire`, in Faust's handler and raw_delivery.py alike) until
`resume()` has cleared the queues, and is delivered after it. Nothing is dropped; the consumer's own flow
(`Consumer.stop_flow`) is left running, so a changelog record a standby is being handed is not abandoned.
If a new rebalance began meanwhile, Faust returns early and the next recovery resumes the flow, as before.

Upstream: faust-streaming 0.15.3 faust/tables/recovery.py `Recovery.on_recovery_completed(generation_id)`
and `Recovery._resume_streams(generation_id)` (extended: both call `consumer.resume_partitions`, await
`consumer.perform_seek()`, then `app.flow_control.resume()`); mode-streaming 0.7.1 mode/utils/queues.py
`FlowControlEvent.suspend`, `FlowControlEvent.resume` (clears every queue it manages) and
`FlowControlEvent.acquire`.
"""

from __future__ import annotations

from faust.tables.recovery import Recovery

RELIES_ON = (
    ("faust.tables.recovery", "Recovery.on_recovery_completed"),
    ("faust.tables.recovery", "Recovery._resume_streams"),
    ("mode.utils.queues", "FlowControlEvent.suspend"),
    ("mode.utils.queues", "FlowControlEvent.resume"),
    ("mode.utils.queues", "FlowControlEvent.acquire"),
)


class FlowHeldRecovery(Recovery):
    """Faust's recovery with flow control suspended while the input partitions are resumed and seeked."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.flow_control.suspend()
        await super()._resume_streams(generation_id)
