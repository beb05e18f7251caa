"""Changelog records deleted before a table's recovery reached them: reported, not recovered around.

Why: at every rebalance Faust (re)starts recovery of each assigned changelog partition, active and standby,
at max(last offset the table applied + 1, earliest offset the broker still has), without a word
(`Recovery._build_offsets`). When the earliest is beyond what the table applied (retention, a truncation,
the embedded broker's 5 MiB per-partition cap), the state those records held is silently gone. A compacted
changelog keeps its start offset (compaction removes superseded records, not the log's beginning), so a
start beyond what the table reached is data lost. `HoleCheckingRecovery` compares the two right where Faust
computes them, with the very offsets recovery then seeks to, and reports the difference as a changelog gap
(offset_gaps.report_gap: log, `reelstream_dlq_messages_total{reason="changelog_gap"}`, one DLQ record
naming the range). This covers a worker starting beyond its local store and a standby whose partition stays
assigned across a rebalance while records it had not read were deleted (a pause longer than the session
timeout); a hole opening while a recovery or standby is already reading is seen by offset_gaps.py's reset
watcher. Both report through `TransportOptions.gaps`, so one loss is reported once.

Upstream: faust-streaming 0.15.3 faust/tables/recovery.py `Recovery._build_offsets(consumer, tps,
destination, title)` (awaited for the active and the standby partitions at each recovery start;
`destination[tp]` holds the last offset applied, None or -1 for none, set by `Recovery._add` from the
store's persisted offset or kept from the previous recovery, and is left at max(that, earliest - 1)),
`Recovery.on_rebalance` (rebuilds `active_tps` from the new assignment), `Recovery.tp_to_table`,
`Recovery.__init__(app, tables, **kwargs)`; faust/tables/manager.py `TableManager.recovery` (builds the
`Recovery` once, in `_recovery`) and `TableManager._recovery`; faust/app/base.py `App.tables` (builds
`conf.TableManager`).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import faust
from faust.tables.recovery import Recovery

from streams.transport.offset_gaps import CHANGELOG_GAP_REASON, report_gap
from streams.transport.options import options_of

RELIES_ON = (
    ("faust.tables.recovery", "Recovery._build_offsets"),
    ("faust.tables.recovery", "Recovery._add"),
    ("faust.tables.recovery", "Recovery.on_rebalance"),
    ("faust.tables.recovery", "Recovery.active_tps"),
    ("faust.tables.recovery", "Recovery.tp_to_table"),
    ("faust.tables.manager", "TableManager.recovery"),
    ("faust.tables.manager", "TableManager._recovery"),
    ("faust.app.base", "App.tables"),
)


def lost_range(applied: int | None, start_after: int) -> tuple[int, int] | None:
    """The offsets [first, end) a recovery skips: `applied` is the last offset the table applied (None or
    -1: none), `start_after` the offset Faust will read after (it seeks to start_after + 1)."""
    first = 0 if applied is None or applied < 0 else applied + 1
    end = start_after + 1
    return (first, end) if end > first else None


class HoleCheckingRecovery(Recovery):
    """Faust's recovery, reporting a start beyond what the table applied as a changelog gap.

    Not checked: an active partition this worker already held, in a store that keeps no offset (memory):
    its state is in memory, partly written by this worker itself, while the offset Faust kept is where the
    last recovery ended; a start beyond that is not a loss (Faust re-reads its own writes)."""

    _held: frozenset[Any] = frozenset()  # active partitions before the rebalance being recovered

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        self._held = frozenset(self.active_tps)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def _build_offsets(self, consumer: Any, tps: AbstractSet[Any], destination: Any, title: str) -> None:
        applied = {tp: destination.get(tp) for tp in tps}
        await super()._build_offsets(consumer, tps, destination, title)
        options = options_of(self.app)
        for tp in sorted(tps):
            if tp.topic not in options.changelog_topics:
                continue
            if title == "active" and tp in self._held and self.tp_to_table[tp].persisted_offset(tp) is None:
                continue
            lost = lost_range(applied[tp], destination[tp])
            if lost is not None:
                report_gap(options, tp.topic, tp.partition, *lost, reason=CHANGELOG_GAP_REASON)


class TableManager(faust.tables.TableManager):
    """Faust's table manager with `recovery_class` as its recovery (the app's `TableManager` setting)."""

    recovery_class: type[HoleCheckingRecovery] = HoleCheckingRecovery

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = self.recovery_class(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
