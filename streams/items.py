"""The item side of streaming ALS inside a worker: the item trainer on the video_id-keyed stream, and the
replicas of `item-vectors` (feeding every worker's index) and `user-gram` (the per-partition sums of user
factors that the item solve adds up).

Both topics are compacted and are the changelogs of Faust GlobalTables, so every worker reads all of them
(and again on restart); updates reach the local model as they are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust
import numpy as np
import orjson

from models.recs.item_side import ItemMessage, ItemTrainer
from streams.pipeline import Message
from streams.tables import latest_values

class TopicReplica(faust.GlobalTable):
    """A GlobalTable over a compacted topic every worker reads in full (`item-vectors`, `user-gram`); each
    applied batch, as {key: latest value or None for a tombstone}, is handed to `on_batch`."""

    on_batch: Callable[[dict[Any, Any]], None] | None = None

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
        if self.on_batch is not None and latest:
            self.on_batch(latest)


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
