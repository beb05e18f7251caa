"""The item side of streaming ALS inside a worker: the item trainer on the video_id-keyed stream, and the
replica of `item-vectors` that feeds every worker's index.

`item-vectors` is the changelog of a Faust GlobalTable, so every worker reads all of it (and re-reads it
on restart: it is compacted); new vectors reach the local ALS and index as they are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faust
import numpy as np
import orjson

from models.recs.item_side import ItemMessage, ItemTrainer
from streams.pipeline import Message

ApplyVectors = Callable[[list[str], np.ndarray, list[str]], None]  # (upserted ids, vectors, removed ids)


class ItemVectorsReplica(faust.GlobalTable):
    """A GlobalTable whose changelog is `item-vectors`; every applied batch is pushed to `on_vectors`."""

    on_vectors: ApplyVectors | None = None

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        batch = list(batch)
        super().apply_changelog_batch(batch)
        latest: dict[str, list[float] | None] = {}
        for event in batch:
            latest[orjson.loads(event.message.key)] = None if event.message.value is None else orjson.loads(event.message.value)
        if self.on_vectors is not None and latest:
            ids = [k for k, v in latest.items() if v is not None]
            vectors = np.asarray([latest[k] for k in ids], dtype=np.float32)
            self.on_vectors(ids, vectors, [k for k, v in latest.items() if v is None])


class ItemSide:
    """Applies interactions-by-video messages; on each tick re-solves the videos that changed."""

    def __init__(self, trainer: ItemTrainer, gram: Callable[[], np.ndarray], available: Callable[[str], bool]) -> None:
        self.trainer = trainer
        self.gram = gram
        self.available = available

    def apply(self, messages: list[Message]) -> None:
        for msg in messages:
            video_id, user_id, factor, confidence = orjson.loads(msg.value or b"null")
            self.trainer.apply(ItemMessage(video_id, user_id, factor, float(confidence)))

    def tick(self) -> tuple[list[str], np.ndarray]:
        """New vectors of the available videos touched since the last tick."""
        for video_id in [v for v in self.trainer.dirty if not self.available(v)]:
            self.trainer.forget_video(video_id)
        return self.trainer.solve_dirty(self.gram())
