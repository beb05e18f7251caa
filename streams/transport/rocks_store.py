"""Direct access to the partitions of Faust's RocksDB store, for the users table's write-behind.

Why: Faust's RocksDB `Store` writes a key to the partition of the *current event* (a contextvar) and reads
it by searching every partition's database; a worker's micro-batch writes many users with no event bound per
user, and it knows each user's partition (their `events` partition, which is their changelog partition).
More importantly, Faust writes the local store before the changelog record is acknowledged: after a
`kill -9` the store can hold a value the changelog never got, which the next run then treats as already
stored (a duplicate) and never writes to the changelog, so another worker recovering that partition loses
it. `streams.tables.OutputTable` therefore writes here only what the broker has acknowledged, in one RocksDB
write batch with the changelog offset it reached (Faust's own persisted-offset key), so local data and the
offset recovery resumes from always agree.

Erasure (#18): a delete leaves the key in RocksDB's files (the tombstone in the write-ahead log and an SST,
the value in older SSTs, the key as a file bound in the MANIFEST) until compaction reaches it, so an erased
user's id and texts stayed readable in the store's files. `RocksPartitions.compact` compacts the range of the
deleted keys and of every file still holding a tombstone (RocksDB drops both at the bottommost level; no
snapshots are held), then `roll_manifest` makes one more MANIFEST edit. Faust's `RocksDBOptions` gives rocksdict no way to set `max_manifest_file_size`, so `limit_manifest`
makes a store's options set it to 1 byte: every edit then starts a new MANIFEST from the current file list
and deletes the old one (measured: without it the MANIFEST kept the erased key after a full compaction; a
snapshot of a few hundred files' bounds is a few KB per flush or compaction).

Upstream: faust-streaming 0.15.3 faust/stores/rocksdb.py `Store._db_for_partition` (opens or returns a
partition's database), `Store.offset_key` (where `Store.persisted_offset` / `set_persisted_offset` keep the
offset, read by faust/tables/recovery.py `Recovery._add` to resume from it); `RocksDBOptions.as_options` (the rocksdict `Options` every
partition's database is opened with), `Store.rocksdb_options`, `Store._dbs` (the open ones); faust/tables/base.py `Collection._new_store`;
rocksdict 0.3.29 `WriteBatch(raw_mode=True)`, `Rdict.write`, `Rdict.get`, `Rdict.keys`, `Rdict.items`,
`Rdict.compact_range`, `CompactOptions`, `Rdict.live_files`, `Rdict.flush`, `Options.set_max_manifest_file_size`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

RELIES_ON = (
    ("faust.stores.rocksdb", "Store._db_for_partition"),
    ("faust.stores.rocksdb", "Store.offset_key"),
    ("faust.stores.rocksdb", "Store.persisted_offset"),
    ("faust.stores.rocksdb", "Store.set_persisted_offset"),
    ("faust.tables.recovery", "Recovery._add"),
    ("faust.stores.rocksdb", "RocksDBOptions.as_options"),
    ("faust.stores.rocksdb", "RocksDBOptions.use_rocksdict"),
    ("faust.stores.rocksdb", "Store.rocksdb_options"),
    ("faust.stores.rocksdb", "Store._dbs"),
    ("faust.tables.base", "Collection._new_store"),
)

MANIFEST_MAX_BYTES = 1  # every MANIFEST edit rolls the file: no edit history outlives the next edit


def limit_manifest(store: Any) -> None:
    """Before any of its databases opens: the store's options roll the MANIFEST at every edit (the module's
    docstring says why)."""
    if store.rocksdb_options.use_rocksdict:
        store.rocksdb_options.__class__ = _rolling_manifest()


@functools.cache
def _rolling_manifest() -> type:
    from faust.stores.rocksdb import RocksDBOptions

    class RollingManifestOptions(RocksDBOptions):
        def as_options(self) -> Any:
            options = super().as_options()
            options.set_max_manifest_file_size(MANIFEST_MAX_BYTES)
            return options

    return RollingManifestOptions


def is_rocksdb(store: Any) -> bool:
    from faust.stores.rocksdb import Store

    return isinstance(store, Store)


class RocksPartitions:
    """The partition databases of one Faust RocksDB store, by partition number, raw bytes in and out."""

    def __init__(self, store: Any) -> None:
        assert is_rocksdb(store), store
        self.store = store

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.store._db_for_partition(partition).get(key)

    def write(self, partition: int, changes: Iterable[tuple[bytes, bytes | None]], offset: int) -> None:
        """Puts (value None: a delete) and the changelog offset they reach, atomically."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.store.offset_key, str(offset).encode())
        self.store._db_for_partition(partition).write(batch)

    def open_partitions(self) -> list[int]:
        """The partitions whose database this process has open."""
        return list(self.store._dbs)

    def compact(self, partition: int, keys: Iterable[bytes]) -> bool:
        """Erasure: one manual compaction, forced at the bottommost level, over the range spanning these deleted
        keys and every file that still holds a tombstone, so RocksDB drops the tombstones and the values they
        shadow. The files are their own record of what is owed: deletes of a run that died before its purge
        are found there. One range, not one compaction per key: a forced compaction rewrites each bottommost
        file it touches, and a refit deletes item-state records by the hundred thousand. False when there
        was nothing to compact. Thread-safe, and rocksdict releases the GIL while RocksDB compacts
        (measured), so it runs off the event loop."""
        from rocksdict import BottommostLevelCompaction, CompactOptions

        db = self.store._db_for_partition(partition)
        bounds = list(keys)
        bounds += [key for f in db.live_files() if f["num_deletions"] for key in (f["start_key"], f["end_key"])]
        if not bounds:
            return False
        # Forced: by default a file that overlaps nothing below is only moved to the bottommost level,
        # tombstone and all (seen in the erasure test: "Moving #9 to level-6").
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force_optimized())
        db.compact_range(min(bounds), max(bounds), options)
        return True

    def roll_manifest(self, partition: int) -> None:
        """After `compact`: its last MANIFEST edit went to a file that starts with the file list from before
        it (deleted keys as file bounds), so one more edit is made, a flush of the offset key rewritten as it
        stands. Call it on the thread that writes the partition (the loop), so no newer offset is overwritten;
        then `flush`."""
        db = self.store._db_for_partition(partition)
        offset = db.get(self.store.offset_key)
        if offset is not None:
            db.put(self.store.offset_key, offset)

    def flush(self, partition: int) -> None:
        self.store._db_for_partition(partition).flush()

    def close(self) -> None:
        """Flush and close every open partition database (a later call opens it again). For a process that
        wrote the store and exits: rocksdict asks for `close` or `flush` before a program stops, and
        `bench state`'s store-building child, which exited with its databases open, crashed twice in ~20 runs
        at 100k users with a segfault in a RocksDB thread (kernel log: a null read in rocksdict's library
        while parsing a number). Faust's `Store.stop` drops the databases without closing them."""
        for db in self.store._dbs.values():
            db.close()
        self.store._dbs.clear()

    def persisted_offset(self, partition: int) -> int | None:
        raw = self.get(partition, self.store.offset_key)
        return None if raw is None else int(raw)

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (key, value) of this partition (not Faust's offset key)."""
        offset_key = self.store.offset_key
        return ((k, v) for k, v in self.store._db_for_partition(partition).items() if k != offset_key)

    def keys(self, partition: int) -> Iterator[bytes]:
        """Every stored key of this partition (not Faust's offset key)."""
        offset_key = self.store.offset_key
        return (key for key in self.store._db_for_partition(partition).keys() if key != offset_key)
