"""The worker's own tables.

The users table is a Faust Table whose changelog writes go through the OutputProducer (librdkafka) instead
of Faust's producer: the same bytes (JSON key and value, None as a tombstone) to the same partition, flushed
before offsets are committed like every other output. Recovery is Faust's own, from the changelog topic.

The catalog is a GlobalTable (every worker reads all of it) that also keeps the set of videos that are not
active, so a micro-batch's exclusions are that set, not a scan of the whole catalog.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import faust
import orjson

from monitoring import metrics
from streams.catalog import inactive_videos, is_available
from streams.output import OutputProducer
from streams.topics import partition_for
from streams.transport.rocks_store import RocksPartitions, is_rocksdb, limit_manifest

log = logging.getLogger(__name__)


def latest_values(batch: Iterable[Any]) -> dict[Any, Any]:
    """A changelog batch (raw JSON key/value events, in offset order) as {key: its latest value, None for a
    tombstone}: what a table that keeps derived state beside its data needs from each applied batch."""
    return {
        orjson.loads(e.message.key): None if e.message.value is None else orjson.loads(e.message.value)
        for e in batch
    }


class HistoryEncoder:
    """The changelog bytes of `{"events": rows}` records, re-encoding only the rows appended since the last
    record of the same key: a user's whole history was serialized on every write, ~6% of a worker's main
    thread (py-spy, `bench pipeline`). The bytes are exactly `orjson.dumps(record)` (tests/test_pipeline.py).

    The previous rows are compared with the new ones by value (identity first, so a C-level pass over
    pointers when the rows are the same objects, as the worker's are); any other change (a replaced row, a
    truncated history, another shape of record) is encoded in full. At most `max_keys` keys are kept,
    the least recently written ones dropped first.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._last: dict[Any, tuple[list[Any], bytes]] = {}
        self.spliced = 0  # encodings that re-used the previous bytes (tests, profiling)

    def encode(self, key: Any, value: Any) -> bytes:
        rows = value.get("events") if type(value) is dict and len(value) == 1 else None
        if type(rows) is not list:
            return orjson.dumps(value)
        last = self._last.pop(key, None)
        n = len(last[0]) if last is not None else -1
        if last is not None and len(rows) >= n and rows[:n] == last[0]:
            encoded = last[1]
            self.spliced += 1
            if len(rows) > n:
                tail = orjson.dumps(rows[n:])[1:-1]
                encoded = encoded[:-2] + (b"," + tail if n else tail) + b"]}"
        else:
            encoded = orjson.dumps(value)
        if len(self._last) >= self.max_keys:
            del self._last[next(iter(self._last))]
        self._last[key] = (list(rows), encoded)  # a copy: the caller may change its list later
        return encoded

    def forget(self, key: Any) -> None:
        self._last.pop(key, None)


class ValidatedChangelog:
    """Mixin for a table over an internal topic (item-vectors, user-gram, models) or a table's own changelog
    (users, item-state, reviews, catalog): every record read from its changelog, in recovery, as a standby or
    live, is checked before it is applied (`valid_only`, called first by the table's apply_changelog_batch).
    The changelog topic is read as raw bytes (`raw_changelog`), so a record that is not JSON reaches the check
    too instead of being dropped by Faust's decoding with only a log line. `validate(key, value)` (decoded
    JSON, or the bytes with `raw`; None value = tombstone) raises ValueError for a record that must not be applied; such a record is
    handed to `reject(message, reason, detail)` (the worker dead-letters it) and left out of the batch, so
    neither the table nor what it feeds (the index, the Gram) ever sees it. Internal topics are input too:
    anyone with write access to them could otherwise steer every recommendation."""

    validate: Callable[[Any, Any], None] | None = None
    raw: bool = False  # `validate` gets the record's key and value bytes, not decoded JSON
    reason: str = ""
    reject: Callable[[Any, str, str], None] | None = None

    def valid_only(self, batch: Iterable[Any]) -> list[Any]:
        """The batch's events that pass `validate` (all when there is none), in order; the others rejected."""
        if self.validate is None:
            return list(batch)
        good = []
        for event in batch:
            m = event.message
            try:
                if self.raw:
                    self.validate(m.key, m.value)
                else:
                    key = orjson.loads(m.key) if m.key is not None else None
                    self.validate(key, None if m.value is None else orjson.loads(m.value))
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                log.warning("%s[%d]@%d not applied (%s): %s", m.topic, m.partition, m.offset, self.reason, exc)
                if self.reject is not None:
                    self.reject(m, self.reason, str(exc))
                continue
            good.append(event)
        return good


