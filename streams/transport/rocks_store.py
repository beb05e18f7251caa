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

Upstream: faust-streaming 0.15.3 faust/stores/rocksdb.py `Store._db_for_partition` (opens or returns a
partition's database), `Store.offset_key` (where `Store.persisted_offset` / `set_persisted_offset` keep the
offset, read by faust/tables/recovery.py `Recovery._add` to resume from it); rocksdict 0.3.29 `WriteBatch(raw_mode=True)`, `Rdict.write`, `Rdict.get`,
`Rdict.keys`, `Rdict.items`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

RELIES_ON = (
    ("faust.stores.rocksdb", "Store._db_for_partition"),
    ("faust.stores.rocksdb", "Store.offset_key"),
    ("faust.stores.rocksdb", "Store.persisted_offset"),
    ("faust.stores.rocksdb", "Store.set_persisted_offset"),
    ("faust.tables.recovery", "Recovery._add"),
)


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
