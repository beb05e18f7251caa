"""The item side of streaming ALS inside a worker: the item trainer on the video_id-keyed stream, and the
replicas of `item-vectors` (feeding every worker's index) and `user-gram` (the per-partition sums of user
factors that the item solve adds up).

Both topics are compacted and are the changelogs of Faust GlobalTables, so every worker reads all of them
(and again on restart); updates reach the local model as they are applied.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import faust
import numpy as np
import orjson

from contracts.models import pack_factor, parse_item_messages, unpack_factor
from models.recs.config import RecsSettings
from models.recs.item_side import ItemMessage, ItemTrainer, own
from monitoring import metrics
from streams.pipeline import Message
from streams.tables import OutputTable, ValidatedChangelog, latest_values
from streams.topics import partition_for

log = logging.getLogger(__name__)

class TopicReplica(ValidatedChangelog, faust.GlobalTable):
    """A GlobalTable over a compacted topic every worker reads in full (`item-vectors`, `user-gram`); what
    it applies, as {key: latest value or None for a tombstone}, is handed to `on_batch`.

    Faust applies a global table's changelog one record at a time here (buffer size 1, so that nothing
    waits for a buffer to fill), and each item refresh writes hundreds of vectors: one index upsert per
    vector stalled the event loop ~200 ms every refresh, the p99 of `bench pipeline`'s latency. Records
    applied within `coalesce_s` of each other reach `on_batch` together (the latest value per key), from
    the event loop; without a running loop (tests, tools) each batch is handed over at once.
    """

    on_batch: Callable[[dict[Any, Any]], None] | None = None
    # Called after each hand-over, once `reached` (partition -> offset just past the last record handed to
    # `on_batch`, or rejected) has moved: a `models` version waits for its fit's vectors this way.
    on_reached: Callable[[], None] | None = None
    coalesce_s: float = 0.02
    _pending: dict[Any, Any] | None = None
    _pending_ends: dict[int, int] | None = None
    _reached: dict[int, int] | None = None

    @property
    def reached(self) -> dict[int, int]:
        if self._reached is None:
            self._reached = {}
        return self._reached

    def _changelog_topic_name(self) -> str:
        """The topic given as `changelog_topic`: Faust's assignor asks a global table for its changelog by
        this name (faust-streaming 0.15), which is otherwise `<app>-<table>-changelog`."""
        if self._changelog_topic is not None:
            return self._changelog_topic.get_topic_name()
        return super()._changelog_topic_name()

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        batch = list(batch)
        # The ends still to hand over grow in place; a first batch starts them (set with `_pending`, below).
        ends = self._pending_ends if self._pending_ends is not None else {}
        for event in batch:
            m = event.message
            ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
        batch = self.valid_only(batch)
        super().apply_changelog_batch(batch)
        latest = latest_values(batch)
        if self._pending is not None:
            self._pending.update(latest)
            return
        self._pending, self._pending_ends = latest, ends
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand_over()
            return
        loop.call_later(self.coalesce_s, self._hand_over)

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, None
        ends, self._pending_ends = self._pending_ends or {}, None
        if pending and self.on_batch is not None:
            try:
                self.on_batch(pending)
            except Exception:  # noqa: BLE001 - as Faust's recovery loop does: logged, the next records apply
                log.exception("applying %d records of %s failed", len(pending), self.name)
        for p, end in ends.items():
            self.reached[p] = max(self.reached.get(p, 0), end)
        if ends and self.on_reached is not None:
            self.on_reached()


class ItemStateTable(OutputTable):
    """The item side's state, so that a restart or a partition moving to another worker resumes it exactly:
    one record per (interactions-by-video partition, user) holding what `ItemTrainer.user_state` gives
    (factor version, factor, {video: confidence} for that partition's videos), written behind its changelog
    like the users table. Per user, not per video: a popular video's record would hold thousands of users
    and be rewritten at each of them; a user's holds their few videos of the partition. Whether a solve was
    owed is not stored: a restored partition re-solves its videos once (`ItemTrainer.restore`).

    `on_revoked(kept)` is called at each rebalance with the partitions this worker still owns (a partition it
    now keeps a standby replica of is another worker's: its state is read back if it comes back), and
    `before_flush()` before each flush (the one before an offset commit): the item side writes then (and at
    each tick), once per user changed since, not once per micro-batch."""

    on_revoked: Callable[[set[int]], None] | None = None
    before_flush: Callable[[], None] | None = None

    async def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()
        await super().flush()

    def partition_of(self, key: str) -> int:
        """From the key itself ("[partition, user_id]"); -1 for a key that is not one (never restored)."""
        try:
            return parse_state_key(key)[0]
        except ValueError:
            return -1

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        if self.on_revoked is not None:
            active = self.active_partitions()
            standby = {tp.partition for tp in assigned if tp.topic == self.changelog_topic_name} - active
            log.info("item side: owns partitions %s, standby of %s", sorted(active), sorted(standby))
            self.on_revoked(active)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


def state_key(partition: int, user_id: str) -> str:
    return orjson.dumps([partition, user_id]).decode()


def parse_state_key(key: str) -> tuple[int, str]:
    """`state_key`'s inverse; ValueError for anything else."""
    try:
        partition, user_id = orjson.loads(key)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a [partition, user_id] key: {exc}") from None
    if type(partition) is not int or not isinstance(user_id, str):
        raise ValueError("not a [partition, user_id] key")
    return partition, user_id


def encode_state(state: tuple[str, np.ndarray | None, dict[str, float]]) -> list[Any]:
    """A user's item-side state as stored, the factor packed (`contracts.models.pack_factor`)."""
    version, factor, confidences = state
    return [version, None if factor is None else pack_factor(factor), confidences]


def decode_state(value: Any, factors: int) -> tuple[str, np.ndarray | None, dict[str, float]]:
    """`encode_state`'s inverse; ValueError for anything else (the changelog is input like any topic)."""
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[2], dict)):
        raise ValueError("not a [version, factor, {video: confidence}] record")
    version, packed, confidences = value
    if not confidences or not all(
        isinstance(v, str) and type(c) in (int, float) and math.isfinite(c) and c != 0 for v, c in confidences.items()
    ):
        raise ValueError("confidences must be a non-empty {video: finite non-zero number}")
    factor = None if packed is None else unpack_factor(packed, factors)
    return version, factor, {v: float(c) for v, c in confidences.items()}