def decoded(events: Iterable[Any]) -> list[Any]:
    """Events of a raw changelog as a Faust memory store applies them (`key`, `value` decoded JSON)."""
    return [
        SimpleNamespace(message=e.message, key=orjson.loads(e.message.key),
                        value=None if e.message.value is None else orjson.loads(e.message.value))
        for e in events
    ]  # fmt: skip


@dataclass(slots=True)
class _Write:
    """A user's record written but not yet in the local store: visible to reads, stored once acknowledged."""

    value: Any  # the record, None for a removal
    key: bytes  # the changelog key bytes (the store's key)
    payload: bytes | None  # the changelog value bytes (the store's value)
    partition: int
    offset: int = -1  # in the changelog partition, once the broker acknowledged it

    def delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self.offset = msg.offset()


_MISSING = object()


class OutputTable(ValidatedChangelog, faust.Table):
    """A `streams.pipeline.UserStore`.

    With Faust's memory store, a write goes to the table's dict and its changelog record to the output
    producer. With the RocksDB store (`REELSTREAM_STORE=rocksdb`) a write is held in `_pending` (reads see it)
    until the output producer's flush before an offset commit has had it acknowledged; then it is written to
    the partition's database together with the changelog offset it reached (streams/transport/rocks_store.py
    says why not earlier). Decoded records are kept in an LRU of `cache_size` users, so memory is bounded by
    that cache, the RocksDB block caches and the writes of one commit interval, not by the user count.
    """

    output: OutputProducer | None = None
    on_ready: Callable[[set[int]], None] | None = None  # with the active partitions, once recovery caught them up
    encoder: HistoryEncoder | None = None
    partition_count: int = 1  # of the changelog (= of `events`): a key's partition, for reads
    cache_size: int = 50_000
    _rocks: Any = None  # RocksPartitions once the store is RocksDB
    _pending: dict[str, _Write] | None = None
    _cache: OrderedDict[str, Any] | None = None
    _count: int | None = None
    _deleted: dict[int, set[bytes]] | None = None  # keys deleted from the store since the last purge

    def _new_store(self) -> Any:
        """Faust's store for the table; a RocksDB one rolls its MANIFEST at every edit, so that `purge_deleted`
        leaves no deleted key in its files (streams/transport/rocks_store.py)."""
        store = super()._new_store()
        if is_rocksdb(store):
            limit_manifest(store)
        return store

    # --- reads ------------------------------------------------------------------------------------
    @property
    def persistent(self) -> bool:
        if self._rocks is None and is_rocksdb(self.data):
            self._rocks = RocksPartitions(self.data)
            self._pending, self._cache = {}, OrderedDict()
        return self._rocks is not None

    def get(self, key: str, default: Any = None) -> Any:
        if not self.persistent:
            return self.data.get(key, default)
        assert self._pending is not None and self._cache is not None
        write = self._pending.get(key)
        if write is not None:
            return default if write.value is None else write.value
        value = self._cache.get(key, None)
        if value is not None:
            self._cache.move_to_end(key)
        else:
            raw = self._rocks.get(self.partition_of(key), orjson.dumps(key))
            value = _MISSING if raw is None else orjson.loads(raw)
            self._remember(key, value)
        return default if value is _MISSING else value

    def _remember(self, key: str, value: Any) -> None:
        assert self._cache is not None
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def partition_of(self, key: str) -> int:
        """The changelog partition a key is written to (the users table: its user's `events` partition)."""
        return partition_for(key.encode(), self.partition_count)

    def items_in(self, partition: int) -> Iterator[tuple[str, Any]]:
        """Every (key, record) of one changelog partition, writes not yet stored included; a stored record
        that is not JSON comes as (its key as text, None), for the caller to reject."""
        if not self.persistent:
            yield from ((k, v) for k, v in list(self.data.items()) if self.partition_of(k) == partition)
            return
        assert self._pending is not None
        pending = {k: w for k, w in self._pending.items() if w.partition == partition}
        for raw_key, raw in self._rocks.items(partition):
            try:
                key, value = orjson.loads(raw_key), orjson.loads(raw)
            except orjson.JSONDecodeError:
                yield raw_key.decode("utf-8", "replace"), None
                continue
            if key not in pending:
                yield key, value
        yield from ((k, w.value) for k, w in pending.items() if w.value is not None)

    def users_in(self, partitions: set[int]) -> dict[str, int]:
        """The users stored for these changelog partitions, with their partition (a new batch version serves
        them all again)."""
        if not self.persistent:
            owned = ((k, self.partition_of(k)) for k in list(self.data))
            return {k: p for k, p in owned if p in partitions}
        assert self._pending is not None
        users = {orjson.loads(k): p for p in partitions for k in self._rocks.keys(p)}
        for key, write in self._pending.items():
            if write.partition in partitions:
                if write.value is None:
                    users.pop(key, None)
                else:
                    users[key] = write.partition
        return users

    def count(self) -> int:
        """Users stored on this worker (its active partitions), for `reelstream_users`."""
        if not self.persistent:
            return len(self.data)
        if self._count is None:  # counted once per assignment, then kept by put/remove
            self._count = len(self.users_in(self.active_partitions()))
        return self._count

    def active_partitions(self) -> set[int]:
        """The changelog partitions this worker owns. Not the `assigned` Faust hands to `on_rebalance`: that
        also holds the partitions it keeps a standby replica of, which another worker owns and writes."""
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.changelog_topic_name}

    # --- writes -----------------------------------------------------------------------------------
    def put(self, key: str, value: Any, partition: int, payload: bytes | None = None) -> None:
        """`table[key] = value` with the changelog partition given: Faust's path reads it from the current
        event (a contextvar the agent must bind per user) and calls sensors per write, ~4% of a worker's
        main-thread CPU (py-spy, `bench pipeline`); key expiry (windowed tables only) does not apply here.
        `payload`: the value's changelog bytes when the caller has them (else HistoryEncoder's)."""
        if self.output is None:
            self.data[key] = value
            self.send_changelog(partition, key, value)
            return
        if payload is None:
            if self.encoder is None:
                self.encoder = HistoryEncoder()
            payload = self.encoder.encode(key, value)
        if not self.persistent:
            self.data[key] = value
            self._emit(partition, orjson.dumps(key), payload)
            return
        if self._count is not None and self.get(key) is None:
            self._count += 1
        self._stage(key, value, payload, partition)

    def remove(self, key: str, partition: int) -> None:
        """`del table[key]`, the same way: a tombstone on the changelog."""
        if self.encoder is not None:
            self.encoder.forget(key)
        if not self.persistent:
            self.data.pop(key, None)
            self.send_changelog(partition, key, None, value_serializer="raw")
            return
        if self._count is not None and self.get(key) is not None:
            self._count -= 1
        self._stage(key, None, None, partition)

    def _stage(self, key: str, value: Any, payload: bytes | None, partition: int) -> None:
        assert self._pending is not None and self._cache is not None and self.output is not None
        write = _Write(value, orjson.dumps(key), payload, partition)
        self._pending[key] = write
        self._cache.pop(key, None)
        self._emit(partition, write.key, payload, write.delivered)

    def _emit(self, partition: int | None, key: bytes, payload: bytes | None, on_delivery: Any = None) -> None:
        assert self.output is not None
        self.output.emit(self.changelog_topic_name, key, payload, None, partition, on_delivery=on_delivery)

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Any:
        if self.output is None:
            return super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self._emit(partition, orjson.dumps(key), None if value is None else orjson.dumps(value))
        # on_key_set/on_key_del only read the partition of the returned future message.
        return SimpleNamespace(message=SimpleNamespace(partition=partition))

    # --- the store follows the changelog ----------------------------------------------------------
    async def flush(self) -> None:
        """Before an offset commit (streams/transport/commit_flush.py): the output producer's flush, then
        the writes it acknowledged go to the local store with their offsets."""
        assert self.output is not None
        staged = dict(self._pending) if self.persistent and self._pending else {}
        await self.output.flush()
        if staged:
            self.store_acknowledged(staged)

    def store_acknowledged(self, staged: dict[str, _Write]) -> None:
        """Writes `staged` (all acknowledged, or their partition waits for the next flush) to the store, one
        atomic batch per partition with the highest offset among them; a newer write of a key stays pending."""
        assert self._pending is not None and self._cache is not None
        by_partition: dict[int, list[tuple[str, _Write]]] = {}
        for key, write in staged.items():
            if key in self._pending:  # else dropped by a rebalance meanwhile: its partition is not ours now
                by_partition.setdefault(write.partition, []).append((key, write))
        for partition, writes in by_partition.items():
            if any(w.offset < 0 for _, w in writes):
                continue  # not all acknowledged (a failed delivery): stored after a later flush, or recovered
            self._rocks.write(partition, [(w.key, w.payload) for _, w in writes], max(w.offset for _, w in writes))
            self._note_deleted(partition, [w.key for _, w in writes if w.payload is None])
            for key, write in writes:
                if self._pending.get(key) is write:
                    del self._pending[key]
                    if write.value is not None:
                        self._remember(key, write.value)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Valid records only (`valid_only`: the others are dead-lettered, never stored); with RocksDB, the
        offset persisted past refused ones too, so a restart does not read and refuse them again."""
        received = list(batch)
        batch = self.valid_only(received)
        super().apply_changelog_batch(batch if self.persistent else decoded(batch))
        if self.persistent and len(batch) < len(received):
            ends: dict[Any, int] = {}
            for event in received:
                ends[event.message.tp] = max(ends.get(event.message.tp, -1), event.message.offset)
            for tp, offset in ends.items():
                stored = self.data.persisted_offset(tp)
                if stored is None or offset > stored:
                    self.data.set_persisted_offset(tp, offset)
        metrics.CHANGELOG_APPLIED.inc(len(batch))
        if self.persistent:
            for event in batch:
                if event.message.value is None:
                    self._note_deleted(event.message.partition, [event.message.key])
        if self._cache:
            for event in batch:  # another owner's writes, or a partition coming back
                self._cache.pop(orjson.loads(event.message.key), None)

    def _note_deleted(self, partition: int, keys: list[bytes]) -> None:
        if keys:
            if self._deleted is None:
                self._deleted = {}
            self._deleted.setdefault(partition, set()).update(keys)

    async def purge_deleted(self) -> int:
        """Erasure in the store's files: the keys deleted from the local store since the last call (an erased
        user's record, whether this worker wrote the delete or applied it from the changelog), and any
        tombstone still in an open partition's files (a run that died before its purge), compacted out of
        RocksDB's files off the event loop (streams/transport/rocks_store.py). Returns how many keys this
        worker had deleted; 0 for a memory store."""
        if not self.persistent:
            return 0
        deleted, self._deleted = self._deleted or {}, {}
        assert self._rocks is not None
        loop = asyncio.get_running_loop()
        for partition in sorted(set(deleted) | set(self._rocks.open_partitions())):
            if await loop.run_in_executor(None, self._rocks.compact, partition, deleted.get(partition, ())):
                self._rocks.roll_manifest(partition)
                await loop.run_in_executor(None, self._rocks.flush, partition)
        return sum(len(keys) for keys in deleted.values())

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        """Decoded records and unstored writes of partitions that may change hands are dropped: whoever owns
        a partition next writes it, and this store catches up from the changelog if it comes back."""
        if self.persistent:
            assert self._pending is not None and self._cache is not None
            kept = self.active_partitions()
            for key in [k for k, w in self._pending.items() if w.partition not in kept]:
                del self._pending[key]
            self._cache.clear()
            self._count = None
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        """Before the agents resume: whoever derives state from this table's partitions reads it now."""
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_ready is not None:
            self.on_ready({tp.partition for tp in active_tps})


