"""The item side of streaming ALS inside a worker: the item trainer on the video_id-keyed stream, and the
replicas of `item-vectors` (feeding every worker's index) and `user-gram` (the per-partition sums of user
factors that the item solve adds up).

Both topics are compacted and are the changelogs of Faust GlobalTables, so every worker reads all of them
(and again on restart); updates reach the local model as they are applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust
import numpy as np
import orjson

from models.recs.item_side import ItemMessage, ItemTrainer
from streams.pipeline import Message
from streams.tables import ChangelogHoleCheck, latest_values

log = logging.getLogger(__name__)

class TopicReplica(ChangelogHoleCheck, faust.GlobalTable):
    """A GlobalTable over a compacted topic every worker reads in full (`item-vectors`, `user-gram`); what
    it applies, as {key: latest value or None for a tombstone}, is handed to `on_batch`.

    Faust applies a global table's changelog one record at a time here (buffer size 1, so that nothing
    waits for a buffer to fill), and each item refresh writes hundreds of vectors: one index upsert per
    vector stalled the event loop ~200 ms every refresh, the p99 of `bench pipeline`'s latency. Records
    applied within `coalesce_s` of each other reach `on_batch` together (the latest value per key), from
    the event loop; without a running loop (tests, tools) each batch is handed over at once.
    """

    on_batch: Callable[[dict[Any, Any]], None] | None = None
    coalesce_s: float = 0.02
    _pending: dict[Any, Any] | None = None

    def _changelog_topic_name(self) -> str:
        """The topic given as `changelog_topic`: Faust's assignor asks a global table for its changelog by
        this name (faust-streaming 0.15), which is otherwise `<app>-<table>-changelog`."""
        if self._changelog_topic is not None:
            return self._changelog_topic.get_topic_name()
        return super()._changelog_topic_name()

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        batch = list(batch)
        super().apply_changelog_batch(batch)
        latest = latest_values(batch)
        if self.on_batch is None or not latest:
            return
        if self._pending is not None:
            self._pending.update(latest)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.on_batch(latest)
            return
        self._pending = latest
        loop.call_later(self.coalesce_s, self._hand_over)

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self.on_batch is not None:
            try:
                self.on_batch(pending)
            except Exception:  # noqa: BLE001 - as Faust's recovery loop does: logged, the next records apply
                log.exception("applying %d records of %s failed", len(pending), self.name)


class ItemSide:
    """Applies interactions-by-video messages; on each tick re-solves the videos that changed."""

    def __init__(self, trainer: ItemTrainer, gram: Callable[[], np.ndarray], available: Callable[[str], bool]) -> None:
        self.trainer = trainer
        self.gram = gram
        self.available = available

    def apply(self, messages: list[Message]) -> None:
        """Each message holds the (video_id, user_id, factor, confidence) items of one partition."""
        for msg in messages:
            for video_id, user_id, factor, confidence in orjson.loads(msg.value or b"[]"):
                self.trainer.apply(ItemMessage(video_id, user_id, factor, float(confidence)))

    def tick(self) -> tuple[list[str], np.ndarray]:
        """New vectors of the available videos touched since the last tick."""
        for video_id in [v for v in self.trainer.dirty if not self.available(v)]:
            self.trainer.forget_video(video_id)
        return self.trainer.solve_dirty(self.gram())