def state_check(factors: int, partitions: int) -> Callable[[Any, Any], None]:
    """What an item-state changelog record must be to be stored (streams.tables.ValidatedChangelog): a
    `state_key` of a partition that exists, and a value `decode_state` reads (or a tombstone)."""

    def check(key: Any, value: Any) -> None:
        if type(key) is not str:
            raise ValueError("the key is not a [partition, user_id] key")
        partition, _ = parse_state_key(key)
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} of {partitions}")
        if value is not None:
            decode_state(value, factors)

    return check


class ItemSide:
    """The item side of this worker: one `ItemTrainer` per interactions-by-video partition it owns, so that
    a partition's state is the same whichever worker holds it, and moves (`ItemStateTable`) as a unit.
    Applies interactions-by-video messages; on each tick re-solves the videos that changed."""

    def __init__(
        self,
        settings: RecsSettings,
        gram: Callable[[], np.ndarray],
        inactive: Callable[[], Collection[str]],
        state: ItemStateTable | None = None,
        partitions: int = 0,
        reject: Callable[[Message, str, str], None] = lambda msg, reason, detail: metrics.DLQ.labels(reason).inc(),
    ) -> None:
        self.settings = settings
        self.partitions = partitions  # of interactions-by-video: each message's videos must be of its own
        self.reject = reject  # a message not applied (the worker dead-letters it), with its reason and detail
        self.gram = gram
        self.inactive = inactive  # removed and blocked videos (the catalog's)
        self.state = state
        self.trainers: dict[int, ItemTrainer] = {}
        self._unread: set[int] = set()  # partitions assigned whose state is still to be read back (`restore`)
        self.version = ""
        self.batch_videos: set[str] = set()  # shared by every trainer
        if state is not None:
            state.on_ready, state.on_revoked, state.before_flush = self.restore, self.keep, self.journal

    def trainer(self, partition: int) -> ItemTrainer:
        """The partition's trainer; one to be read back from the local store is, first."""
        trainer = self.trainers.get(partition)
        if trainer is None:
            trainer = self.trainers[partition] = ItemTrainer(self.settings, self.version)
            trainer.batch_videos = self.batch_videos
            if self.state is not None:
                trainer.touched = set()
            if partition in self._unread:
                self._unread.discard(partition)
                self._read_back(trainer, partition)
        return trainer

    def own(self, video_id: str, batch: bool) -> None:
        """`ItemTrainer.own`, for every trainer at once (they share `batch_videos`)."""
        own(self.batch_videos, video_id, batch)
        for trainer in self.trainers.values():
            trainer.own(video_id, batch)

    def new_model(self, version: str, batch_videos: Iterable[str] | None = None) -> None:
        """A new batch version; `batch_videos`: its videos when known at once (a model loaded from model_dir:
        the trainer's arrive record by record, `own`), whose state leaves every trainer."""
        self.version = version
        if batch_videos is not None:
            self.batch_videos.clear()
            self.batch_videos.update(batch_videos)
        for trainer in self.trainers.values():
            trainer.new_model(version)
            if batch_videos is not None:
                trainer.forget_covered()

    def apply(self, messages: list[Message]) -> None:
        """Each message holds the (video_id, user_id, factor, confidence) items of one partition, checked
        whole first: a message with one bad item (or a video of another partition) is rejected, none of it
        applied."""
        s = self.settings
        for msg in messages:
            try:
                items = parse_item_messages(msg.value, s.factors, s.max_vector_norm)
                own = self.partitions and {partition_for(v.encode(), self.partitions) for v, *_ in items}
                if own and own != {msg.partition}:
                    raise ValueError("a video of another partition")
            except ValueError as exc:
                log.warning("%s[%d]@%d not applied: %s", msg.topic, msg.partition, msg.offset, exc)
                self.reject(msg, "invalid_item_message", str(exc))
                continue
            trainer = self.trainer(msg.partition)
            for video_id, user_id, factor, confidence in items:
                trainer.apply(ItemMessage(video_id, user_id, factor, confidence))

    def tick(self) -> tuple[list[str], np.ndarray]:
        """New vectors of the available videos touched since the last tick. A removed or blocked video's
        interactions leave the item side at the tick after, touched since or not."""
        gram = None
        ids: list[str] = []
        vectors = [np.zeros((0, self.settings.factors), np.float32)]
        inactive = self.inactive()
        for _, trainer in sorted(self.trainers.items()):
            for video_id in [v for v in inactive if v in trainer.video_users]:
                trainer.forget_video(video_id)
            if not trainer.dirty:
                continue
            gram = self.gram() if gram is None else gram
            solved, new = trainer.solve_dirty(gram)
            ids += solved
            vectors.append(new)
        self.journal()  # a removal changed state, and no offset commit (the other journal point) may follow
        metrics.ITEM_SIDE_INTERACTIONS.set(self.interactions())
        return ids, np.concatenate(vectors)

    def interactions(self) -> int:
        """(video, user) pairs held: bounded by what no batch fit covers yet (models/recs/item_side.py)."""
        return sum(len(users) for trainer in self.trainers.values() for users in trainer.video_users.values())

    def journal(self) -> None:
        """The stored state of every user whose state changed since the last call, written behind the
        changelog (before the flush that precedes an offset commit, so the state covers what is committed)."""
        if self.state is None:
            return
        for partition, trainer in self.trainers.items():
            for user_id in trainer.take_touched():
                key = state_key(partition, user_id)
                state = trainer.user_state(user_id)
                if state is None:
                    self.state.remove(key, partition)
                else:
                    value = encode_state(state)
                    self.state.put(key, value, partition, orjson.dumps(value))

    def keep(self, partitions: set[int]) -> None:
        """A rebalance: the state of partitions no longer owned is the next owner's (it reads it back), and is
        read back here from the local store if one comes back (`restore`), not kept: it may change meanwhile."""
        dropped = sorted(set(self.trainers) - partitions)
        for partition in dropped:
            del self.trainers[partition]
        if dropped:
            log.info("item side: partitions %s moved to another worker", dropped)
        self._unread &= partitions

    def restore(self, active: set[int]) -> None:
        """Recovery caught these partitions up: those new here are read back from the local store, right after
        Faust's recovery rather than inside it (reading a million users' state there, seconds of blocking,
        left a restarted worker never consuming its events), and before anything else touches them."""
        assert self.state is not None
        self.keep(active)
        new = sorted(active - set(self.trainers))
        self._unread.update(new)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop (tests, tools): at once
            loop = None
        for partition in new:  # one callback each: the agents run between two partitions' reads
            if loop is not None:
                loop.call_soon(self.read_back, partition)
            else:
                self.read_back(partition)

    def read_back(self, partition: int) -> None:
        """A partition's state from the local store, unless something needed it sooner (`trainer`) or it left."""
        if partition in self._unread:
            self.trainer(partition)

    def _read_back(self, trainer: ItemTrainer, partition: int) -> None:
        assert self.state is not None
        restored = 0
        for key, value in self.state.items_in(partition):
            try:
                stored_partition, user_id = parse_state_key(key)
                if stored_partition != partition:
                    raise ValueError(f"a key of partition {stored_partition}")
                trainer.restore(user_id, *decode_state(value, self.settings.factors))
                restored += 1
            except ValueError as exc:
                log.error("item-state: record %.200r of partition %d not applied: %s", key, partition, exc)
                metrics.DLQ.labels("invalid_item_state").inc()
        # Users whose stored videos a batch fit now covers stay touched: the next journal drops them.
        log.info("item side: partition %d restored (%d users, %d videos)", partition, restored, len(trainer.video_users))