class CatalogTable(ValidatedChangelog, faust.GlobalTable):
    """video_id -> status (streams.catalog), with `inactive` kept up to date on every local
    write and every changelog batch applied (other workers' writes, recovery)."""

    _inactive: set[str] | None = None
    # Called with each video a changelog batch makes available (other workers' uploads, recovery), with the
    # record's timestamp (when the upload was applied): the recommender's exploration pool and freshness
    # prior (Recommender.add_video). This worker's own uploads are told by streams.pipeline, with their time.
    on_available: Callable[[str, float | None], None] | None = None

    @property
    def inactive(self) -> set[str]:
        if self._inactive is None:
            self._inactive = inactive_videos(self.data)
        return self._inactive

    def _track(self, key: str, status: Any) -> None:
        if is_available(status):
            self.inactive.discard(key)
        else:
            self.inactive.add(key)

    def on_key_set(self, key: str, value: Any) -> None:
        super().on_key_set(key, value)
        self._track(key, value)

    def on_key_del(self, key: str) -> None:
        super().on_key_del(key)
        self._track(key, None)

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = decoded(self.valid_only(batch))  # decoded once: the memory store (a global table) and below
        super().apply_changelog_batch(events)
        notify = self.on_available
        stamps = {e.key: getattr(e.message, "timestamp", None) for e in events} if notify else {}
        for key, status in {e.key: e.value for e in events}.items():  # each key's latest, in offset order
            self._track(key, status)
            if notify is not None and status is not None and is_available(status):  # an upload, not a tombstone
                notify(key, stamps.get(key))
